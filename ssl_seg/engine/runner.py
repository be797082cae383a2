"""Build everything a run needs from a RunConfig, train it, and load finished runs back."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from .checkpoint import load_checkpoint, save_checkpoint
from .run_directory import RunDirectory
from .run_models import build_method_for, build_weight_ema, start_weights
from ..config import RunConfig, resume_differences
from ..data.concat import ConcatSource
from ..data.cache import CachedSource
from .distributed import data_parallel, distributed_context
from ..data.datasets import PairDataset, StepBatches, raise_user_errors
from ..data.mixing import build_schedule, schedule_names
from ..data.sample import SampleSource, task_differences
from ..data.sources import open_source
from ..data.slice_volumes import check_volumes_whole
from ..data.splits import Split, case_ids, check_groups_whole, make_split, resolve_split_file
from ..data.patches3d import is_thick, patch_shape
from ..data.transforms import JointTransform
from ..data.transforms3d import VolumeTransform
from ..device import amp_dtype, cpu_cores, resolve_device, resolve_threads
from ..errors import UserError
from ..evaluation.scoring import evaluate_model, selection_score
from .hooks import (CheckpointHook, ProgressHook, ResultCallback, TensorBoardHook, ValidationHook,
                    segmentation_panels)
from ..methods.losses import LOSSES
from ..methods.registry import completed_options, method_class, method_names
from ..models.registry import backbone_options, model_names
from .optim import build_optimizer, schedule_name
from .trainer import LR_SCHEDULES, Trainer, seed_everything

log = logging.getLogger(__name__)


RESUMABLE_FLAGS = ("--iterations, --val-every, --val-max-samples, --device, --amp, --num-workers, --threads, "
                   "--no-progress")


def build_split(cfg: RunConfig, source: SampleSource) -> Split:
    """The run's split: from --split-file, else drawn by seed and grouped by case."""
    d = cfg.data
    if d.split_file:
        split = resolve_split_file(d.split_file, source, d.group_by)
        if d.group_by:
            check_groups_whole(split.roles(), dict(zip(source.ids, case_ids(source, d.group_by))),
                               f"--group-by {d.group_by!r}: case", f"fix {d.split_file}: a case's samples belong to one role (a leak otherwise)")
    else:
        split = make_split(source, seed=d.split_seed, fractions=tuple(d.fractions), group_by=d.group_by,
                           labeled_fraction=d.labeled_fraction, labeled_cases=d.labeled_cases)
    check_volumes_whole(split.roles(), source)
    return split


def source_info(source: SampleSource) -> dict[str, Any]:
    """What rebuilding a model for this data needs to know."""
    return {"num_classes": source.num_classes, "in_channels": source.in_channels,
            "class_names": list(source.class_names), "data": source.name}


def patch_for(cfg: RunConfig, source: SampleSource) -> int | tuple[int, int, int]:
    """The training and sliding-window patch: --patch-size for images, a (D, H, W) shape for volumes."""
    if cfg.data.spatial_dims == 2:
        return cfg.data.patch_size
    return patch_shape(cfg.data.patch_size, source.median_spacing(), source.median_shape())


def build_transform(cfg: RunConfig, source: SampleSource) -> JointTransform | VolumeTransform:
    """The joint augmentation and crop of training samples: 2D, or 3D with the data's patch shape and spacing."""
    if cfg.data.spatial_dims == 2:
        return JointTransform(cfg.data.patch_size, augment=cfg.data.augment)
    return VolumeTransform(patch_for(cfg, source), is_thick(source.median_spacing()), augment=cfg.data.augment)


def _check_patch(cfg: RunConfig, source: SampleSource, ids: list[str]) -> None:
    if cfg.data.spatial_dims == 3:  # volumes are always padded to the patch
        return
    shapes = [source.load(source.index_of(i)).image.shape[-2:] for i in ids[:64]]
    largest = max(max(shape) for shape in shapes)
    if cfg.data.patch_size > 2 * largest:
        raise UserError(f"--patch-size {cfg.data.patch_size} is over twice the largest image side ({largest} px): "
                        f"each patch would be mostly padding, at the cost of the whole patch; use --patch-size "
                        f"{-(-largest // 16) * 16} or less")
    if cfg.data.pad:
        return
    smallest = min(min(shape) for shape in shapes)
    if cfg.data.patch_size > smallest:
        raise UserError(f"--patch-size {cfg.data.patch_size} is larger than the images ({smallest} px) and "
                        "padding is off; lower --patch-size or drop --no-pad")


def _batch_sizes(cfg: RunConfig, ssl: bool) -> tuple[int, int]:
    """(labeled, unlabeled) images per step.

    Without --labeled-batch-size, a semi-supervised method adds an unlabeled batch of --batch-size images to
    a labeled batch of --batch-size, so every method sees as many labeled images per step as supervised
    training. With it, --batch-size is the total and the labeled part is --labeled-batch-size (SSL4MIS style).
    """
    b, lb = cfg.train.batch_size, cfg.train.labeled_batch_size
    if not ssl:
        return b, 0
    if lb is None:
        return b, b
    if not 1 <= lb < b:
        raise UserError(f"--labeled-batch-size {lb}: must be at least 1 and below --batch-size {b}")
    return lb, b - lb


def check_names(cfg: RunConfig) -> None:
    """Backbone (and its --backbone-options), method, loss, ratio and learning-rate schedules exist in their registries
    (before any data is read)."""
    choices = (("--backbone", cfg.model.backbone, model_names()), ("--method", cfg.method.name, method_names()),
               ("--loss", cfg.method.loss, list(LOSSES)), ("--ratio-schedule", cfg.data.ratio_schedule, schedule_names()),
               ("--lr-schedule", schedule_name(cfg.train), list(LR_SCHEDULES)))
    for flag, value, valid in choices:
        if value not in valid:
            raise UserError(f"{flag} {value}: unknown; valid: {', '.join(valid)}")
    backbone_options(cfg.model.backbone, cfg.model.backbone_options)


def check_config(cfg: RunConfig) -> RunConfig:
    """Ranges and names of `cfg` checked; returns it with absolute data paths and the method's own options completed
    (what a run saves)."""
    cfg.validate()
    check_names(cfg)
    options = completed_options(cfg.method)
    if options.get("frozen_teacher") and not cfg.model.init_from:
        raise UserError("--frozen-teacher takes the pseudo-labels from the start that --init-from names; add "
                        "--init-from RUN_DIR (e.g. a finished supervised run) or drop --frozen-teacher")
    return dataclasses.replace(cfg, method=dataclasses.replace(cfg.method, options=options)).with_absolute_paths()


def run_training(cfg: RunConfig, resume: bool = False, extra_hooks: Iterable[Any] = ()) -> dict[str, Any]:
    """Train one run into cfg.out (config.json, split.json, best.pt, last.pt, tb/, result.json); return the result.

    The run directory is locked for the whole run (a second process on it stops at once). A resumed run's
    saved config is checked against `cfg` before anything is written; only config.RESUMABLE fields may differ.
    `extra_hooks` run after the run's own on rank 0 (a benchmark observing the training; their state is not
    checkpointed).
    """
    rank, world = distributed_context()
    cfg = check_config(cfg)
    run_dir = RunDirectory(cfg.out, "last.pt")
    if rank != 0:
        return _run_training(cfg, resume, rank, world, [], run_dir)
    with run_dir.locked():
        return _run_training(cfg, resume, rank, world, list(extra_hooks), run_dir)


def _resumed_checkpoint(cfg: RunConfig, out: Path, device: torch.device) -> dict[str, Any]:
    """last.pt of the run in `out`, refused (before anything is written) when `cfg` changes what it trains."""
    ckpt = load_checkpoint(out / "last.pt", map_location=device)
    differ = resume_differences(RunConfig.from_dict(ckpt["config"]), cfg)
    if differ:
        raise UserError(f"--resume: {out} was trained with other settings ({'; '.join(differ)}); give the run's own "
                        f"flags (only {RESUMABLE_FLAGS} may change) or start a new --out")
    state = ckpt.get("state", {})
    best_step = state.get("best_step", -1)
    if state.get("best_score", -float("inf")) > -float("inf") and not (out / "best.pt").is_file():
        raise UserError(f"--resume: {out / 'best.pt'} (best on validation at step {best_step}) is missing, and a "
                        "resumed run would only replace it on a later improvement; restore it or start a new --out")
    return ckpt


def _check_resumed_data(out: Path, ckpt: dict[str, Any], info: dict[str, Any], split: Split) -> None:
    """The data and split seen now are the ones the checkpoint was trained on."""
    changed = [k for k in ("num_classes", "in_channels", "class_names") if ckpt["info"].get(k) != info[k]]
    if changed:
        raise UserError(f"--resume: the data at {info['data']} changed since {out} was trained ({', '.join(changed)}: "
                        f"{[ckpt['info'].get(k) for k in changed]} -> {[info[k] for k in changed]}); "
                        "restore the data or start a new --out")
    saved = out / "split.json"
    if saved.is_file():
        old = Split.load(saved)
        if any(getattr(old, k) != getattr(split, k) for k in ("labeled", "unlabeled", "val", "test")):
            raise UserError(f"--resume: the split drawn now differs from {saved} (the data or split file changed); "
                            "restore them or start a new --out")


def _run_training(cfg: RunConfig, resume: bool, rank: int, world: int, extra_hooks: list[Any],
                  run_dir: RunDirectory) -> dict[str, Any]:
    """run_training without the lock and the checks."""
    t0 = time.time()
    tc = cfg.train
    device = _place(tc.device, tc.threads, world)
    out = run_dir.path
    run_dir.check(resume, fresh=rank == 0)
    ckpt = _resumed_checkpoint(cfg, out, device) if resume else None

    seed_everything(tc.seed)
    source, split, info = _open_data(cfg, out, ckpt)
    notes = list(getattr(source, "notes", []))
    for note in notes:
        log.warning(f"note: {note}")
    if rank == 0:
        run_dir.start(cfg, split, resume)

    start = start_weights(cfg, info, split) if cfg.model.init_from and ckpt is None else None
    method = build_method_for(cfg, info, device, start)
    optimizer, lr_at = build_optimizer(tc, method.parameters())
    if world > 1:
        data_parallel(method, device, tc.sync_bn)

    steps = step_batches(cfg, source, split, rank)
    batches = loader_factory(steps, cfg)
    dtype = amp_dtype(device, tc.amp)
    clock, timing = _timing(t0, ckpt)
    payload = _payload_fn(cfg, info, timing)
    hooks = _hooks(cfg, out, source, split, device, dtype, payload) + extra_hooks if rank == 0 else []
    trainer = Trainer(method, optimizer, lr_at, batches, tc.iterations, device, dtype, tc.channels_last, hooks,
                      weight_ema=build_weight_ema(cfg, method))
    if ckpt is not None:
        trainer.load_state_dict(ckpt)
    clock["t_train"] = time.time()
    state = trainer.fit()
    if not split.val and rank == 0:  # no validation data: the last weights are also the best
        save_checkpoint(out / "best.pt", payload(trainer))
    total = timing()  # every segment of a resumed run, up to its last checkpoint, plus this one
    result = {
        "run_dir": str(out), "data": source.name, "backbone": cfg.model.backbone, "method": cfg.method.name,
        "labeled_fraction": cfg.data.labeled_fraction, "labeled_cases": cfg.data.labeled_cases,
        "n_labeled": len(split.labeled), "n_unlabeled": len(split.unlabeled), "seed": tc.seed,
        "iterations": tc.iterations, "val_dice": state.best_score if state.best_score > -float("inf") else None,
        "best_step": state.best_step, "best_model": state.best_model,
        "started_at": total["started_at"],  # UTC, of the run's first segment (benchmarks/preregistration.py)
        "wall_time_s": total["wall_s"], "s_per_iteration": total["train_s"] / tc.iterations,
        "segments": total["segments"], "device": str(device), "world_size": world,
        "synthetic_ratio_mean": _realised_ratio(steps), "data_notes": notes, "val_history": trainer.history,
    }
    if rank == 0:
        run_dir.finish(result)
    if world > 1:
        dist.barrier()
    return result


def _open_data(cfg: RunConfig, out: Path, ckpt: dict[str, Any] | None) -> tuple[SampleSource, Split, dict[str, Any]]:
    """The run's data, split and `source_info`, checked (patch size; for a resumed run, the same data and split)."""
    source = open_source(cfg.data.data, cfg.data.spatial_dims, cfg.data.volume_by)
    split = build_split(cfg, source)
    _check_patch(cfg, source, split.labeled)
    info = source_info(source)
    if cfg.data.spatial_dims == 3:  # what `predict` needs to tile new volumes as validation did
        info["patch"] = list(patch_for(cfg, source))
    if ckpt is not None:
        _check_resumed_data(out, ckpt, info, split)
    return source, split, info


def _timing(t0: float, ckpt: dict[str, Any] | None) -> tuple[dict[str, float], Callable[[], dict[str, Any]]]:
    """(clock, timing): `timing()` adds this segment's seconds (training from clock["t_train"], wall from t0) to the
    earlier segments' of a resumed run."""
    earlier = dict(ckpt.get("timing", {})) if ckpt is not None else {}
    clock = {"t0": t0, "t_train": time.time()}
    started_at = earlier.get("started_at") or datetime.fromtimestamp(t0, timezone.utc).isoformat(timespec="seconds")
    return clock, lambda: {"started_at": started_at,
                           "train_s": earlier.get("train_s", 0.0) + time.time() - clock["t_train"],
                           "wall_s": earlier.get("wall_s", 0.0) + time.time() - clock["t0"],
                           "segments": int(earlier.get("segments", 0)) + 1}


def _place(device_name: str, threads: int | None, world: int) -> torch.device:
    """The run's device (a data-parallel process's own GPU) after setting its torch CPU threads."""
    device = resolve_device(device_name)
    count = resolve_threads(threads)
    if count is not None:
        torch.set_num_threads(count)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


def _hooks(cfg: RunConfig, out: Path, source: SampleSource, split: Split, device: torch.device,
           dtype: torch.dtype | None, payload: Callable[[Trainer], dict[str, Any]]) -> list[Any]:
    """Rank 0's hooks: validation with best.pt (validating a warm start first), last.pt, TensorBoard, progress."""
    tc = cfg.train
    tb = TensorBoardHook(out / "tb", tc.log_every, tc.image_every, segmentation_panels(source.num_classes))
    progress = ProgressHook(tc.progress)
    hooks: list[Any] = []
    if split.val:
        val_ids = split.val[: tc.val_max_samples] if tc.val_max_samples else split.val
        patch = patch_for(cfg, source)
        evaluate = lambda model: evaluate_model(model, source, val_ids, patch, device, dtype)
        callbacks = [tb.log_validation, record_validation, show_validation(progress)]
        hooks.append(ValidationHook(evaluate, tc.val_every, out / "best.pt", payload, callbacks,
                                    at_start=bool(cfg.model.init_from)))
    return hooks + [CheckpointHook(tc.val_every, out / "last.pt", payload), tb, progress]


def record_validation(trainer: Trainer, step: int, name: str, result: dict) -> None:
    """A ValidationHook callback keeping network `name`'s validation scores in the run's history (checkpoints,
    result.json)."""
    trainer.history.append({"step": step, "model": name, "dice": result["dice"], "score": selection_score(result)})


def show_validation(progress: ProgressHook) -> ResultCallback:
    """A ValidationHook callback showing the first evaluation network's validation score on `progress`'s bar."""

    def show(trainer: Trainer, step: int, name: str, result: dict) -> None:
        if name == next(iter(trainer.eval_models())):
            progress.val_score = selection_score(result)

    return show


def _payload_fn(cfg: RunConfig, info: dict[str, Any], timing: Callable[[], dict[str, Any]]
                ) -> Callable[[Trainer], dict[str, Any]]:
    def payload(trainer: Trainer) -> dict[str, Any]:
        return {"config": cfg.to_dict(), "info": info, "timing": timing(),
                **trainer.state_dict()}
    return payload


def step_batches(cfg: RunConfig, source: SampleSource, split: Split, rank: int) -> StepBatches:
    """The per-step batch dataset: labeled (+ synthetic) and unlabeled parts drawn by (seed, rank, step)."""
    ssl = method_class(cfg.method.name).uses_unlabeled
    lbs, ubs = _batch_sizes(cfg, ssl)
    transform = build_transform(cfg, source)
    cache_bytes = cfg.data.cache_mb * 2**20 // max(resolve_workers(cfg.data.num_workers), 1)
    cached = CachedSource(source, cache_bytes)  # shared by the labeled and unlabeled parts
    labeled = PairDataset(cached, split.labeled, transform)
    unlabeled_ids = list(split.unlabeled) + (list(split.labeled) if cfg.data.include_labeled_in_unlabeled else [])
    unlabeled = PairDataset(cached, unlabeled_ids, transform) if ssl and unlabeled_ids else None
    synthetic, ratio_at = None, None
    if cfg.data.synthetic:
        synthetic = _synthetic_pairs(cfg, source, transform, cache_bytes)
        ratio_at = build_schedule(cfg.data.ratio_schedule, cfg.data.synthetic_ratio, cfg.data.ratio_end,
                                  cfg.train.iterations)
    elif cfg.data.synthetic_ratio > 0:
        raise UserError("--synthetic-ratio > 0 needs --synthetic SYN_DIR (a synthetic paired dataset)")
    return StepBatches(labeled, unlabeled, lbs, ubs if unlabeled is not None else 0, cfg.train.iterations,
                       cfg.train.seed, rank, synthetic, ratio_at)


def resolve_workers(requested: int | None) -> int:
    """DataLoader workers: as asked, or (None) one per core the torch threads leave free, at most 2.

    Decoding and augmenting a 128 px mean-teacher batch costs about 6 % of its training step on this CPU, so
    workers pay only on spare cores; on a machine whose cores the training threads already use they compete.
    """
    if requested is not None:
        if requested < 0:
            raise UserError(f"--num-workers {requested}: use 0 (load in the training process) or more")
        return requested
    return max(0, min(2, cpu_cores() - torch.get_num_threads()))


def loader_factory(steps: StepBatches, cfg: RunConfig) -> Callable[[int], Iterable[dict]]:
    """start step -> the remaining steps' batches, prefetched by DataLoader workers when there are any."""

    def batches(start: int) -> Iterable[dict]:
        workers = resolve_workers(cfg.data.num_workers)
        # Its own generator: a DataLoader draws a base seed when iterated, which must not shift the global RNG.
        generator = torch.Generator().manual_seed(cfg.train.seed)
        loader = DataLoader(steps, batch_size=None, sampler=range(start, cfg.train.iterations), num_workers=workers,
                            pin_memory=resolve_device(cfg.train.device).type == "cuda", persistent_workers=False,
                            prefetch_factor=4 if workers else None, generator=generator)
        return raise_user_errors(loader)

    return batches


def _synthetic_pairs(cfg: RunConfig, source: SampleSource, transform: JointTransform | VolumeTransform,
                     cache_bytes: int) -> PairDataset:
    sources = [open_source(p, cfg.data.spatial_dims) for p in cfg.data.synthetic]
    for syn in sources:
        differ = task_differences(source, syn)
        if differ:
            raise UserError(f"--synthetic {syn.name}: another task than {source.name} ({'; '.join(differ)}); "
                            "synthesize from a GAN trained on this dataset")
    merged = sources[0] if len(sources) == 1 else ConcatSource(sources)
    return PairDataset(CachedSource(merged, cache_bytes), list(merged.ids), transform)


def _realised_ratio(steps: StepBatches) -> float:
    """Mean share of synthetic pairs in the labeled batches over the whole run."""
    n = [steps.n_synthetic(s) for s in range(len(steps))]
    return float(np.mean(n) / steps.labeled_batch_size) if n else 0.0
