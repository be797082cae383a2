"""benchmarks/downscale_2d.py writes a smaller copy of an images/ + masks/ folder and never overwrites."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

_spec = importlib.util.spec_from_file_location("downscale_2d", Path(__file__).parents[1] / "benchmarks" / "downscale_2d.py")
downscale_2d = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(downscale_2d)


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


def test_halves_each_side_and_keeps_class_indices(tmp_path):
    src = _folder(tmp_path / "src")
    assert downscale_2d.main([str(src), str(tmp_path / "out"), "--factor", "2"]) == 0
    image = np.array(Image.open(tmp_path / "out" / "images" / "a.png"))
    mask = np.array(Image.open(tmp_path / "out" / "masks" / "a.png"))
    assert image.shape == mask.shape == (2, 3)
    assert mask.tolist() == [[0, 255, 255], [0, 255, 255]]  # nearest samples columns 1, 3, 5: no values between
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["a.png"]  # no temporary files left


def test_jpeg_images_keep_their_name_and_format(tmp_path):
    src = _folder(tmp_path / "src")
    (src / "images" / "a.png").unlink()
    Image.fromarray(np.full((4, 6), 90, np.uint8)).save(src / "images" / "a.jpg")  # mask stays masks/a.png
    assert downscale_2d.main([str(src), str(tmp_path / "out")]) == 0
    with Image.open(tmp_path / "out" / "images" / "a.jpg") as image:
        assert (image.format, image.size) == ("JPEG", (3, 2))
    assert np.array(Image.open(tmp_path / "out" / "masks" / "a.png")).shape == (2, 3)


def test_existing_output_and_missing_mask_are_one_message(tmp_path, capsys):
    src = _folder(tmp_path / "src")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert downscale_2d.main([str(src), str(tmp_path / "out")]) == 2
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    bad = _folder(tmp_path / "bad", with_mask=False)
    assert downscale_2d.main([str(bad), str(tmp_path / "out2")]) == 2
    assert "a.png: no mask" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()
    (src / "masks" / "a.png").write_bytes(b"not a png")
    assert downscale_2d.main([str(src), str(tmp_path / "out3")]) == 2
    assert "masks/a.png: cannot read mask" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "out", "src"]  # no partial copy left behind
    assert downscale_2d.main([str(src), str(tmp_path / "out4"), "--factor", "0"]) == 2
    assert "--factor 0" in capsys.readouterr().err
