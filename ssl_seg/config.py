"""Typed run configuration: dataclasses that save themselves as JSON next to a run's outputs.

Every field is one line `name: type = opt(default, help)` and is a flag of `ssl-seg train` (`--name`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .flags import check_fields, opt
from .io_utils import atomic_write_json


@dataclass
class DataConfig:
    """Where the data comes from and how it is split and cropped."""

    data: str = opt("phantom:cardiac", "folder, HDF5 file, or phantom:<task>[?n=400&size=128]")
    patch_size: int = opt(64, "side of the square training crop (px); with --spatial-dims 3 the patch spans about "
                              "this many voxels of the finest spacing on every axis",
                          check=(lambda v: v >= 8, "at least 8, e.g. 64 or 128"))
    spatial_dims: int = opt(2, "2: train on images (volumes as slices); 3: on whole volumes with 3D patches and nets",
                            choices=(2, 3),
                            check=(lambda v: v in (2, 3), "2 (images, volumes as slices) or 3 (volumes)"))
    pad: bool = opt(True, "pad images smaller than the patch (--no-pad: such a patch size is an error)")
    split_file: str | None = opt(None, "JSON split file (see data_splits/); wins over the seeded split")
    split_seed: int = opt(0, "seed of the train/val/test and labeled draw",
                          check=(lambda v: 0 <= v < 2**32, "an integer in [0, 2**32), e.g. 0"))
    fractions: tuple[float, float, float] = opt((0.7, 0.1, 0.2), "train, val and test shares of the cases",
                                                metavar=("TRAIN", "VAL", "TEST"))
    group_by: str | None = opt(None, "REGEX on the sample id; its first group is the case id")
    volume_by: str | None = opt(None, "REGEX on the ids of 2D slices: group 1 names the volume, group 2 the slice "
                                      "index; scores (and the checkpoint choice) become per stacked 3D volume and the "
                                      "split keeps each volume whole", metavar="REGEX")
    labeled_fraction: float | None = opt(0.1, "share of the training cases that are labeled",
                                         check=(lambda v: 0 < v <= 1, "in (0, 1], e.g. 0.1"))
    labeled_cases: int | None = opt(None, "number of labeled training cases (wins over --labeled-fraction)",
                                    check=(lambda v: v >= 1, "at least 1"))
    augment: bool = opt(True, "random augmentation (--no-augment: crop only)")
    include_labeled_in_unlabeled: bool = opt(True, "SSL: the labeled images also feed the unlabeled losses")
    num_workers: int | None = opt(None, "DataLoader workers; none: one per core left over by the torch threads, "
                                        "at most 2", check=(lambda v: v >= 0, "0 or more"))
    cache_mb: int = opt(1024, "decoded samples kept in memory, MiB (per process: split between the workers)",
                        check=(lambda v: v >= 0, "0 or more"))
    synthetic: list[str] = opt([], "synthetic paired dataset (repeatable)", metavar="SYN_DIR")
    synthetic_ratio: float = opt(0.0, "share of synthetic pairs in each labeled batch",
                                 check=(lambda v: 0 <= v <= 1, "in [0, 1]"))
    ratio_schedule: str = opt("constant", "how the synthetic share changes over training")
    ratio_end: float | None = opt(None, "final ratio of a scheduled mix; none: --synthetic-ratio",
                                  check=(lambda v: 0 <= v <= 1, "in [0, 1]"))

    def split_group_by(self) -> str | None:
        """The regex that groups samples into split cases: --group-by, else --volume-by (its group 1 is the volume)."""
        return self.group_by or self.volume_by


@dataclass
class ModelConfig:
    """Which backbone and how wide."""

    backbone: str = opt("unet", "segmentation network")
    base_channels: int = opt(16, "channels of the first stage (doubled per down-sampling)",
                             check=(lambda v: v >= 1, "at least 1"))
    deep_supervision: bool = opt(False, "unetpp, monai:dynunet: train all heads (their mean is the output)")
    backbone_options: str | None = opt(None, "the backbone's own options as key=value,... (e.g. depth=3,dropout=0.1; "
                                             "monai:unetr hidden_size=384,mlp_dim=1536,num_heads=6); a bad key lists "
                                             "the valid ones", metavar="KEY=VALUE,...")
    init_from: str | None = opt(None, "warm start: every network starts from this finished run's best.pt (same "
                                      "backbone, width and classes; its labeled images must be labeled here too); "
                                      "validated before the first step, so best.pt can stay the start",
                                metavar="RUN_DIR")


# which methods read a method option (its --help group)
TEACHERS = ("mean-teacher", "uncertainty-mt", "pseudo-label", "bcp")
MEAN_TEACHERS = ("mean-teacher", "uncertainty-mt")
PSEUDO_LABELS = ("pseudo-label", "unimatch")
UNLABELED = ("mean-teacher", "uncertainty-mt", "pseudo-label", "cps", "unimatch", "bcp")


@dataclass
class MethodConfig:
    """Semi-supervised method and the hyperparameters several methods share (the groups below name the methods that
    read each one); a method's own options sit in `options`."""

    name: str = opt("supervised", "(semi-)supervised method", flag="--method", metavar="METHOD")
    loss: str = opt("dice_ce", "segmentation loss of the labeled pixels")
    ema_decay: float = opt(0.99, "EMA decay of the teacher (pseudo-label only with --teacher-labels)",
                           used_by=TEACHERS, check=(lambda v: 0 <= v < 1, "in [0, 1), e.g. 0.99"))
    consistency: str = opt("mse", "consistency between student and teacher", choices=("mse", "kl"),
                           used_by=MEAN_TEACHERS)
    consistency_weight: float = opt(1.0, "weight of the unlabeled loss (after its ramp-up)",
                                    used_by=("mean-teacher", "uncertainty-mt", "pseudo-label", "cps"),
                                    check=(lambda v: v >= 0, ">= 0, e.g. 1.0"))
    rampup_fraction: float = opt(0.4, "unlabeled losses ramp up (sigmoid) over this share of training; "
                                      "0 = full weight at once", used_by=UNLABELED,
                                 check=(lambda v: 0 <= v <= 1, "in [0, 1], e.g. 0.4"))
    noise_std: float = opt(0.1, "std of the Gaussian noise on the teacher's input", used_by=MEAN_TEACHERS,
                           check=(lambda v: v >= 0, ">= 0"))
    threshold: float = opt(0.95, "confidence threshold of a pseudo-labeled pixel", used_by=PSEUDO_LABELS,
                           check=(lambda v: 0 <= v <= 1, "a probability in [0, 1], e.g. 0.95"))
    threshold_rule: str = opt("fixed", "fixed (--threshold) or freematch (self-adaptive and class-wise, Wang et al. "
                                       "ICLR 2023)", choices=("fixed", "freematch"), used_by=PSEUDO_LABELS)
    threshold_momentum: float = opt(0.999, "freematch threshold and distribution alignment: EMA momentum of their "
                                           "class statistics (FreeMatch's 0.999)", used_by=PSEUDO_LABELS,
                                    check=(lambda v: 0 <= v < 1, "in [0, 1), e.g. 0.999"))
    distribution_alignment: bool = opt(False, "scale weak-view probabilities by the labeled class frequencies over "
                                              "their running mean (ReMixMatch)", used_by=PSEUDO_LABELS)
    cutmix_prob: float = opt(0.5, "probability of CutMix on an unlabeled image", used_by=PSEUDO_LABELS,
                             check=(lambda v: 0 <= v <= 1, "in [0, 1]"))
    options: dict[str, Any] = opt({}, "the method's own options (its options dataclass, `options_class`): set by "
                                      "the flags grouped under its name; checked and completed by the method registry",
                                  flag=None)


@dataclass
class TrainConfig:
    """Optimisation schedule, precision, logging and checkpointing."""

    iterations: int = opt(2000, "training steps", check=(lambda v: v >= 1, "at least 1"))
    batch_size: int = opt(8, "images per step", check=(lambda v: v >= 1, "at least 1"))
    labeled_batch_size: int | None = opt(None, "SSL: labeled part of --batch-size; none: --batch-size labeled "
                                               "plus as many unlabeled", check=(lambda v: v >= 1, "at least 1"))
    optimizer: str = opt("sgd", "sgd (poly decay) or adamw", choices=("sgd", "adamw"))
    lr: float | None = opt(None, "learning rate; none: 0.01 for sgd, 1e-3 for adamw",
                           check=(lambda v: 0 < v <= 10, "positive and at most 10, e.g. 0.01 (sgd) or 1e-3 (adamw)"))
    lr_schedule: str | None = opt(None, "learning-rate schedule; none: poly for sgd, constant for adamw")
    weight_decay: float = opt(1e-4, "weight decay of the optimizer", check=(lambda v: v >= 0, ">= 0"))
    seed: int = opt(0, "training seed (init, augmentation, batch order)",
                    check=(lambda v: 0 <= v < 2**32, "an integer in [0, 2**32), e.g. 0"))
    device: str = opt("auto", "auto, cpu or cuda[:N]")
    amp: str = opt("auto", "mixed precision; on CPU only bf16 autocasts (auto stays float32)",
                   choices=("auto", "bf16", "fp16", "off"))
    channels_last: bool = opt(True, "channels_last memory format on CUDA and CPU (measured faster for the U-Net "
                                    "on both)")
    sync_bn: bool = opt(False, "torchrun data parallel: SyncBatchNorm in the trainable nets (CUDA only)")
    threads: int | None = opt(None, "torch CPU threads; none: SLURM_CPUS_PER_TASK, cores / torchrun's local "
                                    "processes, or torch's default", check=(lambda v: v >= 1, "at least 1"))
    weight_ema: float | None = opt(None, "evaluate an EMA of the trained network's weights with this decay (e.g. "
                                         "0.999): validation picks best.pt on it, evaluate and predict use it; "
                                         "none: the network itself", metavar="DECAY",
                                   check=(lambda v: 0 < v < 1, "in (0, 1), e.g. 0.999 (leave it out to evaluate the network itself)"))
    val_every: int = opt(200, "steps between validations (and checkpoints)", check=(lambda v: v >= 1, "at least 1"))
    log_every: int = opt(20, "steps between TensorBoard loss logs", check=(lambda v: v >= 1, "at least 1"))
    image_every: int = opt(500, "steps between TensorBoard image panels", check=(lambda v: v >= 1, "at least 1"))
    val_max_samples: int | None = opt(64, "validate on at most this many images; none: all",
                                      check=(lambda v: v >= 1, "at least 1"))
    progress: bool = opt(True, "progress bar")


class SavedConfig:
    """A config dataclass that saves itself next to a run's outputs and reads itself back (RunConfig, GanConfig);
    the class gives `from_dict` and `MADE_BY` (the command that writes its runs, for messages)."""

    MADE_BY = "ssl-seg train"

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-safe)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        """Rebuild from `to_dict` output (each config class checks its own fields)."""
        raise NotImplementedError

    def save(self, path: str | Path) -> None:
        """Write as JSON (atomically)."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Any:
        """Read a config JSON written by `save`; a missing or unreadable file is one line naming it."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: config file not found; is this a run directory made by '{cls.MADE_BY}'?")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: not valid JSON ({e}); re-run '{cls.MADE_BY}' or fix the file") from None


@dataclass
class RunConfig(SavedConfig):
    """Everything that defines one training run."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str = opt("runs/default", "run directory")

    def validate(self) -> None:
        """Refuse values that cannot work, naming the flag and its valid range: the `check` and `choices` each field
        declares, then the rules between fields."""
        check_fields(self)
        d = self.data
        if d.volume_by is not None:
            from .data.slice_volumes import parse_volume_by

            parse_volume_by(d.volume_by)
            if d.spatial_dims == 3:
                raise UserError(f"--volume-by {d.volume_by!r} groups 2D slices into volumes; with --spatial-dims 3 "
                                "the samples already are volumes: drop --volume-by")

    def with_absolute_paths(self) -> "RunConfig":
        """A copy whose DATA, split file and synthetic folders are absolute (runs work from any directory)."""
        cfg = dataclasses.replace(self, data=dataclasses.replace(self.data))
        cfg.data.data = absolute_data(cfg.data.data)
        cfg.data.split_file = absolute_data(cfg.data.split_file) if cfg.data.split_file else None
        cfg.data.synthetic = [absolute_data(p) for p in cfg.data.synthetic]
        if cfg.model.init_from:
            cfg.model = dataclasses.replace(cfg.model, init_from=absolute_data(cfg.model.init_from))
        return cfg

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """Rebuild from `to_dict` output; unknown keys are an error naming the key."""
        sections = {"data": DataConfig, "model": ModelConfig, "method": MethodConfig, "train": TrainConfig}
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key == "method" and isinstance(value, dict):
                kwargs[key] = build_config(MethodConfig, own_options_nested(value))
            elif key in sections:
                kwargs[key] = build_config(sections[key], value)
            elif key == "out":
                kwargs[key] = value
            else:
                raise UserError(f"unknown config section '{key}'; valid: {', '.join([*sections, 'out'])}")
        return cls(**kwargs)


# the method options that configs saved before methods had options of their own held flat in "method", by method
FLAT_OWN_OPTIONS = {"teacher_labels": "pseudo-label", "feature_dropout": "unimatch",
                    "uncertainty_threshold": "uncertainty-mt", "pretrain_fraction": "bcp",
                    "mixed_unlabeled_weight": "bcp"}


def own_options_nested(method: dict[str, Any]) -> dict[str, Any]:
    """A saved "method" section with flat own options (FLAT_OWN_OPTIONS) moved into "options" (the chosen method's)
    or dropped (the other methods'); a section already nested is returned as it is."""
    method = dict(method)
    if not isinstance(method.get("options", {}), dict):
        return method  # build_config names the bad value
    options = dict(method.get("options", {}))
    for key, owner in FLAT_OWN_OPTIONS.items():
        if key in method:
            value = method.pop(key)
            if owner == method.get("name", "supervised"):
                options.setdefault(key, value)
    if options:
        method["options"] = options
    return method


# fields a resumed run may change: how long it runs, where, and how it reports (a longer run stretches the lr decay)
RESUMABLE = ("train.iterations", "train.val_every", "train.val_max_samples", "train.log_every",
             "train.image_every", "train.progress", "train.device", "train.amp", "data.num_workers", "data.cache_mb",
             "train.threads", "out")


def resume_differences(saved: RunConfig, new: RunConfig) -> list[str]:
    """['method.name: saved 'cps', now 'unimatch'', ...] for fields outside RESUMABLE that differ."""
    old, cur = flatten(saved.with_absolute_paths().to_dict()), flatten(new.with_absolute_paths().to_dict())
    return [f"{k}: saved {old.get(k)!r}, now {cur.get(k)!r}" for k in sorted(set(old) | set(cur))
            if k not in RESUMABLE and _norm(old.get(k)) != _norm(cur.get(k))]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1e-3}} -> {'train.lr': 1e-3}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
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


def _conforms(value: Any, hint: Any) -> bool:
    """Whether a JSON value has the type of a config field (bool is not a number, a number not a bool)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is dict:
        return isinstance(value, dict)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(_conforms(v, a) for v, a in zip(value, args))
        return all(_conforms(v, args[0]) for v in value) if args else True
    return True


def _type_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")


def build_config(cls: type, values: dict[str, Any]) -> Any:
    """A config dataclass from a JSON object, each field's value checked against its type (one line per error)."""
    if not isinstance(values, dict):
        raise UserError(f"config section {cls.__name__}: expected a JSON object of fields, got {values!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise UserError(f"unknown {cls.__name__} field(s) {sorted(unknown)}; valid: {sorted(names)}")
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for name, value in values.items():
        if not _conforms(value, hints[name]):
            raise UserError(f"config {cls.__name__}.{name}: {value!r} is not of type "
                            f"{_type_name(hints[name])}; e.g. {getattr(defaults, name)!r}")
    values = dict(values)
    if "fractions" in values and values["fractions"] is not None:
        values["fractions"] = tuple(values["fractions"])
    return cls(**values)
