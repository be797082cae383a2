"""Readers: PNG/JPEG/TIFF folders, the SSL4MIS HDF5 layout, phantom DATA strings, dispatch and errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from ssl_seg.data.folder import FolderSource, read_image

from ssl_seg.data.sources import open_source

from ssl_seg.data.ssl4mis import SSL4MISSource, case_of_slice
from ssl_seg.errors import UserError


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _folder(root: Path, masks: dict[str, np.ndarray], images: dict[str, np.ndarray] | None = None) -> Path:
    """images/<stem>.png (gray ramp of the mask's size unless given) and masks/<stem>.png."""
    for stem, mask in masks.items():
        image = images[stem] if images and stem in images else np.full(mask.shape, 51, np.uint8)
        _png(root / "images" / f"{stem}.png", image)
        _png(root / "masks" / f"{stem}.png", mask.astype(np.uint8))
    return root


def _binary_mask(h: int = 8, w: int = 6) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[2:5, 1:4] = 255
    return m


# ------------------------------------------------------------------ PNG folders


def test_binary_masks_gray_images_schema(tmp_path):
    root = _folder(tmp_path / "ds", {"b": _binary_mask(), "a": np.zeros((8, 6), np.uint8)})
    src = open_source(str(root))
    assert isinstance(src, FolderSource) and src.name == str(root)
    assert src.ids == ["a", "b"] and src.cases == ["a", "b"] and src.predefined_split is None
    assert (src.num_classes, src.in_channels, src.class_names) == (2, 1, ["background", "foreground"])
    s = src.load(src.index_of("b"))
    assert s.image.shape == (1, 8, 6) and s.image.dtype == np.float32
    np.testing.assert_allclose(s.image, 51 / 255)
    assert s.mask.dtype == np.int64 and s.mask.shape == (8, 6)
    np.testing.assert_array_equal(s.mask, (_binary_mask() == 255).astype(np.int64))
    assert s.id == "b" and s.case == "b" and s.roi is None


def test_index_masks_rgb_and_gray_mixed_sizes(tmp_path):
    m1 = np.array([[0, 1, 2, 2]] * 4, np.uint8)
    m2 = np.zeros((6, 5), np.uint8)
    m2[0, 0] = 1
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 255, 51
    root = _folder(tmp_path, {"rgb": m1, "gray": m2}, {"rgb": rgb, "gray": np.full((6, 5), 102, np.uint8)})
    src = FolderSource(root)
    assert (src.num_classes, src.in_channels) == (3, 3)
    assert src.class_names == ["background", "class_1", "class_2"]
    color = src.load(src.index_of("rgb"))
    assert color.image.shape == (3, 4, 4)
    np.testing.assert_allclose(color.image[:, 0, 0], [1.0, 0.0, 0.2])
    np.testing.assert_array_equal(color.mask, m1)
    gray = src.load(src.index_of("gray"))  # gray repeated to 3 channels, own size kept
    assert gray.image.shape == (3, 6, 5)
    np.testing.assert_allclose(gray.image, 0.4)


def test_rgba_uint16_and_float_tiff_intensity_scaling(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 1], rgba[..., 3] = 255, 7
    root = tmp_path / "ds"
    _png(root / "images" / "rgba.png", rgba)
    Image.fromarray(np.full((4, 4), 13107, np.uint16)).save(root / "images" / "u16.png")
    Image.fromarray(np.array([[2.0, 4.0], [6.0, 10.0]], np.float32)).save(root / "images" / "f.tif")
    for stem, shape in (("rgba", (4, 4)), ("u16", (4, 4)), ("f", (2, 2))):
        _png(root / "masks" / f"{stem}.png", np.eye(*shape, dtype=np.uint8))
    src = FolderSource(root)
    assert src.in_channels == 3
    np.testing.assert_allclose(src.load(src.index_of("rgba")).image[:, 0, 0], [0, 1, 0])  # alpha dropped
    np.testing.assert_allclose(src.load(src.index_of("u16")).image, 13107 / 16383, rtol=1e-6)  # 14-bit range
    assert "16383" in src.notes[0]
    np.testing.assert_allclose(src.load(src.index_of("f")).image[0], [[0, 0.25], [0.5, 1]])  # per-image min-max


def test_training_and_prediction_read_a_file_alike(tmp_path):
    """One reader: what FolderSource trains on is what predict reads (gray+alpha -> gray, BMP accepted)."""
    from ssl_seg.engine import predict

    la = np.stack([np.full((4, 5), 51, np.uint8), np.full((4, 5), 200, np.uint8)], -1)
    root = tmp_path / "ds"
    _png(root / "images" / "la.png", la)
    Image.fromarray(np.full((4, 5), 102, np.uint8)).save(root / "images" / "g.bmp")
    for stem in ("la", "g"):
        _png(root / "masks" / f"{stem}.png", np.eye(4, 5, dtype=np.uint8))
    src = FolderSource(root)
    assert predict.read_image is read_image and predict.IMAGE_SUFFIXES == (".png", ".jpg", ".jpeg", ".tif", ".tiff",
                                                                           ".bmp")
    for stem, value in (("la", 0.2), ("g", 0.4)):
        trained = src.load(src.index_of(stem)).image
        assert trained.shape == (1, 4, 5)
        np.testing.assert_array_equal(read_image(next((root / "images").glob(f"{stem}.*")), 1), trained)
        np.testing.assert_allclose(trained, value)  # alpha is not averaged into the gray value
    rgb = root / "rgb.png"
    _png(rgb, np.stack([np.full((2, 2), v, np.uint8) for v in (255, 0, 51)], -1))
    np.testing.assert_allclose(read_image(rgb, 1)[0], 0.4)  # RGB averaged for a gray model
    assert read_image(root / "images" / "g.bmp", 3).shape == (3, 4, 5)  # gray repeated for an RGB model
    with pytest.raises(UserError, match="3 channels but the model expects 2"):
        read_image(rgb, 2)


def test_roi_nonzero_is_inside(tmp_path):
    root = _folder(tmp_path, {"a": _binary_mask()})
    roi = np.zeros((8, 6), np.uint8)
    roi[:, :3] = 9
    _png(tmp_path / "roi" / "a.png", roi)
    s = FolderSource(root).load(0)
    assert s.roi.dtype == bool
    np.testing.assert_array_equal(s.roi, roi > 0)


def test_index_masks_with_gap_need_stated_classes(tmp_path):
    root = _folder(tmp_path, {"a": np.array([[0, 3]] * 2, np.uint8)})
    with pytest.raises(UserError, match=r"no pixel has \[1, 2\]"):
        FolderSource(root)
    (root / "classes.json").write_text('{"classes": ["background", "a", "b", "c"]}')
    src = FolderSource(root)
    assert src.num_classes == 4 and src.class_names[3] == "c"
    np.testing.assert_array_equal(src.load(0).mask, [[0, 3], [0, 3]])


def _expect(root: Path, *fragments: str) -> None:
    with pytest.raises(UserError) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        src = open_source(str(root))
        for i in range(len(src)):
            src.load(i)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_missing_folders_and_empty_images(tmp_path):
    _expect(tmp_path / "nope", "nope", "does not exist", "phantom:")
    (tmp_path / "only_masks" / "masks").mkdir(parents=True)
    _expect(tmp_path / "only_masks", "only_masks/images", "folder missing")
    (tmp_path / "only_images" / "images").mkdir(parents=True)
    _expect(tmp_path / "only_images", "only_images/masks", "folder missing")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    _expect(tmp_path / "empty", "empty/images", "no images")
    (tmp_path / "file.txt").write_text("x")
    _expect(tmp_path / "file.txt", "file.txt", "not .h5")


def test_image_without_mask_and_mask_without_image(tmp_path):
    root = _folder(tmp_path / "a", {"x": _binary_mask()})
    _png(root / "images" / "lonely.png", np.zeros((8, 6), np.uint8))
    _expect(root, "lonely.png", "masks/lonely.png")
    root = _folder(tmp_path / "b", {"x": _binary_mask()})
    _png(root / "masks" / "orphan.png", np.zeros((8, 6), np.uint8))
    _expect(root, "orphan.png", "without an image")
    root = _folder(tmp_path / "c", {"x": _binary_mask(), "y": _binary_mask()})
    _png(root / "roi" / "x.png", np.ones((8, 6), np.uint8))
    _expect(root, "images/y.png", "no roi")


def test_size_mismatch_names_both_sizes(tmp_path):
    root = _folder(tmp_path, {"x": _binary_mask()}, {"x": np.zeros((8, 7), np.uint8)})
    _expect(root, "masks/x.png", "8x6", "8x7")


def test_corrupt_image_and_non_2d_mask(tmp_path):
    root = _folder(tmp_path / "a", {"x": _binary_mask()})
    (root / "images" / "x.png").write_bytes(b"\x89PNG not really")
    _expect(root, "images/x.png", "corrupt")
    root = _folder(tmp_path / "b", {"x": _binary_mask()})
    _png(root / "masks" / "x.png", np.zeros((8, 6, 3), np.uint8))
    _expect(root, "masks/x.png", "not 2D")
    root = _folder(tmp_path / "c", {"x": _binary_mask()})
    good = (root / "images" / "x.png").read_bytes()
    (root / "images" / "x.png").write_bytes(good[: len(good) // 2])  # header fine, pixels truncated
    _expect(root, "images/x.png")


def test_mixed_255_and_other_values_names_first_bad_file(tmp_path):
    mixed = _binary_mask()
    mixed[0, 0] = 128
    root = _folder(tmp_path, {"a": _binary_mask(), "b": mixed, "c": mixed})
    _expect(root, "masks/b.png", "[0, 128, 255]")


def test_duplicate_stems_refused(tmp_path):
    root = _folder(tmp_path, {"x": _binary_mask()})
    _png(root / "images" / "x.jpg", np.zeros((8, 6), np.uint8))
    _expect(root, "x.png", "stem 'x'")


# ------------------------------------------------------------------ SSL4MIS layout


def _ssl4mis(root: Path, with_lists: bool = True) -> Path:
    """Three tiny ACDC-like patients: two training (2D slice files), one val and one test volume."""
    slices = root / "data" / "slices"
    slices.mkdir(parents=True)
    train = []
    for p in (1, 2):
        for k in range(2):
            sid = f"patient00{p}_frame01_slice_{k}"
            with h5py.File(slices / f"{sid}.h5", "w") as f:
                f["image"] = np.linspace(-1, 3, 20, dtype=np.float32).reshape(4, 5) * (k + 1)
                f["label"] = np.full((4, 5), p + k, np.uint8)
            train.append(sid)
    for name, label in (("patient003_frame01", 3), ("patient004_frame02", 1)):
        with h5py.File(root / "data" / f"{name}.h5", "w") as f:
            f["image"] = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
            f["label"] = np.full((3, 4, 5), label, np.uint8)
    if with_lists:
        (root / "train_slices.list").write_text("\n".join(train[::-1]) + "\n")
        (root / "val.list").write_text("patient003_frame01\n")
        (root / "test.list").write_text("patient004_frame02\n")
    return root


def test_ssl4mis_layout_with_lists(tmp_path):
    src = open_source(str(_ssl4mis(tmp_path)))
    assert isinstance(src, SSL4MISSource)
    assert len(src) == 4 + 3 + 3
    assert (src.num_classes, src.in_channels) == (4, 1)
    split = src.predefined_split
    assert split["train"][0] == "patient002_frame01_slice_1"  # list order kept
    assert split["val"] == [f"patient003_frame01_slice_{k}" for k in range(3)]
    assert split["test"] == [f"patient004_frame02_slice_{k}" for k in range(3)]
    assert src.cases[src.index_of("patient002_frame01_slice_0")] == "patient002"
    assert src.cases[src.index_of("patient004_frame02_slice_2")] == "patient004"
    s = src.load(src.index_of("patient001_frame01_slice_1"))
    assert s.image.shape == (1, 4, 5) and s.image.dtype == np.float32
    assert s.image.min() == 0.0 and s.image.max() == 1.0  # min-max per slice
    np.testing.assert_allclose(s.image[0, 0, :2], [0.0, 1 / 19], rtol=1e-5)
    assert s.mask.dtype == np.int64 and (s.mask == 2).all()
    v = src.load(src.index_of("patient003_frame01_slice_2"))
    np.testing.assert_allclose(v.image[0].ravel(), np.arange(20) / 19, rtol=1e-6)
    assert (v.mask == 3).all() and v.case == "patient003"


def test_ssl4mis_without_lists_uses_all_slices(tmp_path):
    src = open_source(str(_ssl4mis(tmp_path, with_lists=False)))
    assert src.predefined_split is None and len(src) == 4
    assert src.cases == ["patient001", "patient001", "patient002", "patient002"]


def test_ssl4mis_missing_listed_file(tmp_path):
    root = _ssl4mis(tmp_path)
    (root / "val.list").write_text("patient003_frame01\npatient009_frame01\n")
    _expect(root, "val.list", "patient009_frame01")
    (root / "val.list").write_text("patient003_frame01\n")
    (root / "data" / "slices" / "patient002_frame01_slice_0.h5").unlink()
    _expect(root, "train_slices.list", "patient002_frame01_slice_0")


def test_ssl4mis_volume_must_be_3d(tmp_path):
    root = _ssl4mis(tmp_path)
    with h5py.File(root / "data" / "patient004_frame02.h5", "w") as f:
        f["image"] = np.zeros((4, 5), np.float32)
        f["label"] = np.zeros((4, 5), np.uint8)
    _expect(root, "patient004_frame02.h5", "3D shape (volume)")


def test_ssl4mis_corrupt_slice(tmp_path):
    root = _ssl4mis(tmp_path)
    (root / "data" / "slices" / "patient001_frame01_slice_0.h5").write_bytes(b"garbage" * 20)
    _expect(root, "patient001_frame01_slice_0.h5", "not a readable HDF5")


def test_case_of_slice():
    assert case_of_slice("patient001_frame01_slice_0") == "patient001"
    assert case_of_slice("caseA_slice_3") == "caseA"
    assert case_of_slice("lonely") == "lonely"


# ------------------------------------------------------------------ phantom DATA strings


@pytest.mark.parametrize("data, fragment", [
    ("phantom:", "name a phantom task"),
    ("phantom:cardiac?m=3", "unknown phantom option 'm'"),
    ("phantom:cardiac?n=abc", "n='abc' is not an integer"),
    ("phantom:cardiac?size=0", "size must be at least 32, got 0"),
    ("phantom:cardiac?seed=-1", "seed must be at least 0"),
    ("phantom:lesion_volume?size=4", "size must be at least 8, got 4"),  # one parser, each task's smallest side
    ("phantom:lesion_volume?m=3", "unknown phantom option 'm'"),
])
def test_phantom_query_errors(data, fragment):
    with pytest.raises(UserError, match=fragment.replace("(", r"\(").replace("?", r"\?")) as info:
        open_source(data)
    assert data in str(info.value)


def test_phantom_options_reach_the_source():
    pytest.importorskip("ssl_seg.data.phantoms")
    src = open_source("phantom:cardiac?n=6&size=32&seed=1")
    assert len(src) == 6
    sample = src.load(0)
    assert sample.image.shape[1:] == (32, 32) and sample.image.dtype == np.float32
    assert sample.mask.shape == (32, 32)


# ------------------------------------------------------------------ real data


def test_isbi2012_em_if_present(shared_data):
    """The shared ISBI 2012 EM slices open as 30 one-channel binary 512 px images (skipped without the data)."""
    src = open_source(str(shared_data("isbi2012_em")))
    assert (len(src), src.in_channels, src.num_classes) == (30, 1, 2)
    s = src.load(0)
    assert s.image.shape == (1, 512, 512) and 0.1 < s.mask.mean() < 0.35  # membrane ~22%


def test_folder_with_one_project_h5_opens_it(tmp_path):
    """A synthetic dataset folder (SYN_DIR/synthetic.h5 + manifest) is a valid DATA."""
    import numpy as np

    from ssl_seg.data.h5format import H5DatasetWriter
    from ssl_seg.data.sources import open_source

    syn = tmp_path / "syn"
    syn.mkdir()
    with H5DatasetWriter(syn / "synthetic.h5", 1, 16, 16, 2, ["background", "fg"], {"by": "test"}) as w:
        w.append(np.zeros((3, 1, 16, 16), np.float32), np.ones((3, 16, 16), np.uint8), ["a", "b", "c"],
                 ["a", "b", "c"])
    (syn / "manifest.json").write_text("{}")
    source = open_source(str(syn))
    assert len(source) == 3 and source.num_classes == 2
