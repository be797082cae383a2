"""Shared fixtures: tiny phantom data and a fast training config."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import torch

from ssl_seg.config import RunConfig

# Tiny convolutions run fastest on one thread (and do not fight other jobs on a 2-core machine).
torch.set_num_threads(1)

# The shared real datasets: ../shared/data next to the repository, found from here (no machine path).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def killed_at_step(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[], object], int], None]:
    """Run `train` (any run on ssl_seg's Trainer: segmentation, GAN, diffusion) until it is killed
    (KeyboardInterrupt) at the given step; the loop is restored after."""
    from ssl_seg.engine.trainer import Trainer

    def run(train: Callable[[], object], step: int) -> None:
        original = Trainer.train_step

        def dies(self, at, batch):
            if at == step:
                raise KeyboardInterrupt
            return original(self, at, batch)

        monkeypatch.setattr(Trainer, "train_step", dies)
        with pytest.raises(KeyboardInterrupt):
            train()
        monkeypatch.setattr(Trainer, "train_step", original)

    return run


@pytest.fixture
def tiny_cfg(tmp_path: Path) -> RunConfig:
    """A supervised U-Net run on 24 cardiac phantoms of 32 px: seconds on a CPU."""
    cfg = RunConfig()
    cfg.data.data = "phantom:cardiac?n=24&size=32"
    cfg.data.patch_size = 32
    cfg.data.labeled_fraction = 0.5
    cfg.model.base_channels = 4
    cfg.train.iterations = 6
    cfg.train.batch_size = 4
    cfg.train.val_every = 3
    cfg.train.log_every = 2
    cfg.train.image_every = 3
    cfg.train.device = "cpu"
    cfg.train.progress = False
    cfg.out = str(tmp_path / "run")
    return cfg


@pytest.fixture
def shared_data() -> Callable[[str], Path]:
    """name -> the shared real dataset folder SHARED_DATA/name; the test is skipped where it is absent."""

    def find(name: str) -> Path:
        root = SHARED_DATA / name
        if not root.is_dir() or not any(root.iterdir()):
            pytest.skip(f"shared data {name} not present (looked in {root})")
        return root

    return find
