"""The GAN training loop: labeled pairs of the split -> Pix2Pix steps, TensorBoard, atomic resumable checkpoints."""

from __future__ import annotations

import dataclasses
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ssl_seg.engine import locks
from ssl_seg.engine.checkpoint import rng_state, save_checkpoint, set_rng_state
from ssl_seg.engine.curves import plot_curves
from ssl_seg.data.readers import open_source, task_differences
from ssl_seg.device import resolve_device
from ssl_seg.errors import UserError
from ssl_seg.io_utils import atomic_write_json

from .checkpoint import CHECKPOINT_NAME, KIND, generator_from_config, load_gan_checkpoint
from .config import GanConfig
from .data import PairBank, gan_split
from .networks import auto_n_down, build_discriminator, one_hot
from .pix2pix import Pix2Pix
from .pseudo import PseudoFilter, pseudo_label
from .viz import pair_grid


def build_pix2pix(cfg: GanConfig, num_classes: int, in_channels: int, device: torch.device) -> Pix2Pix:
    """Generator, discriminator and their optimisation, as the config describes."""
    generator = generator_from_config(cfg, num_classes, in_channels)
    discriminator = build_discriminator(cfg.discriminator, num_classes, in_channels, ndf=cfg.ndf,
                                        n_layers=cfg.n_layers, num_D=cfg.num_D, norm=cfg.norm)
    return Pix2Pix(generator, discriminator, total_iterations=cfg.iterations, device=device,
                   gan_loss=cfg.gan_loss, lambda_l1=cfg.lambda_l1,
                   lambda_fm=cfg.lambda_fm if cfg.feature_matching else 0.0, lr=cfg.lr,
                   betas=(cfg.beta1, cfg.beta2), ema_decay=cfg.ema_decay, amp=cfg.amp,
                   channels_last=cfg.channels_last)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _due(step: int, every: int, total: int) -> bool:
    return every > 0 and ((step + 1) % every == 0 or step + 1 == total)


# a loss above this is a diverged GAN (healthy pix2pix losses stay below ~1e3: lambda_l1 100 x L1 <= 2)
DIVERGED = 1e6


def train_gan(cfg: GanConfig, resume: bool = False) -> dict[str, Any]:
    """Train into cfg.out (config.json, split.json, checkpoint.pt, tb/, curves.png, result.json); return the result.

    The run directory is locked while training, so a second process on the same --out stops at once.
    """
    cfg = cfg.with_absolute_paths()
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the GAN run")
    with locks.locked(out, "GAN run directory"):
        return _train_gan(cfg, resume)


def _train_gan(cfg: GanConfig, resume: bool) -> dict[str, Any]:
    """train_gan inside the lock of cfg.out."""
    t0 = time.time()
    out = Path(cfg.out)
    ckpt_file = out / CHECKPOINT_NAME
    if not resume and ckpt_file.exists():
        raise UserError(f"{out} already holds a GAN run; add --resume to continue it or choose another --out")
    if resume and not ckpt_file.exists():
        raise UserError(f"{ckpt_file} not found: nothing to resume; drop --resume to start this run")
    device = resolve_device(cfg.device)
    if cfg.n_down is None:
        cfg = dataclasses.replace(cfg, n_down=auto_n_down(cfg.patch_size))
    ckpt = load_gan_checkpoint(ckpt_file, map_location=device) if resume else None
    if ckpt is not None:  # refuses settings a resumed run may not change, before anything is written
        GanConfig.from_dict(ckpt["config"]).with_absolute_paths().resumed_with(cfg.to_dict())

    _seed_everything(cfg.seed)
    source = open_source(cfg.data)
    split = gan_split(cfg, source)
    bank = PairBank(source, split.labeled)
    pseudo = _add_pseudo_pairs(cfg, source, split, bank) if cfg.pseudo_labels else None
    info = {"num_classes": source.num_classes, "in_channels": source.in_channels,
            "class_names": list(source.class_names), "data": source.name}
    if ckpt is not None and (task_differences(ckpt["info"], info) or ckpt["labeled_ids"] != list(split.labeled)):
        raise UserError(f"--resume: the data or split at {cfg.data} changed since {out} was trained "
                        f"({'; '.join(task_differences(ckpt['info'], info)) or 'other labeled ids'}); "
                        "restore them or start a new --out")
    model = build_pix2pix(cfg, info["num_classes"], info["in_channels"], device)
    start, history = 0, []
    if ckpt is not None:
        model.load_state_dict(ckpt["networks"])
        set_rng_state(ckpt["rng"])
        start, history = ckpt["step"] + 1, list(ckpt["val_history"])
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.json")
    split.save(out / "split.json")
    if pseudo is not None:
        atomic_write_json(out / "pseudo_labels.json", pseudo)

    val_bank = PairBank(source, split.val[:cfg.val_max_samples]) if split.val else bank
    val_mask, val_image = val_bank.center_batch(cfg.patch_size, cfg.val_max_samples)
    from torch.utils.tensorboard import SummaryWriter  # imported here: tensorboard is slow to import

    writer = SummaryWriter(str(out / "tb"))
    bar = tqdm(total=cfg.iterations, initial=start, desc="gan", disable=not cfg.progress, dynamic_ncols=True)
    losses: dict[str, float] = {}
    t_loop = time.time()
    for step in range(start, cfg.iterations):
        mask, image = bank.batch(cfg.batch_size, cfg.patch_size, cfg.seed, step)
        mask_oh, real = model.prepare(one_hot(mask, info["num_classes"])), model.prepare(image)
        step_losses = model.train_step(mask_oh, real, step)
        values = torch.stack(list(step_losses.values())).float().cpu()  # one device sync per step
        if not torch.isfinite(values).all():
            bad = [k for k, v in zip(step_losses, values) if not torch.isfinite(v)]
            raise UserError(f"non-finite GAN loss {bad} at step {step}; lower --lr or run with --amp off")
        if values.abs().max() > DIVERGED:
            worst = max(zip(values.abs().tolist(), step_losses), key=lambda kv: kv[0])
            raise UserError(f"the GAN diverged at step {step} (loss {worst[1]} = {worst[0]:.2g}; healthy runs stay "
                            f"below 1e3); lower --lr (now {cfg.lr:g}, default 2e-4) and start a new --out")
        losses = dict(zip(step_losses, values.tolist()))
        if _due(step, cfg.log_every, cfg.iterations):
            for key, value in losses.items():
                writer.add_scalar(f"loss/{key}", value, step)
            writer.add_scalar("lr", model.opt_G.param_groups[0]["lr"], step)
            bar.set_postfix({"D": f"{losses['D']:.3f}", "G": f"{losses['G']:.3f}"}, refresh=False)
        if _due(step, cfg.image_every, cfg.iterations):
            fake = model.sample(mask_oh[:4]).cpu()
            grid = pair_grid(mask[:4], (image[:4] + 1) / 2, (fake + 1) / 2)
            writer.add_image("train/mask|real|generated", grid, step)
        if _due(step, cfg.val_every, cfg.iterations):
            history.append({"step": step, **_validate(model, val_mask, val_image, info["num_classes"], writer, step)})
        if _due(step, cfg.checkpoint_every, cfg.iterations):
            save_checkpoint(ckpt_file, {"kind": KIND, "config": cfg.to_dict(), "info": info,
                                        "labeled_ids": list(split.labeled), "step": step, "rng": rng_state(),
                                        "networks": model.state_dict(), "val_history": history})
        bar.update(1)
    bar.close()
    writer.close()
    plot_curves(out / "tb", out / "curves.png")  # losses, lr, validation L1 for users without TensorBoard
    result = {"gan_dir": str(out), "data": source.name, "n_labeled": len(split.labeled),
              "iterations": cfg.iterations, "final_losses": losses,
              "val_l1": history[-1]["l1"] if history else None, "wall_time_s": time.time() - t0,
              "s_per_iteration": (time.time() - t_loop) / max(cfg.iterations - start, 1), "device": str(device),
              "n_pseudo": len(bank) - len(split.labeled)}
    atomic_write_json(out / "result.json", result)
    return result


def _add_pseudo_pairs(cfg: GanConfig, source, split, bank: PairBank) -> dict[str, Any]:
    """Add the confident, class-balanced pseudo-labeled pairs of cfg.pseudo_labels to `bank`; their summary."""
    filt = PseudoFilter(cfg.pseudo_threshold, cfg.pseudo_min_confident, cfg.pseudo_max_per_labeled)
    chosen, summary = pseudo_label(cfg.pseudo_labels, source, split, list(bank.masks), filt, cfg.device)
    bank.add(source, [c.id for c in chosen], [c.mask for c in chosen])
    print(f"pseudo-labels: {summary['unlabeled']} unlabeled images, {summary['accepted_per_image']} confident, "
          f"{len(chosen)} kept after class balance (+{len(chosen)} pairs to {summary['labeled']} labeled)")
    return summary


@torch.no_grad()
def _validate(model: Pix2Pix, mask: torch.Tensor, image: torch.Tensor, num_classes: int, writer, step: int) -> dict:
    """L1 of EMA-generator samples to the real images of the fixed validation batch (in [0, 1] units)."""
    fake = model.sample(model.prepare(one_hot(mask, num_classes))).cpu()
    l1 = float((fake - image).abs().mean() / 2)
    writer.add_scalar("val/l1", l1, step)
    writer.add_image("val/mask|real|generated", pair_grid(mask[:4], (image[:4] + 1) / 2, (fake[:4] + 1) / 2), step)
    return {"l1": l1}
