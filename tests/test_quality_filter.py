"""The synthetic-pair quality filter: pairs kept only when a trained segmenter recovers their mask; the threshold
chosen on validation, the acceptance in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_aug.config import GanConfig
from gan_aug.quality_filter import MaskRecoveryFilter
from gan_aug.synthesize import synthesize
from gan_aug.train import train_gan
from ssl_seg.cli import main as seg_main
from ssl_seg.data.sources import open_source
from ssl_seg.errors import UserError

DATA = "phantom:cardiac?n=20&size=32"


@pytest.fixture(scope="module")
def gan_and_segmenter(tmp_path_factory) -> tuple[Path, Path]:
    """A 2-step 32 px cardiac GAN and a 30-step segmenter on the same phantoms."""
    root = tmp_path_factory.mktemp("qf")
    torch.set_num_threads(1)
    train_gan(GanConfig(data=DATA, labeled_fraction=0.3, out=str(root / "gan"), iterations=2, batch_size=2,
                        patch_size=32, ngf=8, ndf=8, device="cpu", progress=False))
    assert seg_main(["train", "--data", DATA, "--patch-size", "32", "--base-channels", "4", "--batch-size", "4",
                     "--iterations", "30", "--val-every", "30", "--labeled-fraction", "0.3", "--device", "cpu",
                     "--no-progress", "--out", str(root / "seg")]) == 0
    return root / "gan", root / "seg"


def test_scores_are_the_dice_of_the_segmenters_prediction(gan_and_segmenter) -> None:
    _, seg = gan_and_segmenter
    filt = MaskRecoveryFilter(seg, 4, torch.device("cpu"), threshold=0.5)
    source = open_source(DATA)
    sample = source.load(0)
    image = sample.image[None]  # (1, 1, 32, 32) in [0, 1]
    own = filt.scores(image, sample.mask[None])
    blank = filt.scores(image, np.zeros((1, 32, 32), np.int64))  # a mask with nothing in it
    # the segmenter's prediction scored against its own argmax is 1: the score is a Dice of that prediction
    from ssl_seg.data.transforms import normalize
    from ssl_seg.evaluation.scoring import predict_image

    pred = predict_image(filt.model, normalize(torch.from_numpy(image[0])), 32, 4, torch.device("cpu")).argmax(0)
    assert filt.scores(image, pred.numpy()[None]) == pytest.approx([1.0])
    assert 0 <= own[0] <= 1 and 0 <= blank[0] <= 1
    assert filt.report.scored == 0  # scores alone are not counted; keep() counts


def test_threshold_is_chosen_on_validation_and_filtering_is_recorded(gan_and_segmenter, tmp_path) -> None:
    gan, seg = gan_and_segmenter
    filt = MaskRecoveryFilter(seg, 4, torch.device("cpu"), quantile=0.5)
    assert "validation images" in filt.report.chosen_by and 0 <= filt.report.threshold <= 1
    m = synthesize(gan, 8, tmp_path / "syn", seed=0, device="cpu", progress=False, filter_run=str(seg),
                   filter_dice=0.0)  # every pair passes Dice >= 0
    assert m["quality_filter"]["kept"] == m["quality_filter"]["scored"] == 32  # one full batch, 8 of it written
    assert m["quality_filter"]["acceptance_rate"] == 1.0
    assert json.loads((tmp_path / "syn" / "manifest.json").read_text())["quality_filter"]["threshold"] == 0.0
    assert len(open_source(str(tmp_path / "syn" / "synthetic.h5")).ids) == 8


def test_an_impossible_threshold_writes_nothing_and_says_why(gan_and_segmenter, tmp_path) -> None:
    gan, seg = gan_and_segmenter
    with pytest.raises(UserError, match=r"the filter kept \d+ of \d+ pairs") as e:
        synthesize(gan, 2, tmp_path / "syn", seed=0, device="cpu", progress=False, filter_run=str(seg),
                   filter_dice=1.0)
    assert "nothing was written" in str(e.value) and not (tmp_path / "syn").exists()


def test_bad_filter_settings_are_one_line(gan_and_segmenter) -> None:
    _, seg = gan_and_segmenter
    with pytest.raises(UserError, match="--filter-dice 1.5"):
        MaskRecoveryFilter(seg, 4, torch.device("cpu"), threshold=1.5)
    with pytest.raises(UserError, match="has 4 classes, the generator 2"):
        MaskRecoveryFilter(seg, 2, torch.device("cpu"), threshold=0.5)


def test_rejected_pairs_are_replaced_and_shown(gan_and_segmenter, tmp_path, monkeypatch) -> None:
    """Every other pair scores 0: the filter keeps half, generates until --n pass, and draws the rejected ones."""
    gan, seg = gan_and_segmenter
    monkeypatch.setattr(MaskRecoveryFilter, "scores", lambda self, images, masks: np.arange(len(images)) % 2 * 1.0)
    m = synthesize(gan, 6, tmp_path / "syn", seed=0, batch_size=4, device="cpu", progress=False,
                   filter_run=str(seg), filter_dice=0.5)
    report = m["quality_filter"]
    assert report["scored"] == 12 and report["kept"] == 6 and report["acceptance_rate"] == 0.5  # 3 batches of 4
    assert (tmp_path / "syn" / "rejected.png").stat().st_size > 0
    assert len(open_source(str(tmp_path / "syn" / "synthetic.h5")).ids) == 6
