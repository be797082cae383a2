"""Volume readers: MSD / nnU-Net folders (3D, 4D and per-channel files), SSL4MIS 3D h5, the 3D phantom; bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from ssl_seg.data.sources import open_source
from ssl_seg.data.ssl4mis import SSL4MIS3DSource
from ssl_seg.data.msd import MSDVolumeSource
from ssl_seg.data.volumes import LesionVolumeSource, to_file_axes
from ssl_seg.errors import UserError

nib = pytest.importorskip("nibabel")

# an oblique grid: 0.7 x 0.8 x 2.5 mm voxels, rotated 30 degrees about z and shifted
_C, _S = np.cos(np.pi / 6), np.sin(np.pi / 6)
AFFINE = np.array([[0.7 * _C, -0.8 * _S, 0.0, -12.5], [0.7 * _S, 0.8 * _C, 0.0, 30.0], [0.0, 0.0, 2.5, 7.25],
                   [0.0, 0.0, 0.0, 1.0]])


def _save(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def _case(shape=(6, 5, 4), seed=0, channels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.random(shape + ((channels,) if channels else ()), dtype=np.float32) * 100
    return image, rng.integers(0, 3, shape).astype(np.uint8)


def _msd(root: Path, cases: dict, modality=None) -> Path:
    """MSD v1: imagesTr/<case>.nii.gz (3D or 4D) + labelsTr/<case>.nii.gz + dataset.json with a training list."""
    for case, (image, label) in cases.items():
        _save(root / "imagesTr" / f"{case}.nii.gz", image)
        _save(root / "labelsTr" / f"{case}.nii.gz", label)
    meta = {"labels": {"0": "background", "1": "a", "2": "b"}, "modality": modality or {"0": "MRI"},
            "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases]}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _scaled(channel: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(channel, (0.5, 99.5))
    return np.clip((channel - lo) / (hi - lo), 0, 1)


def test_msd_volumes_keep_affine_spacing_and_axes(tmp_path):
    (img_a, lab_a), (img_b, lab_b) = _case(seed=0), _case((7, 5, 3), seed=1)
    src = open_source(str(_msd(tmp_path / "ds", {"a": (img_a, lab_a), "b": (img_b, lab_b)})), spatial_dims=3)
    assert isinstance(src, MSDVolumeSource) and src.spatial_dims == 3
    assert src.ids == src.cases == ["a", "b"]
    assert (src.num_classes, src.in_channels, src.class_names) == (3, 1, ["background", "a", "b"])
    np.testing.assert_allclose(src.affine["a"], AFFINE, atol=1e-6)
    assert src.spacing["a"] == pytest.approx((2.5, 0.7, 0.8))  # (D, H, W) = file (Z, X, Y)
    assert src.shapes["b"] == (3, 7, 5)
    s = src.load(0)
    assert s.image.shape == (1, 4, 6, 5) and s.mask.shape == (4, 6, 5) and s.mask.dtype == np.int64
    np.testing.assert_array_equal(to_file_axes(s.mask), lab_a)
    np.testing.assert_allclose(to_file_axes(s.image[0]), _scaled(img_a), rtol=1e-5, atol=1e-6)


def test_msd_4d_image_gives_one_input_channel_per_modality(tmp_path):
    image, label = _case(channels=2)
    src = open_source(str(_msd(tmp_path / "ds", {"c": (image, label)}, {"0": "T1", "1": "FLAIR"})), spatial_dims=3)
    assert src.in_channels == 2 and src.modalities == ["T1", "FLAIR"]
    s = src.load(0)
    assert s.image.shape == (2, 4, 6, 5)
    for c in range(2):  # each channel scaled on its own
        np.testing.assert_allclose(to_file_axes(s.image[c]), _scaled(image[..., c]), rtol=1e-5, atol=1e-6)


def _nnunet_v2(root: Path, channels: int, cases=("c1", "c2")) -> Path:
    for i, case in enumerate(cases):
        image, label = _case(seed=i, channels=channels)
        for k in range(channels):
            _save(root / "imagesTr" / f"{case}_{k:04d}.nii.gz", image[..., k])
        _save(root / "labelsTr" / f"{case}.nii.gz", label)
    meta = {"channel_names": {str(k): f"mod{k}" for k in range(channels)}, "labels": {"background": 0, "a": 1, "b": 2},
            "numTraining": len(cases), "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def test_nnunet_v2_channel_files_are_stacked_in_channel_order(tmp_path):
    root = _nnunet_v2(tmp_path / "ds", 2)
    src = open_source(str(root), spatial_dims=3)
    assert src.ids == ["c1", "c2"] and src.in_channels == 2
    image, label = _case(seed=1, channels=2)
    s = src.load(1)
    np.testing.assert_array_equal(to_file_axes(s.mask), label)
    np.testing.assert_allclose(to_file_axes(s.image[1]), _scaled(image[..., 1]), rtol=1e-5, atol=1e-6)
    # the slice reader reads the same multi-channel cases
    assert open_source(str(root)).load(0).image.shape == (2, 6, 5)


def test_nnunet_v2_channel_file_beyond_the_listed_modalities_is_a_user_error(tmp_path):
    root = _nnunet_v2(tmp_path / "ds", 2)
    _save(root / "imagesTr" / "c1_0002.nii.gz", _case()[0])
    with pytest.raises(UserError, match=r"c1_0002\.nii\.gz: channel 0002 is an unknown modality"):
        open_source(str(root), spatial_dims=3)


def test_nnunet_v2_missing_channel_file_is_a_user_error(tmp_path):
    root = _nnunet_v2(tmp_path / "ds", 2)
    (root / "imagesTr" / "c2_0001.nii.gz").unlink()
    with pytest.raises(UserError, match=r"c2_0001\.nii\.gz: missing"):
        open_source(str(root), spatial_dims=3)


def test_modality_keys_must_number_the_channels(tmp_path):
    with pytest.raises(UserError, match="unknown modality key"):
        open_source(str(_msd(tmp_path / "ds", {"c": _case()}, {"0": "T1", "2": "T2"})), spatial_dims=3)


def test_4d_image_with_other_channel_count_than_modalities_is_a_user_error(tmp_path):
    image, label = _case(channels=3)
    with pytest.raises(UserError, match="3 channel\\(s\\) but dataset.json lists 2 modalities"):
        open_source(str(_msd(tmp_path / "ds", {"c": (image, label)}, {"0": "T1", "1": "T2"})), spatial_dims=3)


def test_affine_mismatch_is_a_user_error(tmp_path):
    root = _msd(tmp_path / "ds", {"c": _case()})
    shifted = AFFINE.copy()
    shifted[0, 3] += 0.5
    _save(root / "labelsTr" / "c.nii.gz", _case()[1], shifted)
    with pytest.raises(UserError, match=r"c\.nii\.gz: affine .* differs from image c\.nii\.gz.*0\.5 mm"):
        open_source(str(root), spatial_dims=3)


def test_4d_label_is_a_user_error(tmp_path):
    image, label = _case()
    with pytest.raises(UserError, match=r"label is 4D \(6, 5, 4, 2\)"):
        open_source(str(_msd(tmp_path / "ds", {"c": (image, np.stack([label, label], -1))})), spatial_dims=3)


def test_shape_mismatch_and_non_integer_labels_are_user_errors(tmp_path):
    image, label = _case()
    with pytest.raises(UserError, match=r"label shape \(6, 5, 3\) does not match image"):
        open_source(str(_msd(tmp_path / "a", {"c": (image, label[..., :3])})), spatial_dims=3)
    bad = label.astype(np.float32)
    bad[1, 1, 1] = 1.5
    with pytest.raises(UserError, match="label values are not integers"):
        open_source(str(_msd(tmp_path / "b", {"c": (image, bad)})), spatial_dims=3)


def _ssl4mis_3d(root: Path, cases: dict[str, tuple[np.ndarray, np.ndarray]], train: list[str], test: list[str]):
    for case, (image, label) in cases.items():
        folder = root / "2018LA_Seg_Training Set" / case
        folder.mkdir(parents=True)
        with h5py.File(folder / "mri_norm2.h5", "w") as f:
            f["image"], f["label"] = image, label
    (root / "train.list").write_text("\n".join(train) + "\n")
    (root / "test.list").write_text("\n".join(test) + "\n")
    return root


def test_ssl4mis_3d_layout_reads_cases_and_their_lists(tmp_path):
    cases = {name: _case(seed=i) for i, name in enumerate(["A1", "B2", "C3"])}
    src = open_source(str(_ssl4mis_3d(tmp_path / "la", cases, ["A1", "B2"], ["C3"])), spatial_dims=3)
    assert isinstance(src, SSL4MIS3DSource)
    assert src.predefined_split == {"train": ["A1", "B2"], "val": [], "test": ["C3"]}
    assert src.num_classes == 3 and src.spacing["C3"] == (1.0, 1.0, 1.0) and src.notes
    s = src.load(src.index_of("B2"))
    image, label = cases["B2"]
    np.testing.assert_array_equal(to_file_axes(s.mask), label)
    np.testing.assert_allclose(to_file_axes(s.image[0]), (image - image.min()) / (image.max() - image.min()),
                               rtol=1e-5, atol=1e-6)


def test_ssl4mis_3d_bad_files_are_user_errors(tmp_path):
    image, label = _case()
    with pytest.raises(UserError, match=r"image \(6, 5, 4\) and label \(6, 5, 3\) differ"):
        open_source(str(_ssl4mis_3d(tmp_path / "a", {"A": (image, label[..., :3])}, ["A"], [])), spatial_dims=3)
    with pytest.raises(UserError, match="name case 'Z'"):
        open_source(str(_ssl4mis_3d(tmp_path / "b", {"A": (image, label)}, ["A", "Z"], [])), spatial_dims=3)


def test_lesion_volume_phantom_source():
    src = open_source("phantom:lesion_volume?n=3&size=16&seed=2", spatial_dims=3)
    assert isinstance(src, LesionVolumeSource) and len(src) == 3 and src.num_classes == 3
    s = src.load(1)
    assert s.image.shape == (1, 8, 16, 16) and s.mask.shape == (8, 16, 16)
    assert src.spacing[s.case] == (3.0, 1.0, 1.0) and src.median_shape() == (8, 16, 16)
    with pytest.raises(UserError, match="phantom:lesion_volume"):
        open_source("phantom:cardiac", spatial_dims=3)
    with pytest.raises(UserError, match="holds no volumes"):
        open_source(str(Path(__file__).parent), spatial_dims=3)


def test_shared_hippocampus_reads_as_volumes(shared_data):
    src = open_source(str(shared_data("hippocampus3d")), spatial_dims=3)
    assert len(src) == 260 and src.num_classes == 3 and src.median_spacing() == (1.0, 1.0, 1.0)
    s = src.load(0)
    assert s.image.shape[0] == 1 and s.image.shape[1:] == s.mask.shape and s.mask.max() == 2


def test_project_hdf5_holds_volumes_with_their_spacing(tmp_path):
    from ssl_seg.data.h5format import write_source_to_h5
    from ssl_seg.data.h5format import H5VolumeSource

    phantom = LesionVolumeSource(n=3, size=16, seed=1)
    path = write_source_to_h5(phantom, tmp_path / "vols.h5", {"test": True})
    src = open_source(str(path), spatial_dims=3)
    assert isinstance(src, H5VolumeSource) and src.ids == phantom.ids and src.num_classes == 3
    assert src.spacing[src.ids[2]] == (3.0, 1.0, 1.0) and src.median_shape() == (8, 16, 16)
    np.testing.assert_allclose(src.affine[src.ids[0]], phantom.affine[phantom.ids[0]])
    a, b = src.load(2), phantom.load(2)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    with pytest.raises(UserError, match="holds 3D volumes; read it with --spatial-dims 3"):
        open_source(str(path))
    flat = write_source_to_h5(open_source("phantom:cardiac?n=2&size=32"), tmp_path / "flat.h5", {})
    with pytest.raises(UserError, match="holds 2D images; read it with --spatial-dims 2"):
        open_source(str(flat), spatial_dims=3)


def test_volume_sources_serve_slices_for_2d_training(tmp_path):
    from ssl_seg.data.volumes import VolumeSlices
    from ssl_seg.experiments.profiles import native_patch

    src = open_source("phantom:lesion_volume?n=2&size=16&seed=1")
    volumes = LesionVolumeSource(n=2, size=16, seed=1)
    assert isinstance(src, VolumeSlices) and src.volumetric and len(src) == 2 * 8
    assert src.ids[9] == f"{volumes.ids[1]}_slice_1" and src.cases[9] == volumes.ids[1]
    assert src.spacing[volumes.ids[0]] == (3.0, 1.0, 1.0)  # (slice axis, H, W)
    s, v = src.load(9), volumes.load(1)
    np.testing.assert_array_equal(s.image, v.image[:, 1])
    np.testing.assert_array_equal(s.mask, v.mask[1])
    assert native_patch("phantom:lesion_volume?n=2&size=16", 64) == 16  # grid profiles can size a patch for it
    cases = {name: _case(seed=i) for i, name in enumerate(["A1", "B2"])}
    la = open_source(str(_ssl4mis_3d(tmp_path / "la", cases, ["A1"], ["B2"])))
    assert isinstance(la, VolumeSlices)
    assert la.predefined_split == {"train": [f"A1_slice_{k}" for k in range(4)], "val": [],
                                   "test": [f"B2_slice_{k}" for k in range(4)]}
