"""GanConfig: every setting of one mask-to-image GAN run, saved as JSON in the run directory."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ssl_seg.config import DataConfig, SavedConfig, absolute_data, build_config
from ssl_seg.errors import UserError
from ssl_seg.flags import like, opt


# fields a resumed run may change: where it runs, how long, and how it reports
RESUMABLE = frozenset({"iterations", "device", "amp", "progress", "log_every", "image_every", "val_every",
                       "checkpoint_every", "out"})


@dataclass
class GanConfig(SavedConfig):
    """Data and split (same meaning as `ssl-seg train`), networks, losses, schedule, device and logging.

    Every field is one line `name: type = opt(default, help)` and is a flag of `gan-aug train` (`--name`).
    """

    MADE_BY = "gan-aug train"

    data: str = like(DataConfig, "data")
    labeled_fraction: float | None = like(DataConfig, "labeled_fraction")
    labeled_cases: int | None = like(DataConfig, "labeled_cases")
    split_file: str | None = like(DataConfig, "split_file", help="JSON split file; the GAN trains on its 'labeled' ids")
    split_seed: int = like(DataConfig, "split_seed")
    fractions: tuple[float, float, float] = like(DataConfig, "fractions")
    group_by: str | None = like(DataConfig, "group_by")
    spatial_dims: int = like(DataConfig, "spatial_dims",
                             help="2: DATA holds images; 3: DATA holds volumes (as for ssl-seg train), the 2D "
                                  "generator learns from their slices and `synthesize --format nifti` writes volumes")
    out: str = opt("runs/gan", "GAN run directory")
    pseudo_labels: str | None = opt(None, "RUN_DIR of an 'ssl-seg train' run on the same data: also train on its "
                                          "confident, class-balanced pseudo-labeled pairs of the unlabeled images")
    pseudo_threshold: float = opt(0.9, "top class probability of a confident pixel")
    pseudo_min_confident: float = opt(0.95, "share of confident pixels for a pseudo-labeled image to be kept")
    pseudo_max_per_labeled: float = opt(4.0, "pseudo-labeled pairs per labeled pair, at most (class-balanced)")

    iterations: int = opt(20000, "training steps")
    batch_size: int = opt(4, "pairs per step")
    patch_size: int = opt(128, "square training crop: the generator's native size")
    generator: str = opt("unet", "mask-to-image generator")
    n_down: int | None = opt(None, "generator down-samplings; none: a 2x2 bottleneck at --patch-size")
    ngf: int = opt(64, "generator base width")
    noise_channel: bool = opt(False, "add an N(0,1) input channel to the generator")
    dropout: float = opt(0.5, "generator dropout, kept on when sampling (the noise source)")
    norm: str = opt("instance", "normalisation layers of both networks")
    discriminator: str = opt("patchgan", "discriminator")
    ndf: int = opt(64, "discriminator base width")
    n_layers: int = opt(3, "PatchGAN stride-2 layers (3: 70x70 receptive field)")
    num_D: int = opt(1, "discriminator scales (pix2pixHD multi-scale when > 1)")

    gan_loss: str = opt("vanilla", "adversarial loss")
    lambda_l1: float = opt(100.0, "weight of the L1 term")
    feature_matching: bool = opt(False, "add pix2pixHD discriminator feature matching")
    lambda_fm: float = opt(10.0, "weight of feature matching (with --feature-matching)")
    diff_augment: bool = opt(False, "DiffAugment (colour, translation, cutout) on every discriminator input, real "
                                    "and fake: for GANs trained on few labeled pairs")
    lr: float = opt(2e-4, "Adam learning rate (linear decay over the second half)")
    beta1: float = opt(0.5, "Adam beta1")
    beta2: float = opt(0.999, "Adam beta2")
    ema_decay: float = opt(0.999, "EMA decay of the sampling generator")

    seed: int = opt(0, "training seed (init, crops, dropout)")
    device: str = opt("auto", "auto, cpu or cuda[:N]")
    amp: str = opt("auto", "mixed precision (CUDA only)", choices=("auto", "bf16", "fp16", "off"))
    channels_last: bool = opt(True, "channels_last memory format on CUDA (on the CPU the GAN step measured slower)")
    log_every: int = opt(50, "steps between loss logs")
    image_every: int = opt(500, "steps between TensorBoard image grids")
    val_every: int = opt(1000, "steps between validation L1 of the EMA generator")
    val_max_samples: int = opt(16, "validation pairs, at most")
    checkpoint_every: int = opt(1000, "steps between checkpoints")
    progress: bool = opt(True, "progress bar")

    def __post_init__(self) -> None:
        self.fractions = tuple(self.fractions)  # type: ignore[assignment]  # JSON gives a list
        self.validate()

    def validate(self) -> None:
        """Refuse values that cannot work (NaN included), naming the flag and its valid range."""
        checks = [
            ("--iterations", self.iterations, self.iterations >= 1, "at least 1"),
            ("--batch-size", self.batch_size, self.batch_size >= 1, "at least 1"),
            ("--spatial-dims", self.spatial_dims, self.spatial_dims in (2, 3), "2 or 3"),
            ("--patch-size", self.patch_size, self.patch_size >= 16, "at least 16 (the GAN's crops)"),
            ("--labeled-fraction", self.labeled_fraction,
             self.labeled_fraction is None or 0 < self.labeled_fraction <= 1, "in (0, 1]"),
            ("--labeled-cases", self.labeled_cases, self.labeled_cases is None or self.labeled_cases >= 1,
             "at least 1"),
            ("--lr", self.lr, self.lr > 0, "positive, e.g. 2e-4"),
            ("--ema-decay", self.ema_decay, 0 <= self.ema_decay < 1, "in [0, 1), e.g. 0.999"),
            ("--beta1", self.beta1, 0 <= self.beta1 < 1, "in [0, 1)"),
            ("--beta2", self.beta2, 0 <= self.beta2 < 1, "in [0, 1)"),
            ("--lambda-l1", self.lambda_l1, self.lambda_l1 >= 0, ">= 0, e.g. 100"),
            ("--lambda-fm", self.lambda_fm, self.lambda_fm >= 0, ">= 0, e.g. 10"),
            ("--dropout", self.dropout, 0 <= self.dropout < 1, "in [0, 1), e.g. 0.5"),
            ("--ngf", self.ngf, self.ngf >= 1, "at least 1"),
            ("--ndf", self.ndf, self.ndf >= 1, "at least 1"),
            ("--n-layers", self.n_layers, self.n_layers >= 1, "at least 1"),
            ("--num-d", self.num_D, self.num_D >= 1, "at least 1"),
            ("--n-down", self.n_down, self.n_down is None or self.n_down >= 1, "at least 1"),
            ("--val-max-samples", self.val_max_samples, self.val_max_samples >= 1, "at least 1"),
            ("--checkpoint-every", self.checkpoint_every, self.checkpoint_every >= 1, "at least 1, e.g. 1000"),
            ("--seed", self.seed, 0 <= self.seed < 2**32, "an integer in [0, 2**32), e.g. 0"),
            ("--split-seed", self.split_seed, 0 <= self.split_seed < 2**32, "an integer in [0, 2**32), e.g. 0"),
            ("--val-every", self.val_every, self.val_every >= 1, "at least 1"),
            ("--log-every", self.log_every, self.log_every >= 1, "at least 1"),
            ("--image-every", self.image_every, self.image_every >= 1, "at least 1"),
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

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GanConfig":
        """Rebuild from `to_dict` output; unknown keys are an error naming them."""
        return build_config(cls, d)
