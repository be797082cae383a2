"""`ssl-seg downscale` writes a smaller copy of an images/ + masks/ (+ roi/) folder and never overwrites; a run
trained on such a copy predicts and scores full-size images with --downscale N."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_seg.cli import main
from ssl_seg.data.downscale import downscale_image
from ssl_seg.data.folder import FolderSource, read_image
from ssl_seg.engine.predict import predict_folder
from ssl_seg.engine.report import check_downscale, evaluate_run, format_metrics_table
from ssl_seg.engine.runner import run_training
from ssl_seg.errors import UserError
from ssl_seg.evaluation.inference import upsample_probs
from ssl_seg.evaluation.scoring import evaluate_model


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


def test_downscale_image_matches_the_copy_up_to_its_8_bit_rounding(tmp_path):
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    pixels = np.random.default_rng(0).integers(0, 256, (21, 30), dtype=np.uint8)  # odd height: floor like the copy
    Image.fromarray(pixels).save(src / "images" / "a.png")
    Image.fromarray(np.zeros((21, 30), np.uint8)).save(src / "masks" / "a.png")
    assert _downscale(src, tmp_path / "out") == 0
    copy = read_image(tmp_path / "out" / "images" / "a.png")
    ours = downscale_image(read_image(src / "images" / "a.png"), 2)
    assert ours.shape == copy.shape == (1, 10, 15)
    np.testing.assert_array_equal(ours, copy)  # 8-bit input: the copy's own resampling, rounding and clipping
    floats = downscale_image(read_image(src / "images" / "a.png") + 0.3 / 255, 2)  # off the 8-bit grid: float path
    assert 0 < np.abs(floats - copy).max() < 4 / 255  # no rounding between passes, so not identical, but close
    assert downscale_image(copy, 1) is copy


def test_upsample_probs_is_bilinear_over_the_whole_extent():
    probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # (K=2, 1, 2): class 1 on the right pixel
    up = upsample_probs(probs, (1, 4))
    # output pixel centres 0.5..3.5 sit at input x = -0.25 (clamped), 0.25, 0.75, 1.25 (clamped)
    np.testing.assert_allclose(up[1, 0].numpy(), [0.0, 0.25, 0.75, 1.0])
    np.testing.assert_allclose(up.sum(0).numpy(), 1.0)
    assert upsample_probs(probs, (1, 2)) is probs


class _Threshold(torch.nn.Module):
    """Class 1 where the normalised image is bright: a fixed 'network' whose right answer is known."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x, x], 1) * 10


def _edge_folder(root: Path) -> Path:
    """A 12 x 16 image, dark left half and bright right half, with the right half as its mask."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    image, mask = np.full((12, 16), 40, np.uint8), np.zeros((12, 16), np.uint8)
    image[:, 8:], mask[:, 8:] = 200, 255
    Image.fromarray(image).save(root / "images" / "a.png")
    Image.fromarray(mask).save(root / "masks" / "a.png")
    return root


def test_evaluate_model_scores_a_downscaled_prediction_at_full_size(tmp_path):
    source = FolderSource(_edge_folder(tmp_path / "full"))
    metrics = evaluate_model(_Threshold(), source, source.ids, None, torch.device("cpu"), downscale=2)
    assert metrics["dice"] == pytest.approx(1.0) and metrics["hd95"] == pytest.approx(0.0)  # the edge lands in place
    assert metrics["per_sample"]["a"]["per_class"]["1"]["dice"] == pytest.approx(1.0)
    with pytest.raises(UserError, match="--downscale 0"):
        check_downscale(0, 2)
    with pytest.raises(UserError, match="volume run"):
        check_downscale(2, 3)
    check_downscale(1, 3)


def test_a_run_on_a_copy_predicts_and_scores_full_size_images(tiny_cfg, tmp_path):
    run_training(tiny_cfg)  # 32 px phantoms: with --downscale 2 the network sees 16 px images
    metrics = evaluate_run(tiny_cfg.out, split="test", device="cpu", downscale=2, progress=False)
    written = Path(tiny_cfg.out) / "metrics_test_downscale2.json"
    assert json.loads(written.read_text())["downscale"] == 2 == metrics["downscale"]
    assert not (Path(tiny_cfg.out) / "metrics_test.json").exists()  # the run's own scores are not overwritten
    assert "downscaled by 2" in format_metrics_table(metrics)
    assert metrics["n_samples"] == len(json.loads((Path(tiny_cfg.out) / "split.json").read_text())["test"])
    inp = tmp_path / "imgs"
    inp.mkdir()
    Image.fromarray((np.random.default_rng(1).random((30, 44)) * 255).astype(np.uint8)).save(inp / "x.png")
    assert predict_folder(tiny_cfg.out, inp, tmp_path / "masks", device="cpu", downscale=2) == 1
    assert np.array(Image.open(tmp_path / "masks" / "x.png")).shape == (30, 44)  # full size, not 15 x 22
    assert main(["predict", "--run", str(tiny_cfg.out), "--input", str(inp), "--out", str(tmp_path / "m2"),
                 "--downscale", "0"]) == 2
    assert not (tmp_path / "m2").exists()
