"""Typed run configuration: dataclasses that save themselves as JSON next to a run's outputs."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .io_utils import atomic_write_json


@dataclass
class DataConfig:
    """Where the data comes from and how it is split and cropped."""

    data: str = "phantom:cardiac"
    patch_size: int = 64
    spatial_dims: int = 2  # 2: train on images (volumes as slices); 3: on whole volumes with 3D patches and nets
    pad: bool = True  # pad images smaller than the patch (off: such a patch size is an error)
    split_file: str | None = None
    split_seed: int = 0
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    group_by: str | None = None
    labeled_fraction: float | None = 0.1
    labeled_cases: int | None = None
    augment: bool = True
    include_labeled_in_unlabeled: bool = True
    num_workers: int | None = None  # DataLoader workers; None: one per core left over by the torch threads, at most 2
    cache_mb: int = 1024  # decoded samples kept in memory (per process: split between the workers)
    synthetic: list[str] = field(default_factory=list)
    synthetic_ratio: float = 0.0
    ratio_schedule: str = "constant"
    ratio_end: float | None = None


@dataclass
class ModelConfig:
    """Which backbone and how wide."""

    backbone: str = "unet"
    base_channels: int = 16
    deep_supervision: bool = False


@dataclass
class MethodConfig:
    """Semi-supervised method and its hyperparameters (all methods read the fields they need)."""

    name: str = "supervised"
    loss: str = "dice_ce"
    ema_decay: float = 0.99
    consistency: str = "mse"  # mse | kl
    consistency_weight: float = 1.0
    rampup_fraction: float = 0.4  # sigmoid ramp-up length as a fraction of all iterations
    noise_std: float = 0.1
    threshold: float = 0.95
    teacher_labels: bool = False
    cutmix_prob: float = 0.5
    feature_dropout: float = 0.5
    uncertainty_threshold: float = 0.75
    pretrain_fraction: float = 0.25  # BCP: labeled copy-paste pre-training share of the iterations (theirs 10k of 40k)
    mixed_unlabeled_weight: float = 0.5  # BCP: weight of the pixels that come from unlabeled images


@dataclass
class TrainConfig:
    """Optimisation schedule, precision, logging and checkpointing."""

    iterations: int = 2000
    batch_size: int = 8
    labeled_batch_size: int | None = None  # SSL: labeled part of batch_size; None = batch_size labeled + as many unlabeled
    optimizer: str = "sgd"  # sgd (poly decay) | adamw
    lr: float | None = None  # default 0.01 for sgd, 1e-3 for adamw
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"  # auto | cuda | cpu
    amp: str = "auto"  # auto | bf16 | fp16 | off; on CPU only bf16 autocasts (auto stays float32)
    channels_last: bool = True  # CUDA and CPU (measured faster for the U-Net on both)
    sync_bn: bool = False  # data parallel (torchrun): SyncBatchNorm in the trainable nets (CUDA only)
    threads: int | None = None  # torch threads; None: SLURM_CPUS_PER_TASK, cores / torchrun's local processes, or torch's default
    val_every: int = 200
    log_every: int = 20
    image_every: int = 500
    val_max_samples: int | None = 64
    progress: bool = True


@dataclass
class RunConfig:
    """Everything that defines one training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = "runs/default"

    def validate(self) -> None:
        """Refuse values that cannot work, naming the flag and its valid range (the one place ranges are checked)."""
        d, m, t = self.data, self.method, self.train
        checks = [
            ("--labeled-fraction", d.labeled_fraction, d.labeled_fraction is None or 0 < d.labeled_fraction <= 1,
             "in (0, 1], e.g. 0.1"),
            ("--labeled-cases", d.labeled_cases, d.labeled_cases is None or d.labeled_cases >= 1, "at least 1"),
            ("--patch-size", d.patch_size, d.patch_size >= 8, "at least 8, e.g. 64 or 128"),
            ("--spatial-dims", d.spatial_dims, d.spatial_dims in (2, 3), "2 (images, volumes as slices) or 3 (volumes)"),
            ("--num-workers", d.num_workers, d.num_workers is None or d.num_workers >= 0, "0 or more"),
            ("data.cache_mb", d.cache_mb, d.cache_mb >= 0, "0 or more"),
            ("--synthetic-ratio", d.synthetic_ratio, 0 <= d.synthetic_ratio <= 1, "in [0, 1]"),
            ("--ratio-end", d.ratio_end, d.ratio_end is None or 0 <= d.ratio_end <= 1, "in [0, 1]"),
            ("--base-channels", self.model.base_channels, self.model.base_channels >= 1, "at least 1"),
            ("--ema-decay", m.ema_decay, 0 <= m.ema_decay < 1, "in [0, 1), e.g. 0.99"),
            ("--consistency-weight", m.consistency_weight, m.consistency_weight >= 0, ">= 0, e.g. 1.0"),
            ("--rampup-fraction", m.rampup_fraction, 0 <= m.rampup_fraction <= 1, "in [0, 1], e.g. 0.4"),
            ("--threshold", m.threshold, 0 <= m.threshold <= 1, "a probability in [0, 1], e.g. 0.95"),
            ("method.noise_std", m.noise_std, m.noise_std >= 0, ">= 0"),
            ("method.cutmix_prob", m.cutmix_prob, 0 <= m.cutmix_prob <= 1, "in [0, 1]"),
            ("method.feature_dropout", m.feature_dropout, 0 <= m.feature_dropout < 1, "in [0, 1)"),
            ("method.uncertainty_threshold", m.uncertainty_threshold, m.uncertainty_threshold >= 0, ">= 0"),
            ("--pretrain-fraction", m.pretrain_fraction, 0 <= m.pretrain_fraction < 1, "in [0, 1), e.g. 0.25"),
            ("--mixed-unlabeled-weight", m.mixed_unlabeled_weight, m.mixed_unlabeled_weight >= 0, ">= 0, e.g. 0.5"),
            ("--labeled-batch-size", t.labeled_batch_size, t.labeled_batch_size is None or t.labeled_batch_size >= 1,
             "at least 1"),
            ("--iterations", t.iterations, t.iterations >= 1, "at least 1"),
            ("--batch-size", t.batch_size, t.batch_size >= 1, "at least 1"),
            ("--lr", t.lr, t.lr is None or t.lr > 0, "positive, e.g. 0.01 (sgd) or 1e-3 (adamw)"),
            ("train.weight_decay", t.weight_decay, t.weight_decay >= 0, ">= 0"),
            ("--val-every", t.val_every, t.val_every >= 1, "at least 1"),
            ("--val-max-samples", t.val_max_samples, t.val_max_samples is None or t.val_max_samples >= 1,
             "at least 1"),
            ("--threads", t.threads, t.threads is None or t.threads >= 1, "at least 1"),
            ("train.log_every", t.log_every, t.log_every >= 1, "at least 1"),
            ("train.image_every", t.image_every, t.image_every >= 1, "at least 1"),
        ]
        for flag, value, ok, valid in checks:
            if isinstance(value, float) and not math.isfinite(value):
                ok = False
            if not ok:
                raise UserError(f"{flag} {value}: must be {valid}")
        for flag, value, choices in (("--optimizer", t.optimizer, ("sgd", "adamw")),
                                     ("--consistency", m.consistency, ("mse", "kl")),
                                     ("--amp", t.amp, ("auto", "bf16", "fp16", "off"))):
            if value not in choices:
                raise UserError(f"{flag} {value}: use {' or '.join(choices)}")

    def with_absolute_paths(self) -> "RunConfig":
        """A copy whose DATA, split file and synthetic folders are absolute (runs work from any directory)."""
        cfg = dataclasses.replace(self, data=dataclasses.replace(self.data))
        cfg.data.data = absolute_data(cfg.data.data)
        cfg.data.split_file = absolute_data(cfg.data.split_file) if cfg.data.split_file else None
        cfg.data.synthetic = [absolute_data(p) for p in cfg.data.synthetic]
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """Rebuild from `to_dict` output; unknown keys are an error naming the key."""
        sections = {"data": DataConfig, "model": ModelConfig, "method": MethodConfig, "train": TrainConfig}
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key in sections:
                kwargs[key] = _build(sections[key], value)
            elif key == "out":
                kwargs[key] = value
            else:
                raise UserError(f"unknown config section '{key}'; valid: {', '.join([*sections, 'out'])}")
        return cls(**kwargs)

    def save(self, path: str | Path) -> None:
        """Write as JSON (atomically)."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        """Read a config JSON written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: config file not found; is this a run directory made by 'ssl-seg train'?")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON ({e}); re-run training or fix the file") from None


# fields a resumed run may change: how long it runs, where, and how it reports (a longer run stretches the lr decay)
RESUMABLE = ("train.iterations", "train.val_every", "train.val_max_samples", "train.log_every",
             "train.image_every", "train.progress", "train.device", "train.amp", "data.num_workers", "data.cache_mb",
             "train.threads", "out")


def resume_differences(saved: RunConfig, new: RunConfig) -> list[str]:
    """['method.name: saved 'cps', now 'unimatch'', ...] for fields outside RESUMABLE that differ."""
    old, cur = _flatten(saved.with_absolute_paths().to_dict()), _flatten(new.with_absolute_paths().to_dict())
    return [f"{k}: saved {old.get(k)!r}, now {cur.get(k)!r}" for k in sorted(set(old) | set(cur))
            if k not in RESUMABLE and _norm(old.get(k)) != _norm(cur.get(k))]


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def absolute_data(data: str) -> str:
    """A DATA string with a filesystem path made absolute (phantom:<task> and other schemes unchanged)."""
    if data.startswith("phantom:") or ":" in data.split("/")[0]:
        return data
    return os.path.abspath(os.path.expanduser(data))


def _build(cls: type, values: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise UserError(f"unknown {cls.__name__} field(s) {sorted(unknown)}; valid: {sorted(names)}")
    values = dict(values)
    if "fractions" in values and values["fractions"] is not None:
        values["fractions"] = tuple(values["fractions"])
    return cls(**values)
