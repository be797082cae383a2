"""The one registry of budget profiles (`--profile`): a profile names, together, the segmentation budget, the GAN
budget and the study plan, and `base_config` turns it into a run's RunConfig.

The GAN budget and the study plan are plain numbers and names here, read by gan_aug (provider, study); ssl_seg
never imports gan_aug. A profile without a GAN budget or a study plan (`realistic`) serves ablations and sweeps only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..config import RunConfig
from ..errors import UserError
from ..flags import apply


@dataclass(frozen=True)
class SegBudget:
    """Training budget and sizes shared by every segmentation run of a grid."""

    iterations: int
    batch_size: int
    patch_size: int
    base_channels: int
    val_every: int
    phantom_n: int
    phantom_size: int
    optimizer: str = "adamw"  # short budgets: AdamW converges reliably where SGD+poly sometimes stalls
    lr: float = 2e-3
    lr_schedule: str | None = None  # None: the optimizer's default (constant for adamw)
    val_max_samples: int | None = 64  # None: validate on every validation image (whole volumes)


@dataclass(frozen=True)
class GanBudget:
    """GAN width and training length, and how many pairs it synthesizes by default."""

    iterations: int
    batch_size: int
    ngf: int
    checkpoint_every: int
    n: int
    ema_rampup: float = 0.0  # gan-aug train --ema-rampup: the sampled EMA generator averages only recent weights


@dataclass(frozen=True)
class StudyPlan:
    """What `ssl-seg study` runs on top of the profile's segmentation budget."""

    methods: tuple[str, ...]  # low-label ablation methods
    fractions: tuple[float, ...]  # their labeled fractions (the full-label supervised reference is added)
    seeds: tuple[int, ...]  # ablation seeds; seed s also draws split s
    sweep_fraction: float  # the labeled fraction whose pairs train the GAN and the ratio sweep
    ratios: tuple[float, ...]  # synthetic shares of the labeled batch, 0 (real only) first
    sweep_seeds: tuple[int, ...]  # training seeds of the sweep (split seed gan_aug.study.SPLIT_SEED)
    ssl_with_synthetic: bool  # also train the best SSL method (on validation) at the chosen ratio and at 0
    oracle: bool = True  # phantom data: also the oracle row (phantom masks) at the chosen ratio, labelled as such
    iterations: int | None = None  # segmentation steps per run (None: the segmentation budget's)


@dataclass(frozen=True)
class Profile:
    """One `--profile`: the segmentation budget, and where defined the GAN budget and the study plan."""

    seg: SegBudget
    gan: GanBudget | None = None
    study: StudyPlan | None = None


PROFILES: dict[str, Profile] = {
    # `tiny` keeps smoke tests to seconds.
    "tiny": Profile(
        seg=SegBudget(iterations=4, batch_size=4, patch_size=32, base_channels=4, val_every=4, phantom_n=24,
                      phantom_size=32),
        gan=GanBudget(iterations=4, batch_size=2, ngf=8, checkpoint_every=2, n=16),
        study=StudyPlan(methods=("supervised", "mean-teacher"), fractions=(0.25,), seeds=(0,), sweep_fraction=0.25,
                        ratios=(0.0, 0.5), sweep_seeds=(0, 1), ssl_with_synthetic=True)),
    # `quick` finishes a small grid on 2 CPU cores in minutes; its GAN takes ~2 min on one busy CPU core at 64 px
    # (0.19 s/step). The study: under 8 min on an idle 2-core CPU with two workers (benchmarks/RESULTS.md). Three
    # seeds per cell so every gain has a 95 % interval; 250 steps per run (at the budget's 120 the full-label
    # reference is far from converged). No SSL-with-synthetic leg (standard has it): at n = 1 it could establish
    # nothing.
    "quick": Profile(
        seg=SegBudget(iterations=120, batch_size=8, patch_size=64, base_channels=8, val_every=60, phantom_n=120,
                      phantom_size=64),
        # EMA ramp: at 600 steps the plain EMA is the mean of the whole path from the random initialisation; with the
        # ramp the phantom's samples scored fidelity Dice 0.79 against 0.41 and TSTR/TRTR 0.73 against 0.46 (one
        # paired run, preregistered/gan_ema_ramp_phantom_quick.md)
        gan=GanBudget(iterations=600, batch_size=4, ngf=32, checkpoint_every=100, n=200, ema_rampup=0.05),
        study=StudyPlan(methods=("supervised", "mean-teacher", "unimatch"), fractions=(0.1,), seeds=(0, 1, 2),
                        sweep_fraction=0.1, ratios=(0.0, 0.25, 0.5), sweep_seeds=(0, 1, 2), ssl_with_synthetic=False,
                        iterations=250)),
    # `standard` is what benchmarks/RESULTS.md reports; its GAN makes a usable generator.
    "standard": Profile(
        seg=SegBudget(iterations=300, batch_size=8, patch_size=64, base_channels=8, val_every=100, phantom_n=200,
                      phantom_size=64),
        gan=GanBudget(iterations=4000, batch_size=4, ngf=64, checkpoint_every=500, n=400),
        study=StudyPlan(methods=("supervised", "mean-teacher", "pseudo-label", "cps", "unimatch"),
                        fractions=(0.05, 0.1), seeds=(0, 1, 2), sweep_fraction=0.05,
                        ratios=(0.0, 0.25, 0.5, 0.75, 1.0), sweep_seeds=(0, 1, 2), ssl_with_synthetic=True)),
    # `realistic`: the scale of the papers' 2D setups; patches shrink to the data's native size.
    "realistic": Profile(
        seg=SegBudget(iterations=2000, batch_size=8, patch_size=128, base_channels=16, val_every=200, phantom_n=200,
                      phantom_size=128, val_max_samples=None)),
}


def profile(name: str) -> Profile:
    """The named profile; unknown names list the valid ones."""
    if name not in PROFILES:
        raise UserError(f"--profile {name}: unknown; valid: {', '.join(PROFILES)}")
    return PROFILES[name]


def gan_budget(name: str) -> GanBudget:
    """The GAN budget of profile `name`; a profile without one names those that have one."""
    return _part(name, "gan", "GAN budget")


def study_plan(name: str) -> StudyPlan:
    """The study plan of profile `name`; a profile without one names those that have one."""
    return _part(name, "study", "study plan")


def _part(name: str, field: str, what: str):
    """profile(name).<field>, or a UserError naming the profiles that define it."""
    part = getattr(profile(name), field)
    if part is None:
        having = ", ".join(k for k, p in PROFILES.items() if getattr(p, field) is not None)
        raise UserError(f"--profile {name}: no {what} for it; valid: {having}")
    return part


def resolve_data(data: str, seg: SegBudget) -> str:
    """A bare `phantom:<task>` gets the budget's count and size; anything else is used as given."""
    if data.startswith("phantom:") and "?" not in data:
        return f"{data}?n={seg.phantom_n}&size={seg.phantom_size}"
    return data


def probed_sides(source: Any, probe: int) -> list[tuple[int, int]]:
    """(H, W) of about `probe` images spread evenly over a 2D `source` (what native_patch and inside_patch size on)."""
    step = max(1, len(source) // probe)
    return [tuple(source.load(i).image.shape[-2:]) for i in range(0, len(source), step)]


def native_patch(data: str, patch_size: int, spatial_dims: int = 2, stride: int = 16, probe: int = 64) -> int:
    """`patch_size`, or the data's native size when smaller, rounded up to a multiple of `stride`.

    2D: the largest image side among about `probe` samples (a 35x50 px slice gets 64, not a mostly padded 128).
    3D: the largest extent of the median volume on any axis, through-plane included, in voxels of the finest
    spacing (the unit of a 3D `--patch-size`), read from the headers without decoding a volume; the 3D patch is
    then cut per axis by ssl_seg.data.patches3d.patch_shape.
    """
    from ..data.sources import open_source

    source = open_source(data, spatial_dims)
    if spatial_dims == 3:
        spacing, shape = source.median_spacing(), source.median_shape()
        largest = max(round(n * s / min(spacing)) for n, s in zip(shape, spacing))
    else:
        largest = max(max(hw) for hw in probed_sides(source, probe))
    return min(patch_size, -(-largest // stride) * stride)


def inside_patch(data: str, patch_size: int, spatial_dims: int = 2, stride: int = 16, minimum: int = 32,
                 probe: int = 64) -> int:
    """`patch_size`, or when larger than the data the median image's shorter side rounded down to a multiple of
    `stride`: crops inside the images, for a GAN, whose generator sees padding as background. Never below `minimum`
    (the default PatchGAN needs 32 px; smaller images are padded up to it).

    2D: about `probe` samples; 3D: the median volume's in-plane sides (the GAN learns from slices along D).
    """
    import numpy as np

    from ..data.sources import open_source

    source = open_source(data, spatial_dims)
    if spatial_dims == 3:
        side = min(source.median_shape()[-2:])
    else:
        side = float(np.median([min(hw) for hw in probed_sides(source, probe)]))
    return min(patch_size, max(minimum, int(side) // stride * stride))


def profile_settings(seg: SegBudget, iterations: int, device: str) -> dict[str, Any]:
    """The run-config fields a profile's budget sets, as {field path: value} (the patch, which depends on the data,
    is sized in `base_config`): validation no rarer than once per run, images once, at the end."""
    return {"model.base_channels": seg.base_channels, "train.iterations": iterations,
            "train.batch_size": seg.batch_size, "train.optimizer": seg.optimizer, "train.lr": seg.lr,
            "train.lr_schedule": seg.lr_schedule, "train.val_every": min(seg.val_every, iterations),
            "train.image_every": iterations, "train.val_max_samples": seg.val_max_samples, "train.device": device,
            "train.progress": False}


# what a grid run's config flag defaults to where the profile sets the field (the --help of ablate, sweep, study)
GRID_DEFAULTS = {**{path: "default: the --profile's" for path in ("data.patch_size", *profile_settings(
    PROFILES["quick"].seg, 1, "cpu")) if path not in ("train.iterations", "train.device", "train.progress")},
    "train.progress": "default: off"}


def base_config(data: str, prof: Profile, device: str, iterations: int | None = None,
                run_flags: Mapping[str, Any] | None = None) -> RunConfig:
    """A RunConfig with the profile's segmentation budget (method, fraction, seed and backbone are set per run).

    `iterations` overrides the budget's. `run_flags` ({path: value}, the run-config flags given) are applied after
    the profile's settings; the profile's patch is sized for their `data.spatial_dims`, and not at all when they set
    `data.patch_size`.
    """
    run_flags = dict(run_flags or {})
    seg = prof.seg
    cfg = RunConfig()
    cfg.data.data = resolve_data(data, seg)
    if "data.patch_size" not in run_flags:
        cfg.data.patch_size = native_patch(cfg.data.data, seg.patch_size, run_flags.get("data.spatial_dims", 2))
    apply(cfg, profile_settings(seg, seg.iterations if iterations is None else iterations, device))
    apply(cfg, run_flags)
    return cfg
