"""Real-vs-synthetic ratio sweep: the grid of ratios x schedules x label fractions x methods x seeds and its command
(its tables and figure: sweep_report.py).

Synthetic data is just a paired dataset here. With --train-gan, a synthesizer found through the
`ssl_seg.synthesizers` entry-point group (gan_aug's pix2pix) trains a GAN on each fraction's labeled pairs
and writes the synthetic dataset; ssl_seg itself never imports gan_aug.
"""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path

from ..config import RunConfig
from ..errors import UserError
from ..flags import given, one_of
from ..methods.registry import for_method
from ..run_flags import add_run_flags, registry_choices
from .ablation import label_key
from .executors import add_grid_flags, build_executor
from .grid import GridRun, check_grid, run_grid
from .profiles import GRID_DEFAULTS, PROFILES, base_config, profile
from .sweep_report import write_sweep_summary
from .synthesis import SynthesisRequest, synthesizer

log = logging.getLogger(__name__)


def sweep_runs(base: RunConfig, synthetic: dict[float, list[str]], ratios: list[float], schedules: list[str],
               ratio_end: float, methods: list[str], seeds: list[int]) -> list[GridRun]:
    """The grid; the real-only reference (no synthetic pair at any step) is run once per (fraction, method, seed).

    A ratio is a schedule's start: ratio 0 under a schedule that ends at `ratio_end` > 0 (e.g. warmup
    0 -> 0.5) uses synthetic data; ratio 0 under `constant`, or ending at 0, is the real-only run.
    """
    runs, names = [], set()
    for fraction, syn_dirs in synthetic.items():
        for method in methods:
            for schedule in schedules:
                for ratio in ratios:
                    uses_synthetic = ratio > 0 or (schedule != "constant" and ratio_end > 0)
                    sched = schedule if uses_synthetic else "constant"
                    labels = label_key(fraction, None)
                    for seed in seeds:
                        name = f"{method}__{labels}__{sched}__r{ratio:g}__s{seed}"
                        if name in names:
                            continue  # the real-only run does not depend on the schedule
                        names.add(name)
                        cfg = copy.deepcopy(base)
                        cfg.method = for_method(cfg.method, method)
                        cfg.data.labeled_fraction = fraction
                        cfg.train.seed = seed
                        cfg.data.synthetic = list(syn_dirs) if uses_synthetic else []
                        cfg.data.synthetic_ratio = ratio
                        cfg.data.ratio_schedule = sched
                        cfg.data.ratio_end = None if sched == "constant" else ratio_end
                        runs.append(GridRun(name, cfg, {"backbone": base.model.backbone, "method": method,
                                                        "labels": labels, "fraction": fraction, "cases": None,
                                                        "seed": seed, "schedule": sched, "ratio": ratio}))
    return runs


def parse_synthetic(values: list[str], fractions: list[float]) -> dict[float, list[str]]:
    """--synthetic DIR (for every fraction) or FRACTION=DIR (for one), repeatable."""
    out: dict[float, list[str]] = {f: [] for f in fractions}
    for value in values:
        if "=" in value:
            key, path = value.split("=", 1)
            try:
                f = float(key)
            except ValueError:
                raise UserError(f"--synthetic {value}: use DIR or FRACTION=DIR, e.g. 0.05=syn/f0.05") from None
            if f not in out:
                raise UserError(f"--synthetic {value}: fraction {f:g} is not among --fractions")
            out[f].append(path)
        else:
            for f in out:
                out[f].append(value)
    for path in {p for ps in out.values() for p in ps}:
        if not Path(path).exists():
            raise UserError(f"--synthetic {path}: not found; write one with 'gan-aug synthesize' or use --train-gan")
    return out


# RunConfig fields ssl-seg sweep sets per run or by a flag of its own; each other field is a flag for every run
SWEEP_SETS = ("out", "data.data", "data.fractions", "data.labeled_fraction", "data.labeled_cases", "data.split_seed",
              "data.synthetic",
              "data.synthetic_ratio", "data.ratio_schedule", "data.ratio_end", "model.backbone", "method.name",
              "train.seed", "train.iterations", "train.device", "train.threads")


def add_sweep_args(p: argparse.ArgumentParser) -> None:
    """Flags of `ssl-seg sweep` / benchmarks/ratio_sweep.py: the grid's, then the run config's for every run."""
    p.add_argument("--data", default="phantom:cardiac", help="DATA (bare phantom:<task> gets the profile's size)")
    p.add_argument("--synthetic", action="append", default=[], help="SYN_DIR, or FRACTION=SYN_DIR (repeatable)")
    p.add_argument("--train-gan", action="store_true", help="train a generator per label fraction and synthesize")
    p.add_argument("--generator", default="pix2pix", help="--train-gan's generator: pix2pix | diffusion (the "
                   "ssl_seg.synthesizers entry points)")
    p.add_argument("--n-synthetic", type=int, default=None, help="pairs to synthesize per fraction (--train-gan)")
    p.add_argument("--mask-source", default="deform", help="masks of the synthesized pairs (--train-gan): deform | "
                   "mix | shape (from the labeled masks); phantom is an oracle (the test set's own generator)")
    p.add_argument("--ratios", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0],
                   help="shares of synthetic pairs in each labeled batch (0, real only, is always added)")
    names = registry_choices()
    p.add_argument("--schedules", nargs="+", default=["constant"], metavar="SCHEDULE",
                   help=f"ratio schedules to compare{one_of(names['data.ratio_schedule'])}")
    p.add_argument("--ratio-end", type=float, default=0.0, help="final ratio of non-constant schedules")
    p.add_argument("--fractions", nargs="+", type=float, default=[0.05, 0.1], help="labeled fractions")
    p.add_argument("--methods", nargs="+", default=["supervised"], metavar="METHOD",
                   help=f"methods to compare{one_of(names['method.name'])}")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds")
    p.add_argument("--split-seed", type=int, default=0, help="one split per fraction (the GAN sees its labels)")
    p.add_argument("--backbone", default="unet", help=f"backbone of every run{one_of(names['model.backbone'])}")
    p.add_argument("--profile", default="quick", help=" | ".join(PROFILES) + " (--train-gan: those with a GAN budget)")
    add_grid_flags(p)
    p.set_defaults(config_flags=add_run_flags(p, skip=SWEEP_SETS, notes=GRID_DEFAULTS))


def cmd_sweep(args: argparse.Namespace) -> None:
    """Run (this shard of) the ratio sweep, then write the summaries."""
    if 0.0 not in args.ratios:
        args.ratios = [0.0, *args.ratios]  # the real-only reference every gain is measured against
    base = base_config(args.data, profile(args.profile), args.device, args.iterations, given(args, args.config_flags))
    base.model.backbone = args.backbone
    base.data.split_seed = args.split_seed
    root = Path(args.out)
    synthetic = parse_synthetic(args.synthetic, args.fractions)
    if args.train_gan and not args.summary_only:
        planned = {f: dirs or [str(root / "synthetic" / label_key(f, None))] for f, dirs in synthetic.items()}
        check_grid(sweep_runs(base, planned, args.ratios, args.schedules, args.ratio_end, args.methods, args.seeds),
                   paths=False)  # every cell's settings are checked before the GANs train
        make = synthesizer(args.generator)
        for f, dirs in synthetic.items():
            if not dirs:
                dirs.append(str(make(SynthesisRequest(
                    base.data.data, f, args.split_seed, root / "synthetic" / label_key(f, None), args.profile,
                    args.device, n=args.n_synthetic, mask_source=args.mask_source,
                    spatial_dims=base.data.spatial_dims, group_by=base.data.split_group_by(),
                    split_file=base.data.split_file))))
    missing = [f for f, d in synthetic.items() if not d]
    if missing and any(r > 0 for r in args.ratios) and not args.summary_only:
        raise UserError(f"no synthetic data for fraction(s) {missing}: pass --synthetic or --train-gan")
    runs = sweep_runs(base, synthetic, args.ratios, args.schedules, args.ratio_end, args.methods, args.seeds)
    if not args.summary_only:
        run_grid(runs, root, args.shard, executor=build_executor(args, root), threads=args.threads)
    rows = write_sweep_summary(root, f"Real-vs-synthetic ratio sweep on {base.data.data} ({args.profile} profile)")
    log.info(f"{len(rows)} finished runs summarised in {root / 'summary.md'}")
