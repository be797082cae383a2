"""Typed run configuration: dataclasses that save themselves as JSON next to a run's outputs."""

from __future__ import annotations

import dataclasses
import json
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
    amp: str = "auto"  # auto | bf16 | fp16 | off (CUDA only)
    channels_last: bool = True
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


def _build(cls: type, values: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise UserError(f"unknown {cls.__name__} field(s) {sorted(unknown)}; valid: {sorted(names)}")
    values = dict(values)
    if "fractions" in values and values["fractions"] is not None:
        values["fractions"] = tuple(values["fractions"])
    return cls(**values)
