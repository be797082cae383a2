"""Smoke tests on the shared real datasets (../shared/data): README facts through the readers, and a 2-step run each.

Every test is skipped where its dataset folder is absent (see the `shared_data` fixture in conftest.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ssl_seg.config import RunConfig
from ssl_seg.data.sources import open_source
from ssl_seg.engine.runner import run_training


def _short_run(data: Path, out: Path, spatial_dims: int = 2, patch: int = 64, group_by: str | None = None) -> dict:
    """Two supervised steps of a 4-channel U-Net on two labeled cases, validated on one image (or volume)."""
    cfg = RunConfig()
    cfg.data.data, cfg.data.spatial_dims, cfg.data.patch_size = str(data), spatial_dims, patch
    cfg.data.group_by, cfg.data.labeled_cases = group_by, 2
    cfg.data.num_workers, cfg.data.cache_mb = 0, 0
    cfg.model.base_channels = 4
    cfg.train.iterations, cfg.train.batch_size, cfg.train.val_every, cfg.train.val_max_samples = 2, 2, 2, 1
    cfg.train.log_every, cfg.train.image_every = 1, 2
    cfg.train.device, cfg.train.progress, cfg.train.threads = "cpu", False, 1
    cfg.out = str(out)
    result = run_training(cfg)
    saved = json.loads((out / "result.json").read_text())
    assert saved["val_dice"] == result["val_dice"] and saved["iterations"] == 2
    return saved


def _assert_validated(result: dict) -> None:
    dice = result["val_dice"]
    assert dice is not None and math.isfinite(dice) and 0.0 <= dice <= 1.0, f"val Dice {dice}"
    assert result["n_labeled"] == 2 and result["val_history"], result


# ------------------------------------------------------------------ HC18 fetal head (2D, binary)


def test_hc18_reads_as_560_binary_pairs(shared_data):
    """HC18: 560 one-channel pairs, index masks {0, 1}, longer side 512 px, head ~28 % of pixels."""
    src = open_source(str(shared_data("hc18_fetal_head")))
    assert len(src) == 560 and (src.in_channels, src.num_classes) == (1, 2)
    assert src.class_names == ["background", "class_1"]  # index masks 0/1, not 0/255
    assert src.ids[0] == "000_HC" and "186_HC" not in src.ids  # the leaky outline is left out
    head = []
    for i in range(0, len(src), 10):
        s = src.load(i)
        assert s.image.shape == (1, *s.mask.shape) and max(s.mask.shape) == 512
        assert set(np.unique(s.mask)) <= {0, 1}
        head.append(s.mask.mean())
    assert 0.20 < np.mean(head) < 0.36  # README: 27.95 % of all pixels


def test_hc18_short_run_scores(shared_data, tmp_path):
    """Two steps on HC18 (cases grouped by subject prefix) write result.json with a finite val Dice."""
    _assert_validated(_short_run(shared_data("hc18_fetal_head"), tmp_path / "hc18", group_by=r"^(\d+)_"))


# ------------------------------------------------------------------ ISBI 2012 EM (2D, binary)


def test_em_reads_as_30_slices_with_membrane_17_to_27_percent(shared_data):
    """EM: 30 slices of 512x512, 0/255 masks read as {0, 1}, membrane 17-27 % of each slice."""
    src = open_source(str(shared_data("isbi2012_em")))
    assert len(src) == 30 and (src.in_channels, src.num_classes) == (1, 2)
    assert src.ids == [f"{i:02d}" for i in range(30)]
    fractions = []
    for i in range(len(src)):
        s = src.load(i)
        assert s.image.shape == (1, 512, 512) and s.mask.shape == (512, 512)
        assert set(np.unique(s.mask)) == {0, 1}
        fractions.append(s.mask.mean())
    assert 0.165 <= min(fractions) and max(fractions) <= 0.275 and 0.20 < np.mean(fractions) < 0.24


def test_em_short_run_scores(shared_data, tmp_path):
    """Two steps on the EM slices write result.json with a finite val Dice."""
    _assert_validated(_short_run(shared_data("isbi2012_em"), tmp_path / "em"))


# ------------------------------------------------------------------ MSD hippocampus (3D, 3 classes)


def test_hippocampus_reads_as_260_volumes_of_3_classes(shared_data):
    """Hippocampus: 260 volumes at 1 mm, classes background/Anterior/Posterior all present, README shape range."""
    pytest.importorskip("nibabel")
    src = open_source(str(shared_data("hippocampus3d")), spatial_dims=3)
    assert len(src) == 260 and (src.in_channels, src.num_classes) == (1, 3)
    assert src.class_names == ["background", "Anterior", "Posterior"]
    assert src.median_spacing() == (1.0, 1.0, 1.0)
    shapes = []
    for i in range(0, len(src), 5):
        s = src.load(i)
        assert s.image.shape == (1, *s.mask.shape)
        assert set(np.unique(s.mask)) == {0, 1, 2}
        shapes.append(sorted(s.mask.shape))
    assert np.min(shapes) >= 24 and np.max(shapes) <= 59  # README: 31x40x24 .. 43x59x47 voxels


def test_hippocampus_short_3d_run_scores(shared_data, tmp_path):
    """Two 3D steps on the hippocampus volumes write result.json with a finite val Dice."""
    pytest.importorskip("nibabel")
    _assert_validated(_short_run(shared_data("hippocampus3d"), tmp_path / "hippo", spatial_dims=3, patch=32))
