"""GanConfig: every setting of one mask-to-image GAN run, saved as JSON in the run directory."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ssl_seg.config import DataConfig, SavedConfig, absolute_data, build_config
from ssl_seg.errors import UserError
from ssl_seg.flags import check_fields, like, opt


# fields a resumed run may change: where it runs, how long, and how it reports
RESUMABLE = frozenset({"iterations", "device", "amp", "progress", "log_every", "image_every", "val_every",
                       "checkpoint_every", "out"})


# GAN-only options the diffusion generator would silently ignore: refused with it
DIFFUSION_REFUSES = {"--task-weight": lambda c: c.task_weight > 0, "--diff-augment": lambda c: c.diff_augment,
                     "--feature-matching": lambda c: c.feature_matching, "--noise-channel": lambda c: c.noise_channel,
                     "--lambda-ms": lambda c: c.lambda_ms > 0, "--latent-dim": lambda c: c.latent_dim > 0}


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
    pseudo_threshold: float = opt(0.9, "top class probability of a confident pixel",
                                  check=(lambda v: 0 < v <= 1, "in (0, 1], e.g. 0.9"))
    pseudo_min_confident: float = opt(0.95, "share of confident pixels for a pseudo-labeled image to be kept",
                                      check=(lambda v: 0 < v <= 1, "in (0, 1], e.g. 0.95"))
    pseudo_max_per_labeled: float = opt(4.0, "pseudo-labeled pairs per labeled pair, at most (class-balanced)",
                                        check=(lambda v: v > 0, "positive, e.g. 4"))

    iterations: int = opt(20000, "training steps", check=(lambda v: v >= 1, "at least 1"))
    batch_size: int = opt(4, "pairs per step", check=(lambda v: v >= 1, "at least 1"))
    patch_size: int = opt(128, "square training crop: the generator's native size",
                          check=(lambda v: v >= 16, "at least 16 (the GAN's crops)"))
    generator: str = opt("unet", "mask-to-image generator: unet (pix2pix), spade, or diffusion (a denoising U-Net "
                                 "conditioned on the mask: no discriminator, no adversarial or L1 loss)")
    sample_steps: int = opt(50, "diffusion generator: DDIM sampling steps (validation; the default of synthesize)",
                            check=(lambda v: 1 <= v <= 1000, "in [1, 1000], e.g. 50"))
    n_down: int | None = opt(None, "generator down-samplings; none: a 2x2 bottleneck at --patch-size",
                             check=(lambda v: v >= 1, "at least 1"))
    ngf: int = opt(64, "generator base width", check=(lambda v: v >= 1, "at least 1"))
    noise_channel: bool = opt(False, "add an N(0,1) input channel to the generator")
    dropout: float = opt(0.5, "generator dropout, kept on when sampling (the noise source)",
                         check=(lambda v: 0 <= v < 1, "in [0, 1), e.g. 0.5"))
    norm: str = opt("instance", "normalisation layers of both networks")
    discriminator: str = opt("patchgan", "discriminator")
    ndf: int = opt(64, "discriminator base width", check=(lambda v: v >= 1, "at least 1"))
    n_layers: int = opt(3, "PatchGAN stride-2 layers (3: 70x70 receptive field)",
                        check=(lambda v: v >= 1, "at least 1"))
    num_D: int = opt(1, "discriminator scales (pix2pixHD multi-scale when > 1)", check=(lambda v: v >= 1, "at least 1"))

    gan_loss: str = opt("vanilla", "adversarial loss")
    lambda_l1: float = opt(100.0, "weight of the L1 term", check=(lambda v: v >= 0, ">= 0, e.g. 100"))
    feature_matching: bool = opt(False, "add pix2pixHD discriminator feature matching")
    lambda_fm: float = opt(10.0, "weight of feature matching (with --feature-matching)",
                           check=(lambda v: v >= 0, ">= 0, e.g. 10"))
    lambda_ms: float = opt(0.0, "weight of the mode-seeking term (MSGAN, Mao et al. CVPR 2019): two samples per mask, "
                                "G also lowers 1 / mean|G(m, z1) - G(m, z2)|; 0: off",
                           check=(lambda v: v >= 0, ">= 0, e.g. 1"))
    latent_dim: int = opt(0, "cVAE-GAN latent code (BicycleGAN, Zhu et al. 2017): an encoder maps each real image to "
                                 "a Gaussian code of this size that G reconstructs it from (L1), a second sample per "
                                 "mask takes a code from N(0, I) as at sampling (the encoder's width: --ndf); 0: off, "
                                 "e.g. 8",
                          check=(lambda v: v >= 0, ">= 0, e.g. 8"))
    latent_background_only: bool = opt(False, "with --latent-dim: the encoder sees only the background (every "
                                              "labeled structure set to 0), so the code cannot carry the structures' "
                                              "grey levels")
    lambda_kl: float = opt(0.01, "weight of the encoder's KL to N(0, I) (with --latent-dim)",
                           check=(lambda v: v >= 0, ">= 0, e.g. 0.01"))
    diff_augment: bool = opt(False, "DiffAugment (colour, translation, cutout) on every discriminator input, real "
                                    "and fake: for GANs trained on few labeled pairs")
    task_weight: float = opt(0.0, "task-aware generator (GenSeg): weight of a small segmenter's loss on held-out "
                                  "real labeled pairs after one look-ahead step on the generated ones, in G's loss "
                                  "(0: off; the segmenter trains beside the GAN)",
                             check=(lambda v: v >= 0, ">= 0, e.g. 1"))
    task_step_size: float = opt(0.01, "task-aware generator: the segmenter's SGD learning rate, also the look-ahead "
                                      "step", check=(lambda v: v > 0, "positive, e.g. 0.01"))
    lr: float = opt(2e-4, "Adam learning rate (linear decay over the second half)",
                    check=(lambda v: v > 0, "positive, e.g. 2e-4"))
    beta1: float = opt(0.5, "Adam beta1 of a GAN (the diffusion generator uses 0.9, as DDPM)",
                       check=(lambda v: 0 <= v < 1, "in [0, 1)"))
    beta2: float = opt(0.999, "Adam beta2", check=(lambda v: 0 <= v < 1, "in [0, 1)"))
    ema_decay: float = opt(0.999, "EMA decay of the sampling generator",
                           check=(lambda v: 0 <= v < 1, "in [0, 1), e.g. 0.999"))
    ema_rampup: float = opt(0.0, "cap the EMA's half-life at this share of the steps taken (StyleGAN2-ADA: 0.05; "
                            "the quick profile's GAN uses it); 0: min(decay, 1 - 1/(step + 1)), the uniform mean of "
                            "all weights for the first 1/(1 - decay) steps (measured: RESULTS.md, sixteenth session)",
                            check=(lambda v: 0 <= v < 1, "in [0, 1), e.g. 0.05"))

    seed: int = opt(0, "training seed (init, crops, dropout)",
                    check=(lambda v: 0 <= v < 2**32, "an integer in [0, 2**32), e.g. 0"))
    device: str = opt("auto", "auto, cpu or cuda[:N]")
    amp: str = opt("auto", "mixed precision (CUDA only)", choices=("auto", "bf16", "fp16", "off"))
    channels_last: bool = opt(True, "channels_last memory format on CUDA (on the CPU the GAN step measured slower)")
    log_every: int = opt(50, "steps between loss logs", check=(lambda v: v >= 1, "at least 1"))
    image_every: int = opt(500, "steps between TensorBoard image grids", check=(lambda v: v >= 1, "at least 1"))
    val_every: int = opt(1000, "steps between validation L1 of the EMA generator",
                         check=(lambda v: v >= 1, "at least 1"))
    val_max_samples: int = opt(16, "validation pairs, at most", check=(lambda v: v >= 1, "at least 1"))
    checkpoint_every: int = opt(1000, "steps between checkpoints", check=(lambda v: v >= 1, "at least 1, e.g. 1000"))
    progress: bool = opt(True, "progress bar")

    def __post_init__(self) -> None:
        self.fractions = tuple(self.fractions)  # type: ignore[assignment]  # JSON gives a list
        self.validate()

    def validate(self) -> None:
        """Refuse values that cannot work (NaN included), naming the flag and its valid range (each field's `check`
        and `choices`)."""
        check_fields(self)
        if self.generator == "diffusion":
            offending = [flag for flag, on in DIFFUSION_REFUSES.items() if on(self)]
            if offending:
                raise UserError(f"{offending[0]}: a GAN option; the diffusion generator has no discriminator or "
                                "adversarial loss; drop it or choose --generator unet")
        if self.latent_background_only and not self.latent_dim:
            raise UserError("--latent-background-only: there is no encoder without --latent-dim; add --latent-dim 8")
        if self.lambda_ms > 0 and self.dropout == 0 and not self.noise_channel and not self.latent_dim:
            raise UserError("--lambda-ms: the generator has no noise (--dropout 0 without --noise-channel or "
                            "--latent-dim), so its two samples of a mask are equal; raise --dropout or add "
                            "--noise-channel")

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
