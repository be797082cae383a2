"""GAN checkpoints: one plain dict (config, data info, labeled ids, networks, optimisers, scalers, step, RNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ssl_seg.engine.checkpoint import load_checkpoint, rng_state, set_rng_state
from ssl_seg.engine.trainer import Trainer
from ssl_seg.errors import UserError

from .config import GanConfig
from .networks import build_generator

CHECKPOINT_NAME = "checkpoint.pt"
KIND = "gan-aug"


def checkpoint_path(path: str | Path) -> Path:
    """GAN_DIR or a checkpoint file -> the checkpoint file; UserError naming the path when absent."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"--checkpoint {path} does not exist; pass the --out folder of 'gan-aug train'")
    file = path / CHECKPOINT_NAME if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"--checkpoint {path}: no GAN checkpoint at {file}; pass the --out folder of 'gan-aug train'")
    return file


def load_gan_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a GAN checkpoint (weights_only); anything else is a UserError."""
    file = checkpoint_path(path)
    ckpt = load_checkpoint(file, map_location=map_location)
    if ckpt.get("kind") != KIND:
        raise UserError(f"--checkpoint {path}: {file} is not a gan-aug checkpoint (an ssl-seg run?); "
                        "pass the --out folder of 'gan-aug train'")
    return ckpt


def gan_payload(cfg: GanConfig, info: dict[str, Any], labeled_ids: list[str]) -> Callable[[Trainer], dict[str, Any]]:
    """trainer -> the checkpoint dict (its layout is what `synthesize` and older runs rely on; keep it)."""

    def payload(trainer: Trainer) -> dict[str, Any]:
        return {"kind": KIND, "config": cfg.to_dict(), "info": info, "labeled_ids": list(labeled_ids),
                "step": trainer.state.step, "rng": rng_state(), "networks": trainer.method.state_dict(),
                "val_history": list(trainer.history)}

    return payload


def restore_trainer(trainer: Trainer, ckpt: dict[str, Any]) -> None:
    """Continue `trainer` (whose method is a Pix2Pix) from a loaded GAN checkpoint: networks, optimisers,
    scalers, step, validation history and RNG."""
    trainer.method.load_state_dict(ckpt["networks"])
    trainer.state.step, trainer.history = ckpt["step"], list(ckpt["val_history"])
    set_rng_state(ckpt["rng"])


def generator_from_config(cfg: GanConfig, num_classes: int, in_channels: int) -> nn.Module:
    """A freshly initialised generator as the config describes it (n_down must already be resolved)."""
    assert cfg.n_down is not None, "resolve n_down before building networks"
    generator = build_generator(cfg.generator, num_classes, in_channels, ngf=cfg.ngf, n_down=cfg.n_down,
                                noise_channel=cfg.noise_channel, dropout=cfg.dropout, norm=cfg.norm,
                                latent_dim=cfg.latent_dim)
    if hasattr(generator, "sample_steps"):  # the diffusion generator samples in steps
        generator.sample_steps = cfg.sample_steps
    return generator


def load_generator(ckpt: dict[str, Any], device: torch.device) -> nn.Module:
    """The EMA generator of a loaded checkpoint, on `device`, in eval mode (dropout noise stays on)."""
    cfg = GanConfig.from_dict(ckpt["config"])
    info = ckpt["info"]
    generator = generator_from_config(cfg, info["num_classes"], info["in_channels"])
    generator.load_state_dict(ckpt["networks"]["G_ema"])
    return generator.to(device).eval().requires_grad_(False)
