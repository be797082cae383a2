"""NIfTI writer and the 3D phantom as an MSD folder: round trips through nibabel and the MSD reader."""

import json

import numpy as np
import pytest

from ssl_seg.data.msd import MSDSliceSource
from ssl_seg.data.nifti_writer import volume_affine, write_nifti, write_phantom_msd
from ssl_seg.data.phantom_volumes import lesion_volume
from ssl_seg.data.sources import open_source
from ssl_seg.errors import UserError

nib = pytest.importorskip("nibabel")

SHAPE, SPACING = (8, 16, 12), (3.0, 1.0, 0.5)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_write_nifti_round_trip_keeps_data_and_affine(tmp_path, suffix: str) -> None:
    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    affine = np.array([[0.5, 0, 0, -10], [0, 1.5, 0, 3], [0, 0, 4.0, 7], [0, 0, 0, 1]])
    write_nifti(tmp_path / f"v{suffix}", array, affine)
    loaded = nib.load(str(tmp_path / f"v{suffix}"))
    np.testing.assert_array_equal(np.asarray(loaded.dataobj), array)
    np.testing.assert_array_equal(loaded.affine, affine)
    assert loaded.header.get_zooms() == (0.5, 1.5, 4.0)
    assert [p.name for p in tmp_path.iterdir()] == [f"v{suffix}"]  # no temporary file left
    with pytest.raises(UserError, match="end in .nii"):
        write_nifti(tmp_path / "v.png", array, affine)


def test_phantom_msd_round_trip_through_the_slice_reader(tmp_path) -> None:
    cases = write_phantom_msd(tmp_path / "msd", 2, SHAPE, SPACING, seed=5)
    source = open_source(str(tmp_path / "msd"))
    assert isinstance(source, MSDSliceSource)
    assert source.class_names == ["background", "organ", "lesion"] and source.num_classes == 3
    assert sorted(set(source.cases)) == sorted(cases) and len(source) == 2 * SHAPE[0]
    for index, case in enumerate(cases):
        volume = lesion_volume(SHAPE, SPACING, 5, index)
        assert source.spacing[case] == SPACING  # (slice axis, H, W) in mm, from the header
        label = nib.load(str(tmp_path / "msd" / "labelsTr" / f"{case}.nii.gz"))
        np.testing.assert_array_equal(label.affine, volume_affine(SPACING))
        image = volume.image[0]
        lo, hi = np.percentile(image, (0.5, 99.5))  # the reader's per-volume intensity scaling
        for k in (0, SHAPE[0] // 2, SHAPE[0] - 1):
            sample = source.load(source.index_of(f"{case}_slice_{k}"))
            np.testing.assert_array_equal(sample.mask, volume.mask[k])
            np.testing.assert_allclose(sample.image[0], np.clip((image[k] - lo) / (hi - lo), 0, 1), atol=1e-5)
    meta = json.loads((tmp_path / "msd" / "dataset.json").read_text())
    assert meta["numTraining"] == 2 and meta["labels"] == {"0": "background", "1": "organ", "2": "lesion"}


def test_phantom_msd_refuses_an_existing_dataset(tmp_path) -> None:
    (tmp_path / "dataset.json").write_text("{}")
    with pytest.raises(UserError, match="already exists"):
        write_phantom_msd(tmp_path, 1, SHAPE, SPACING)
    assert (tmp_path / "dataset.json").read_text() == "{}" and not (tmp_path / "imagesTr").exists()
