"""GanConfig: every setting of one mask-to-image GAN run, saved as JSON in the run directory."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ssl_seg.config import absolute_data
from ssl_seg.errors import UserError
from ssl_seg.io_utils import atomic_write_json


# fields a resumed run may change: where it runs, how long, and how it reports
RESUMABLE = frozenset({"iterations", "device", "amp", "progress", "log_every", "image_every", "val_every",
                       "checkpoint_every", "out"})


@dataclass
class GanConfig:
    """Data and split (same meaning as `ssl-seg train`), networks, losses, schedule, device and logging."""

    data: str = "phantom:cardiac"
    labeled_fraction: float | None = 0.1
    labeled_cases: int | None = None
    split_file: str | None = None
    split_seed: int = 0
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    group_by: str | None = None
    out: str = "runs/gan"
    pseudo_labels: str | None = None  # RUN_DIR of a semi-supervised run: add its confident pseudo-labeled pairs
    pseudo_threshold: float = 0.9  # top class probability of a confident pixel
    pseudo_min_confident: float = 0.95  # share of confident pixels for an image to be kept
    pseudo_max_per_labeled: float = 4.0  # pseudo pairs per labeled pair, at most (class-balanced)

    iterations: int = 20000
    batch_size: int = 4
    patch_size: int = 128  # square training crops; the generator's native size
    generator: str = "unet"  # unet | spade
    n_down: int | None = None  # None: auto_n_down(patch_size)
    ngf: int = 64
    noise_channel: bool = False
    dropout: float = 0.5
    norm: str = "instance"
    discriminator: str = "patchgan"
    ndf: int = 64
    n_layers: int = 3
    num_D: int = 1

    gan_loss: str = "vanilla"  # vanilla | lsgan | hinge
    lambda_l1: float = 100.0
    feature_matching: bool = False
    lambda_fm: float = 10.0
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    ema_decay: float = 0.999

    seed: int = 0
    device: str = "auto"
    amp: str = "auto"  # auto | bf16 | fp16 | off (CUDA only)
    channels_last: bool = True
    log_every: int = 50
    image_every: int = 500
    val_every: int = 1000
    val_max_samples: int = 16
    checkpoint_every: int = 1000
    progress: bool = True

    def __post_init__(self) -> None:
        self.fractions = tuple(self.fractions)  # type: ignore[assignment]  # JSON gives a list
        self.validate()

    def validate(self) -> None:
        """Refuse values that cannot work (NaN included), naming the flag and its valid range."""
        checks = [
            ("--iterations", self.iterations, self.iterations >= 1, "at least 1"),
            ("--batch-size", self.batch_size, self.batch_size >= 1, "at least 1"),
            ("--patch-size", self.patch_size, self.patch_size >= 16, "at least 16 (the GAN's crops)"),
            ("--labeled-fraction", self.labeled_fraction,
             self.labeled_fraction is None or 0 < self.labeled_fraction <= 1, "in (0, 1]"),
            ("--labeled-cases", self.labeled_cases, self.labeled_cases is None or self.labeled_cases >= 1,
             "at least 1"),
            ("--lr", self.lr, self.lr > 0, "positive, e.g. 2e-4"),
            ("--ema-decay", self.ema_decay, 0 <= self.ema_decay < 1, "in [0, 1), e.g. 0.999"),
            ("beta1", self.beta1, 0 <= self.beta1 < 1, "in [0, 1)"),
            ("beta2", self.beta2, 0 <= self.beta2 < 1, "in [0, 1)"),
            ("--lambda-l1", self.lambda_l1, self.lambda_l1 >= 0, ">= 0, e.g. 100"),
            ("--lambda-fm", self.lambda_fm, self.lambda_fm >= 0, ">= 0, e.g. 10"),
            ("--dropout", self.dropout, 0 <= self.dropout < 1, "in [0, 1), e.g. 0.5"),
            ("--ngf", self.ngf, self.ngf >= 1, "at least 1"),
            ("--ndf", self.ndf, self.ndf >= 1, "at least 1"),
            ("--n-layers", self.n_layers, self.n_layers >= 1, "at least 1"),
            ("--num-D", self.num_D, self.num_D >= 1, "at least 1"),
            ("--n-down", self.n_down, self.n_down is None or self.n_down >= 1, "at least 1"),
            ("val_max_samples", self.val_max_samples, self.val_max_samples >= 1, "at least 1"),
            ("--pseudo-threshold", self.pseudo_threshold, 0 < self.pseudo_threshold <= 1, "in (0, 1], e.g. 0.9"),
            ("--pseudo-min-confident", self.pseudo_min_confident, 0 < self.pseudo_min_confident <= 1,
             "in (0, 1], e.g. 0.95"),
            ("--pseudo-max-per-labeled", self.pseudo_max_per_labeled, self.pseudo_max_per_labeled > 0,
             "positive, e.g. 4"),
        ]
        for flag, value, ok, valid in checks:
            if not ok or (isinstance(value, float) and not math.isfinite(value)):
                raise UserError(f"{flag} {value}: must be {valid}")

    def resumed_with(self, overrides: dict[str, Any]) -> "GanConfig":
        """This (saved) config with command-line overrides applied for a resume: only fields in
        RESUMABLE may change (a longer run stretches the lr decay); any other difference is a UserError."""
        changed = sorted(k for k, v in overrides.items() if k not in RESUMABLE and getattr(self, k) != v)
        if changed:
            saved = ", ".join(f"{k}={getattr(self, k)!r}" for k in changed)
            raise UserError(f"--resume: flag(s) {changed} differ from the saved run ({saved}); drop them or "
                            "start a new --out")
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if k in RESUMABLE})

    def with_absolute_paths(self) -> "GanConfig":
        """A copy whose DATA and split file are absolute (the run works from any directory)."""
        return dataclasses.replace(self, data=absolute_data(self.data),
                                   split_file=absolute_data(self.split_file) if self.split_file else None,
                                   pseudo_labels=absolute_data(self.pseudo_labels) if self.pseudo_labels
                                   else None)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GanConfig":
        """Rebuild from `to_dict` output; unknown keys are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise UserError(f"unknown GanConfig field(s) {unknown}; valid: {sorted(names)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        """Write as JSON (atomically)."""
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "GanConfig":
        """Read a config written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: GAN config not found; is this a run directory made by 'gan-aug train'?")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: not valid JSON ({e}); re-run 'gan-aug train' or fix the file") from None
