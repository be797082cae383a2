"""GAN runs: labeled pairs of the split -> Pix2Pix (or Diffusion) updates in ssl_seg's Trainer and hooks (TensorBoard,
validation, atomic resumable checkpoints, progress) -> the run directory."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch
from torch import nn

from ssl_seg.engine.run_directory import RunDirectory
from ssl_seg.engine.hooks import CheckpointHook, Panels, ProgressHook, TensorBoardHook, ValidationHook
from ssl_seg.engine.trainer import Trainer, seed_everything
from ssl_seg.data.sample import task_differences
from ssl_seg.device import autocast, resolve_device
from ssl_seg.errors import UserError
from ssl_seg.io_utils import atomic_write_json

from .checkpoint import CHECKPOINT_NAME, gan_payload, generator_from_config, load_gan_checkpoint, restore_trainer
from .config import GanConfig
from .data import PairBank, gan_source, gan_split
from .networks import LatentEncoder, auto_n_down, build_discriminator, one_hot
from .pix2pix import Pix2Pix
from .task_aware import TaskAware
from .pseudo import PseudoFilter, pseudo_label
from .viz import pair_grid

if TYPE_CHECKING:
    from .diffusion import Diffusion

log = logging.getLogger(__name__)


def build_model(cfg: GanConfig, num_classes: int, in_channels: int, device: torch.device) -> "Pix2Pix | Diffusion":
    """The generator's training as the config describes it: pix2pix (unet, spade) or diffusion."""
    generator = generator_from_config(cfg, num_classes, in_channels)
    if cfg.generator == "diffusion":
        from .diffusion import Diffusion  # MONAI's generative parts, loaded when chosen

        return Diffusion(generator, num_classes=num_classes, total_iterations=cfg.iterations, device=device,
                         lr=cfg.lr, betas=(0.9, cfg.beta2), ema_decay=cfg.ema_decay, ema_rampup=cfg.ema_rampup,
                         amp=cfg.amp, channels_last=cfg.channels_last)
    discriminator = build_discriminator(cfg.discriminator, num_classes, in_channels, ndf=cfg.ndf,
                                        n_layers=cfg.n_layers, num_D=cfg.num_D, norm=cfg.norm)
    return Pix2Pix(generator, discriminator, num_classes=num_classes, total_iterations=cfg.iterations,
                   device=device, gan_loss=cfg.gan_loss, lambda_l1=cfg.lambda_l1,
                   lambda_fm=cfg.lambda_fm if cfg.feature_matching else 0.0, lambda_ms=cfg.lambda_ms, lr=cfg.lr,
                   betas=(cfg.beta1, cfg.beta2), ema_decay=cfg.ema_decay, ema_rampup=cfg.ema_rampup, amp=cfg.amp,
                   channels_last=cfg.channels_last, augment_d=cfg.diff_augment,
                   task=TaskAware(in_channels, num_classes, device, cfg.task_weight, cfg.task_step_size)
                   if cfg.task_weight > 0 else None,
                   encoder=LatentEncoder(in_channels, cfg.latent_dim, nef=cfg.ndf, norm=cfg.norm)
                   if cfg.latent_dim > 0 else None, lambda_kl=cfg.lambda_kl,
                   encode_background_only=cfg.latent_background_only)


# a loss above this is a diverged GAN (healthy pix2pix losses stay below ~1e3: lambda_l1 100 x L1 <= 2)
DIVERGED = 1e6


def train_gan(cfg: GanConfig, resume: bool = False) -> dict[str, Any]:
    """Train into cfg.out (config.json, split.json, checkpoint.pt, tb/, curves.png, result.json); return the result.

    The run directory is locked while training, so a second process on the same --out stops at once.
    """
    cfg = cfg.with_absolute_paths()
    run_dir = RunDirectory(cfg.out, CHECKPOINT_NAME, "GAN run")
    with run_dir.locked():
        return _train_gan(cfg, resume, run_dir)


def _train_gan(cfg: GanConfig, resume: bool, run_dir: RunDirectory) -> dict[str, Any]:
    """train_gan inside the lock of cfg.out."""
    t0 = time.time()
    out, ckpt_file = run_dir.path, run_dir.checkpoint
    run_dir.check(resume)
    device = resolve_device(cfg.device)
    if cfg.n_down is None:
        cfg = dataclasses.replace(cfg, n_down=auto_n_down(cfg.patch_size))
    ckpt = load_gan_checkpoint(ckpt_file, map_location=device) if resume else None
    if ckpt is not None:  # refuses settings a resumed run may not change, before anything is written
        GanConfig.from_dict(ckpt["config"]).with_absolute_paths().resumed_with(cfg.to_dict())

    if cfg.pseudo_labels and cfg.spatial_dims == 3:
        raise UserError("--pseudo-labels works on 2D data only; drop it or use --spatial-dims 2")
    seed_everything(cfg.seed)
    source = gan_source(cfg)
    split = gan_split(cfg, source)
    bank = PairBank(source, split.labeled)
    pseudo = _add_pseudo_pairs(cfg, source, split, bank) if cfg.pseudo_labels else None
    info = {"num_classes": source.num_classes, "in_channels": source.in_channels,
            "class_names": list(source.class_names), "data": source.name}
    if ckpt is not None and (task_differences(ckpt["info"], info) or ckpt["labeled_ids"] != list(split.labeled)):
        raise UserError(f"--resume: the data or split at {cfg.data} changed since {out} was trained "
                        f"({'; '.join(task_differences(ckpt['info'], info)) or 'other labeled ids'}); "
                        "restore them or start a new --out")
    model = build_model(cfg, info["num_classes"], info["in_channels"], device)
    run_dir.start(cfg, split, resume)
    if pseudo is not None:
        atomic_write_json(out / "pseudo_labels.json", pseudo)

    val_bank = PairBank(source, split.val[:cfg.val_max_samples]) if split.val else bank
    val_mask, val_image = val_bank.center_batch(cfg.patch_size, cfg.val_max_samples)
    # hook order matters for exact resume: the training panel, then validation, sample from the global RNG
    # before the checkpoint stores it
    tb = TensorBoardHook(out / "tb", cfg.log_every, cfg.image_every, _train_panels(model))
    validation = ValidationHook(_validation(model, val_mask, val_image), cfg.val_every, best_path=None, payload=None,
                                on_result=[_log_validation(tb), _record])  # the GAN keeps only its last checkpoint
    hooks = [tb, validation, CheckpointHook(cfg.checkpoint_every, ckpt_file, gan_payload(cfg, info, split.labeled)),
             ProgressHook(cfg.progress, "gan", model.shown_losses)]
    advice = f"lower --lr (now {cfg.lr:g}, default 2e-4) or use --amp off, and start a new --out"
    trainer = Trainer(model, None, model.lr_at, _batches(cfg, bank), cfg.iterations, device, hooks=hooks,
                      loss_limit=DIVERGED, advice=advice)
    if ckpt is not None:
        restore_trainer(trainer, ckpt)
    start = trainer.state.step + 1
    t_loop = time.time()
    trainer.fit()
    history = trainer.history
    result = {"gan_dir": str(out), "data": source.name, "n_labeled": len(split.labeled),
              "iterations": cfg.iterations, "final_losses": trainer.losses,
              "val_l1": history[-1]["l1"] if history else None, "wall_time_s": time.time() - t0,
              "s_per_iteration": (time.time() - t_loop) / max(cfg.iterations - start, 1), "device": str(device),
              "n_pseudo": len(bank.ids) - len(split.labeled)}
    run_dir.finish(result)
    return result


def _batches(cfg: GanConfig, bank: PairBank) -> Callable[[int], Iterable[dict]]:
    """start step -> the remaining steps' batches {"labeled": {"mask", "image"}}, pure functions of (seed, step)."""

    def batches(start: int) -> Iterable[dict]:
        for step in range(start, cfg.iterations):
            mask, image = bank.batch(cfg.batch_size, cfg.patch_size, cfg.seed, step)
            yield {"labeled": {"mask": mask, "image": image}}

    return batches


def _add_pseudo_pairs(cfg: GanConfig, source, split, bank: PairBank) -> dict[str, Any]:
    """Add the confident, class-balanced pseudo-labeled pairs of cfg.pseudo_labels to `bank`; their summary."""
    filt = PseudoFilter(cfg.pseudo_threshold, cfg.pseudo_min_confident, cfg.pseudo_max_per_labeled)
    chosen, summary = pseudo_label(cfg.pseudo_labels, source, split, list(bank.masks), filt, cfg.device)
    bank.add(source, [c.id for c in chosen], [c.mask for c in chosen])
    log.info(f"pseudo-labels: {summary['unlabeled']} unlabeled images, {summary['accepted_per_image']} confident, "
             f"{len(chosen)} kept after class balance (+{len(chosen)} pairs to {summary['labeled']} labeled)")
    return summary


def _train_panels(model: Pix2Pix) -> Panels:
    """mask | real | generated (EMA generator) for up to 4 pairs of the step's batch."""

    def panels(trainer: Trainer) -> dict[str, torch.Tensor]:
        pair = trainer.batch["labeled"]
        mask, image = pair["mask"][:4].cpu(), pair["image"][:4].cpu()
        fake = model.sample(model.prepare(one_hot(pair["mask"][:4], model.num_classes))).cpu()
        return {"train/mask|real|generated": pair_grid(mask, (image + 1) / 2, (fake + 1) / 2)[None]}

    return panels


def _validation(model: Pix2Pix, mask: torch.Tensor, image: torch.Tensor) -> Callable[[nn.Module], dict]:
    """evaluate(generator) for the ValidationHook: L1 of its samples to the real images of the fixed validation
    batch (in [0, 1] units), and the batch's picture."""
    condition = model.prepare(one_hot(mask, model.num_classes))

    @torch.no_grad()
    def evaluate(generator: nn.Module) -> dict:
        generator.eval()  # the EMA generator: always in eval mode (its dropout stays on: samples vary)
        with autocast(model.device, model.amp_dtype):
            fake = generator(condition).float().cpu()
        l1 = float((fake - image).abs().mean() / 2)
        return {"l1": l1, "picture": pair_grid(mask[:4], (image[:4] + 1) / 2, (fake[:4] + 1) / 2)}

    return evaluate


def _record(trainer: Trainer, step: int, name: str, result: dict) -> None:
    """A ValidationHook callback keeping the validation L1 in the run's history (checkpoint and result.json)."""
    trainer.history.append({"step": step, "l1": result["l1"]})


def _log_validation(tb: TensorBoardHook) -> Callable[[Trainer, int, str, dict], None]:
    """A ValidationHook callback writing the validation L1 and picture to TensorBoard."""

    def log(trainer: Trainer, step: int, name: str, result: dict) -> None:
        tb.writer.add_scalar("val/l1", result["l1"], step)
        tb.writer.add_image("val/mask|real|generated", result["picture"], step)

    return log
