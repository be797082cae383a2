"""MSD / nnU-Net slice reader and per-volume (3D) scoring of slice predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_seg.data.msd import MSDSliceSource
from ssl_seg.data.sources import open_source
from ssl_seg.errors import UserError
from ssl_seg.evaluation.scoring import evaluate_model, score_volumes, selection_score

nib = pytest.importorskip("nibabel")


def _nifti(path: Path, array: np.ndarray, zooms: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(array, np.diag([*zooms, 1.0]))
    img.header.set_zooms(zooms)
    nib.save(img, str(path))


def _msd(root: Path, volumes: dict[str, tuple[np.ndarray, np.ndarray]], zooms=(0.5, 0.7, 2.0)) -> Path:
    """ROOT/dataset.json + imagesTr/<case>.nii.gz + labelsTr/<case>.nii.gz (MSD v1 layout)."""
    for case, (image, label) in volumes.items():
        _nifti(root / "imagesTr" / f"{case}.nii.gz", image, zooms)
        _nifti(root / "labelsTr" / f"{case}.nii.gz", label, zooms)
    meta = {"name": "t", "labels": {"0": "background", "1": "head", "2": "tail"}, "modality": {"0": "MRI"},
            "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in volumes]}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _pair(shape=(4, 5, 3), seed=0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random(shape, dtype=np.float32) * 100, rng.integers(0, 3, shape).astype(np.uint8)


def test_msd_slices_schema_spacing_and_class_names(tmp_path):
    (img_a, lab_a), (img_b, lab_b) = _pair(seed=0), _pair((6, 5, 2), seed=1)
    src = open_source(str(_msd(tmp_path / "ds", {"v_b": (img_b, lab_b), "v_a": (img_a, lab_a)})))
    assert isinstance(src, MSDSliceSource) and src.volumetric
    assert src.ids == [f"v_b_slice_{k}" for k in range(2)] + [f"v_a_slice_{k}" for k in range(3)]
    assert src.cases == ["v_b"] * 2 + ["v_a"] * 3
    assert (src.num_classes, src.in_channels, src.class_names) == (3, 1, ["background", "head", "tail"])
    assert src.spacing["v_a"] == pytest.approx((2.0, 0.5, 0.7))  # (slice axis, H, W)
    s = src.load(src.index_of("v_a_slice_1"))
    assert s.image.shape == (1, 4, 5) and s.image.dtype == np.float32 and s.case == "v_a"
    np.testing.assert_array_equal(s.mask, lab_a[:, :, 1].astype(np.int64))
    # the volume is scaled as a whole (0.5-99.5 percentiles -> [0, 1]): slice order of intensities is kept
    lo, hi = np.percentile(img_a, (0.5, 99.5))
    np.testing.assert_allclose(s.image[0], np.clip((img_a[:, :, 1] - lo) / (hi - lo), 0, 1), rtol=1e-5, atol=1e-6)


def test_msd_float_labels_that_are_integers_are_accepted(tmp_path):
    image, label = _pair()
    src = open_source(str(_msd(tmp_path / "ds", {"v": (image, label.astype(np.float32))})))
    np.testing.assert_array_equal(src.load(0).mask, label[:, :, 0])


def test_msd_non_integer_labels_are_a_user_error(tmp_path):
    image, label = _pair()
    bad = label.astype(np.float32)
    bad[0, 0, 0] = 0.5
    with pytest.raises(UserError, match=r"v\.nii\.gz: label values are not integers"):
        open_source(str(_msd(tmp_path / "ds", {"v": (image, bad)})))


def test_msd_shape_mismatch_is_a_user_error(tmp_path):
    image, label = _pair()
    with pytest.raises(UserError, match=r"label shape \(4, 5, 2\) does not match image"):
        open_source(str(_msd(tmp_path / "ds", {"v": (image, label[:, :, :2])})))


def test_msd_missing_listed_file_is_a_user_error(tmp_path):
    root = _msd(tmp_path / "ds", {"v": _pair()})
    (root / "labelsTr" / "v.nii.gz").unlink()
    with pytest.raises(UserError, match="does not exist"):
        open_source(str(root))


def test_per_volume_dice_equals_hand_computed_3d_dice():
    """Two slices: slice 0 truth 4 px, pred 4 px, 2 shared; slice 1 truth empty, pred 2 px.

    3D Dice = 2*2 / (6 + 4) = 0.4, whereas the slice mean would be (0.5 + 0) / 2 = 0.25.
    """
    truth0 = np.zeros((3, 4), np.uint8)
    truth0[0, :] = 1
    pred0 = np.zeros((3, 4), np.uint8)
    pred0[0, 2:] = 1
    pred0[1, 2:] = 1
    truth1 = np.zeros((3, 4), np.uint8)
    pred1 = np.zeros((3, 4), np.uint8)
    pred1[2, :2] = 1
    # slices handed over out of order: they are stacked by their index in the source
    scores = score_volumes({"vol": [(11, pred1, truth1), (10, pred0, truth0)]}, 2, {"vol": (2.0, 1.0, 1.0)})
    assert scores["dice"] == pytest.approx(0.4)
    assert scores["per_case"]["vol"]["dice"] == pytest.approx(0.4)
    assert scores["n_cases"] == 1
    # HD95 in 3D with spacing (2, 1, 1): pooled surface distances pred->truth 0, 0, 1, 1, 2.83, 2.83 (slice 1's
    # pixels lie 2 mm along the stack and 2 px across from truth) and truth->pred 2, 1, 0, 0; the 95th percentile
    # (linear interpolation over 10 values) lies between the two largest, both 2*sqrt(2)
    assert scores["hd95"] == pytest.approx(2 * np.sqrt(2))


def test_evaluate_model_scores_volumes_and_selects_on_them(tmp_path):
    image, label = _pair((8, 8, 3))
    src = open_source(str(_msd(tmp_path / "ds", {"v1": (image, label), "v2": _pair((8, 8, 3), seed=3)})))

    class Background(torch.nn.Module):
        def forward(self, x):
            logits = torch.zeros(x.shape[0], 3, *x.shape[-2:])
            logits[:, 0] = 1.0
            return logits

    result = evaluate_model(Background(), src, src.ids, None, torch.device("cpu"))
    vol = result["volume"]
    assert vol["n_cases"] == 2 and set(vol["per_case"]) == {"v1", "v2"}
    assert vol["dice"] == 0.0  # every class is present in the volumes and never predicted
    assert selection_score(result) == vol["dice"]
    assert selection_score({"dice": 0.3}) == 0.3  # non-volumetric data falls back to the case mean
    post = evaluate_model(Background(), src, src.ids, None, torch.device("cpu"), lcc_classes=[1, 2])["postprocessed"]
    assert post["lcc_classes"] == [1, 2] and post["volume"]["n_cases"] == 2 and post["volume"]["dice"] == 0.0


def test_shared_hippocampus_reads_as_slices(shared_data):
    src = open_source(str(shared_data("hippocampus3d")))
    assert len(set(src.cases)) == 260 and src.num_classes == 3
    assert src.class_names == ["background", "Anterior", "Posterior"]
    s = src.load(0)
    assert s.image.shape[0] == 1 and s.mask.max() <= 2


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_label_values_dataset_json_does_not_name_are_refused(tmp_path, spatial_dims):
    """Before: a value 3 with classes 0..2 in dataset.json became a silent fourth class 'class_3'."""
    image, label = _pair()
    label[0, 0, 0] = 3
    root = _msd(tmp_path / "ds", {"v": (image, label)})
    with pytest.raises(UserError, match=r"holds value 3, but 'labels' names classes 0\.\.2"):
        open_source(str(root), spatial_dims)
    blank = _msd(tmp_path / "blank", {"v": (image, np.zeros_like(label))})
    with pytest.raises(UserError, match="background only"):
        open_source(str(blank), spatial_dims)
