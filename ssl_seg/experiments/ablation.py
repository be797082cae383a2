"""Low-label ablation: the grid of methods x label fractions (or labeled cases) x seeds x backbones, and
`ssl-seg ablate`, which runs it and writes its tables (tables.py) and figures (figures.py)."""

from __future__ import annotations

import argparse
import copy
import logging
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import UserError
from ..flags import given, one_of
from ..io_utils import atomic_write_text
from ..methods.registry import for_method
from ..run_flags import add_run_flags, registry_choices
from .executors import add_grid_flags, build_executor
from .figures import plot_dice_vs_labels, plot_gap_recovery
from .grid import GridRun, collect, run_grid
from .profiles import GRID_DEFAULTS, PROFILES, base_config, profile
from .summary import summary_rows
from .tables import summary_markdown, write_csv

log = logging.getLogger(__name__)


def label_key(fraction: float | None, cases: int | None) -> str:
    """'f0.05' or 'c3': the label budget in run names and tables."""
    return f"c{cases}" if cases is not None else f"f{fraction:g}"


def ablation_runs(base: RunConfig, methods: list[str], fractions: list[float], labeled_cases: list[int],
                  seeds: list[int], backbones: list[str], full_reference: bool = True,
                  warm_start: bool = False) -> list[GridRun]:
    """The grid; seed s also draws the split (split seed = s), so methods share labeled sets seed for seed.

    With `warm_start`, each method runs as METHOD+warm, started from the supervised cell of its backbone, label
    budget and seed (those cells lead the grid, and a warm cell trains its start first when it has not finished);
    supervised+warm is the start trained on for as many steps again, the same-budget control.
    """
    budgets: list[tuple[float | None, int | None]] = [(f, None) for f in fractions] + [(None, c) for c in labeled_cases]
    if not budgets:
        raise UserError("give --fractions or --labeled-cases")
    for f in fractions:
        if not 0 < f <= 1:
            raise UserError(f"--fractions {f}: each must be in (0, 1]")
    cold = ["supervised"] if warm_start else methods
    cells: list[tuple[str, float | None, int | None]] = [(m, f, c) for m in cold for f, c in budgets]
    if full_reference and (("supervised", 1.0, None) not in cells):
        cells.append(("supervised", 1.0, None))
    runs = [_cell(base, backbone, method, fraction, cases, seed)
            for backbone in backbones for method, fraction, cases in cells for seed in seeds]
    if warm_start:
        starts = {(r.tags["backbone"], r.tags["labels"], r.tags["seed"]): r for r in runs}
        runs += [_cell(base, backbone, method, fraction, cases, seed,
                       starts[backbone, label_key(fraction, cases), seed])
                 for backbone in backbones for method in methods for fraction, cases in budgets for seed in seeds]
    return runs


def _cell(base: RunConfig, backbone: str, method: str, fraction: float | None, cases: int | None, seed: int,
          start: GridRun | None = None) -> GridRun:
    """One grid cell; with `start`, warm-started from that cell (its name says METHOD+warm)."""
    cfg = copy.deepcopy(base)
    cfg.model.backbone, cfg.method = backbone, for_method(cfg.method, method)
    cfg.data.labeled_fraction, cfg.data.labeled_cases = fraction, cases
    cfg.train.seed = cfg.data.split_seed = seed
    shown = f"{method}+warm" if start is not None else method
    key = label_key(fraction, cases)
    return GridRun(f"{backbone}__{shown}__{key}__s{seed}", cfg,
                   {"backbone": backbone, "method": shown, "labels": key, "fraction": fraction, "cases": cases,
                    "seed": seed}, start)


def write_summary(root: Path, title: str) -> list[dict[str, Any]]:
    """summary.csv, summary.md, dice_vs_labels.png and gap_recovery.png from every finished run under root."""
    rows = summary_rows(collect(root))
    if not rows:
        return rows
    write_csv(rows, root / "summary.csv")
    atomic_write_text(root / "summary.md", summary_markdown(rows, title))
    plot_dice_vs_labels(rows, root / "dice_vs_labels.png")
    plot_gap_recovery(rows, root / "gap_recovery.png")
    return rows


# ---------------------------------------------------------------- command line


# RunConfig fields ssl-seg ablate sets per run or by a flag of its own; each other field is a flag for every run
ABLATE_SETS = ("out", "data.data", "data.fractions", "data.labeled_fraction", "data.labeled_cases", "data.split_seed",
               "model.backbone", "method.name", "train.seed", "train.iterations", "train.device", "train.threads")


def add_ablate_args(p: argparse.ArgumentParser) -> None:
    """Flags of `ssl-seg ablate` / benchmarks/low_label.py: the grid's, then the run config's for every run."""
    p.add_argument("--data", default="phantom:cardiac", help="DATA (bare phantom:<task> gets the profile's size)")
    names = registry_choices()
    p.add_argument("--methods", nargs="+", default=["supervised", "mean-teacher", "pseudo-label", "cps", "unimatch"],
                   metavar="METHOD", help=f"methods to compare{one_of(names['method.name'])}")
    p.add_argument("--fractions", nargs="*", type=float, default=None, help="labeled fractions (default 0.05 0.1)")
    p.add_argument("--labeled-cases", nargs="*", type=int, default=[], help="labeled case counts, e.g. 1 3 7")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2],
                   help="training seeds; seed s also draws split s, so methods share labeled sets seed for seed")
    p.add_argument("--backbones", nargs="+", default=["unet"], metavar="BACKBONE",
                   help=f"backbones to compare{one_of(names['model.backbone'])}")
    p.add_argument("--profile", default="quick", help=" | ".join(PROFILES))
    p.add_argument("--no-full-reference", action="store_true", help="skip the 100 % labels supervised runs")
    p.add_argument("--warm-start", action="store_true",
                   help="run each method as METHOD+warm, started (--init-from) from the supervised run of its "
                        "backbone, label budget and seed (run first); supervised+warm is that run trained on as long "
                        "again. Cold-started cells come from the same grid without this flag")
    add_grid_flags(p)
    p.set_defaults(config_flags=add_run_flags(p, skip=ABLATE_SETS, notes=GRID_DEFAULTS))


def cmd_ablate(args: argparse.Namespace) -> None:
    """Run (this shard of) the ablation grid, then write the summaries from all finished runs."""
    base = base_config(args.data, profile(args.profile), args.device, args.iterations, given(args, args.config_flags))
    fractions = args.fractions if args.fractions is not None else ([] if args.labeled_cases else [0.05, 0.1])
    runs = ablation_runs(base, args.methods, fractions, args.labeled_cases, args.seeds, args.backbones,
                         full_reference=not args.no_full_reference, warm_start=args.warm_start)
    root = Path(args.out)
    if not args.summary_only:
        run_grid(runs, root, args.shard, executor=build_executor(args, root), threads=args.threads)
    rows = write_summary(root, f"Low-label ablation on {base.data.data} ({args.profile} profile)")
    log.info(f"{len(rows)} finished runs summarised in {root / 'summary.md'}")
