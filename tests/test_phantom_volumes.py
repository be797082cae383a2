"""3D phantom: determinism, ranges, classes and contrast, anatomy fixed in mm whatever the spacing, errors."""

import numpy as np
import pytest
import torch

from ssl_seg.data.phantom_volumes import LESION_CLASSES, lesion_volume
from ssl_seg.errors import UserError
from ssl_seg.evaluation.inference import predict_probs
from ssl_seg.models import build_model

SHAPE, SPACING = (12, 32, 32), (3.0, 1.0, 1.0)


def test_same_seed_and_index_give_identical_volumes() -> None:
    a, b = lesion_volume(SHAPE, SPACING, 3, 7), lesion_volume(SHAPE, SPACING, 3, 7)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.id == "lesion_volume_3_00007" and a.spacing == SPACING
    assert not np.array_equal(a.mask, lesion_volume(SHAPE, SPACING, 3, 8).mask)
    assert not np.array_equal(a.mask, lesion_volume(SHAPE, SPACING, 4, 7).mask)


@pytest.mark.parametrize("index", range(4))
def test_shapes_ranges_classes_and_contrast(index: int) -> None:
    v = lesion_volume(SHAPE, SPACING, 0, index)
    assert v.image.shape == (1, *SHAPE) and v.image.dtype == np.float32
    assert v.mask.shape == SHAPE and v.mask.dtype == np.int64
    assert v.image.min() >= 0.0 and v.image.max() <= 1.0
    assert set(np.unique(v.mask)) == set(range(len(LESION_CLASSES)))
    means = [v.image[0][v.mask == c].mean() for c in range(3)]
    assert means[0] < means[1] < means[2]  # background < organ < lesion
    organ_slices = np.flatnonzero((v.mask > 0).any(axis=(1, 2)))
    assert 0 < organ_slices[0] and organ_slices[-1] < SHAPE[0] - 1  # the organ lies inside the field of view


@pytest.mark.parametrize("index", range(3))
def test_anatomy_is_fixed_in_millimetres(index: int) -> None:
    # The same 32 mm field of view sampled with 2 mm and 1 mm slices: organ and lesion volumes in mm^3 agree.
    thick = lesion_volume((16, 32, 32), (2.0, 1.0, 1.0), 0, index)
    thin = lesion_volume((32, 32, 32), (1.0, 1.0, 1.0), 0, index)
    for cls, tolerance in ((1, 0.05), (2, 0.25)):
        thick_mm3, thin_mm3 = 2.0 * np.count_nonzero(thick.mask == cls), float(np.count_nonzero(thin.mask == cls))
        assert thin_mm3 > 0 and abs(thick_mm3 - thin_mm3) <= tolerance * thin_mm3, (cls, thick_mm3, thin_mm3)
    # Whereas reading the 2 mm grid as 1 mm voxels halves the organ's volume.
    assert np.count_nonzero(thick.mask == 1) < 0.6 * np.count_nonzero(thin.mask == 1)


def test_3d_unet_predicts_a_phantom_volume() -> None:
    v = lesion_volume(SHAPE, SPACING, 0, 0)
    torch.manual_seed(0)
    model = build_model("unet", 1, len(LESION_CLASSES), base_channels=4, depth=2, spatial_dims=3).eval()
    probs = predict_probs(model, torch.from_numpy(v.image)[None], patch_size=(8, 16, 16), num_classes=3)
    assert probs.shape == (1, 3, *SHAPE)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, *SHAPE))


def test_bad_shape_or_spacing_is_user_error() -> None:
    with pytest.raises(UserError, match="shape"):
        lesion_volume((4, 32, 32))
    with pytest.raises(UserError, match="shape"):
        lesion_volume((32, 32))
    with pytest.raises(UserError, match="spacing"):
        lesion_volume(SHAPE, (0.0, 1.0, 1.0))
