"""gan_aug.pseudo: the pair filter on hand-made probability maps, and `gan-aug train --pseudo-labels` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gan_aug.pseudo as pseudo
from gan_aug.cli import main as gan_main
from gan_aug.pseudo import Candidate, PseudoFilter, score, select
from ssl_seg.data.sources import open_source
from ssl_seg.data.splits import Split
from ssl_seg.engine.runner import run_training


def test_score_counts_confident_pixels_inside_the_roi():
    # 3 classes on 4 x 4: class 1 at 0.95 on the left half, class 2 at 0.95 on the right, one pixel unsure
    probs = np.zeros((3, 4, 4))
    probs[1, :, :2], probs[2, :, 2:] = 0.95, 0.95
    probs[0] = 0.05
    probs[:, 3, 3] = [0.2, 0.3, 0.5]
    c = score("a", probs, pixel_threshold=0.9)
    assert c.mask.tolist() == [[1, 1, 2, 2]] * 4  # argmax everywhere, the unsure pixel too
    assert c.confident == 15 / 16 and c.mean_confidence == pytest.approx((15 * 0.95 + 0.5) / 16)
    roi = np.ones((4, 4), bool)
    roi[3, 3] = False
    assert score("a", probs, 0.9, roi).confident == 1.0  # outside the field of view it does not count
    assert score("a", probs, 0.4).confident == 1.0
    # per-image acceptance at the default 0.95: 15/16 = 0.9375 is not enough, at 0.9 it is
    assert select([c], [c.mask], PseudoFilter()) == []
    assert select([c], [c.mask], PseudoFilter(min_confident=0.9)) == [c]


def _mask(*classes: int) -> np.ndarray:
    m = np.zeros((4, 4), np.int64)
    for k, cls in enumerate(classes):
        m[k, k] = cls
    return m


def test_select_follows_the_labeled_class_mix_most_confident_first():
    labeled = [_mask(1), _mask(1), _mask(1), _mask(1, 2)]  # 3/4 show {1}, 1/4 shows {1, 2}
    ones = [Candidate(f"one{k}", _mask(1), 1.0, 0.9 + k / 100) for k in range(5)]
    both = [Candidate(f"both{k}", _mask(1, 2), 1.0, 0.9 + k / 100) for k in range(2)]
    empty = [Candidate(f"empty{k}", _mask(), 1.0, 0.999) for k in range(3)]  # no labeled mask is empty
    unsure = [Candidate("unsure", _mask(1, 2), 0.5, 0.99)]
    kept = select(ones + both + empty + unsure, labeled, PseudoFilter(max_per_labeled=1.0))
    # 4 pairs at most (1 per labeled): 3 of {1} (the most confident: one4, one3, one2) and 1 of {1, 2} (both1)
    assert [c.id for c in kept] == ["both1", "one2", "one3", "one4"]
    assert len(select(ones + both, labeled, PseudoFilter(max_per_labeled=0.5))) == 2  # quotas 1.5 -> 2, 0.5 -> 0


def test_gan_trains_on_labeled_plus_pseudo_labeled_pairs(tiny_cfg, tmp_path, monkeypatch, capsys):
    tiny_cfg.data.labeled_fraction = 0.3  # the GAN's split below
    run_training(tiny_cfg)
    source = open_source(tiny_cfg.data.data)

    def segmenter_that_knows(model, src, ids, patch_size, device):  # stands for a perfect semi-supervised run
        for sample_id in ids:
            mask = src.load(src.index_of(sample_id)).mask
            yield sample_id, np.eye(src.num_classes)[mask].transpose(2, 0, 1), np.ones(mask.shape, bool)

    monkeypatch.setattr(pseudo, "predict_unlabeled", segmenter_that_knows)
    argv = ["train", "--data", tiny_cfg.data.data, "--labeled-fraction", "0.3", "--out", str(tmp_path / "gan"),
            "--iterations", "2", "--batch-size", "2", "--patch-size", "32", "--ngf", "8", "--ndf", "8",
            "--device", "cpu", "--no-progress", "--pseudo-labels", tiny_cfg.out, "--pseudo-max-per-labeled", "1"]
    assert gan_main(argv) == 0
    summary = json.loads((tmp_path / "gan" / "pseudo_labels.json").read_text())
    split = Split.load(tmp_path / "gan" / "split.json")
    kept = summary["kept_ids"]
    assert summary["unlabeled"] == len(split.unlabeled) and summary["accepted_per_image"] == len(split.unlabeled)
    assert 0 < len(kept) <= len(split.labeled) and set(kept) <= set(split.unlabeled)  # never val / test / labeled
    assert json.loads((tmp_path / "gan" / "result.json").read_text())["n_pseudo"] == len(kept)

    # a run on another split trained on labels of the GAN's val/test images (3 of them for split seed 1)
    tiny_cfg.data.split_seed, tiny_cfg.out = 1, str(tmp_path / "split1")
    run_training(tiny_cfg)
    assert gan_main(argv[:-4] + ["--out", str(tmp_path / "gan1"), "--pseudo-labels", tiny_cfg.out]) == 2
    assert "validation/test" in capsys.readouterr().err

    tiny_cfg.data.data, tiny_cfg.out = "phantom:lesion?n=24&size=32", str(tmp_path / "lesion")
    run_training(tiny_cfg)
    assert gan_main(argv[:-4] + ["--out", str(tmp_path / "gan2"), "--pseudo-labels", tiny_cfg.out]) == 2
