"""`ssl-seg downscale` writes a smaller copy of an images/ + masks/ (+ roi/) folder and never overwrites."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ssl_seg.cli import main
from ssl_seg.data.readers import FolderSource


def _folder(root: Path, with_mask: bool = True) -> Path:
    """A 6 x 4 grayscale image and its binary mask (left half 0, right half 255)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.arange(24, dtype=np.uint8).reshape(4, 6) * 10).save(root / "images" / "a.png")
    if with_mask:
        mask = np.zeros((4, 6), np.uint8)
        mask[:, 3:] = 255
        Image.fromarray(mask).save(root / "masks" / "a.png")
    return root


def _downscale(src: Path, out: Path, *factor: str) -> int:
    return main(["downscale", "--data", str(src), "--out", str(out), *factor])


def test_halves_each_side_and_keeps_class_indices(tmp_path):
    src = _folder(tmp_path / "src")
    assert _downscale(src, tmp_path / "out", "--factor", "2") == 0
    image = np.array(Image.open(tmp_path / "out" / "images" / "a.png"))
    mask = np.array(Image.open(tmp_path / "out" / "masks" / "a.png"))
    assert image.shape == mask.shape == (2, 3)
    assert mask.tolist() == [[0, 255, 255], [0, 255, 255]]  # nearest samples columns 1, 3, 5: no values between
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["a.png"]  # no temporary files left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


def test_roi_and_class_names_come_along(tmp_path):
    src = _folder(tmp_path / "src")
    mask = np.zeros((4, 6), np.uint8)
    mask[:, 3:] = 2  # class indices 0..2, named in classes.json
    mask[0, 0] = 1
    Image.fromarray(mask).save(src / "masks" / "a.png")
    (src / "classes.json").write_text(json.dumps({"classes": ["background", "rim", "core"]}))
    (src / "roi").mkdir()
    roi = np.zeros((4, 6), np.uint8)
    roi[:2] = 255
    Image.fromarray(roi).save(src / "roi" / "a.png")
    assert _downscale(src, tmp_path / "out") == 0  # default factor 2
    copy = FolderSource(tmp_path / "out")
    assert copy.class_names == ["background", "rim", "core"]
    sample = copy.load(0)
    assert sample.mask.tolist() == [[0, 2, 2], [0, 2, 2]]  # indices kept, not the 255 scheme; class 1 named though gone
    assert sample.roi.tolist() == [[True, True, True], [False, False, False]]


def test_jpeg_images_keep_their_name_and_format(tmp_path):
    src = _folder(tmp_path / "src")
    (src / "images" / "a.png").unlink()
    Image.fromarray(np.full((4, 6), 90, np.uint8)).save(src / "images" / "a.jpg")  # mask stays masks/a.png
    assert _downscale(src, tmp_path / "out") == 0
    with Image.open(tmp_path / "out" / "images" / "a.jpg") as image:
        assert (image.format, image.size) == ("JPEG", (3, 2))
    assert np.array(Image.open(tmp_path / "out" / "masks" / "a.png")).shape == (2, 3)


def test_existing_output_and_bad_input_are_one_message(tmp_path, capsys):
    src = _folder(tmp_path / "src")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert _downscale(src, tmp_path / "out") == 2
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    bad = _folder(tmp_path / "bad", with_mask=False)
    assert _downscale(bad, tmp_path / "out2") == 2
    assert "a.png: no mask" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()
    (src / "masks" / "a.png").write_bytes(b"not a png")
    assert _downscale(src, tmp_path / "out3") == 2
    assert "masks/a.png: cannot read mask" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "out", "src"]  # no partial copy left behind
    assert _downscale(src, tmp_path / "out4", "--factor", "0") == 2
    assert "--factor 0" in capsys.readouterr().err
    assert _downscale(Path("phantom:cardiac"), tmp_path / "out5") == 2
    assert "phantom:cardiac: not a folder with images/ and masks/" in capsys.readouterr().err
