"""Real-vs-synthetic ratio sweep: ratios x schedules x label fractions x methods x seeds, tables and a figure.

Synthetic data is just a paired dataset here. With --train-gan, a synthesizer found through the
`ssl_seg.synthesizers` entry-point group (gan_aug's pix2pix) trains a GAN on each fraction's labeled pairs
and writes the synthetic dataset; ssl_seg itself never imports gan_aug.
"""

from __future__ import annotations

import argparse
import copy
import logging
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .ablation import label_key
from .figures import error_points, new_figure, save_dice_figure
from .profiles import GRID_DEFAULTS, PROFILES, base_config, profile
from ..config import RunConfig
from ..errors import UserError
from ..flags import given, one_of
from .executors import add_grid_flags, build_executor
from .grid import GridRun, check_grid, collect, run_grid
from ..io_utils import atomic_write_text
from ..methods.registry import for_method
from ..run_flags import add_run_flags, registry_choices
from .stats import fmt_family_gain, fmt_mean_std, holm_gains
from .results import by_seed, choose_on_validation, paired
from .summary import group, mean_std, summary_rows
from .synthesis import SynthesisRequest, synthesizer
from .tables import write_csv

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


def is_real_only(schedule: str, ratio: float) -> bool:
    """Whether a (schedule, ratio) cell saw no synthetic pair: ratio 0 under the constant schedule."""
    return ratio == 0 and schedule == "constant"


def sweep_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per finished run."""
    rows = summary_rows(results)
    for row, r in zip(rows, results):
        row["realised_ratio"] = r.get("synthetic_ratio_mean")
    return rows


def paired_gains(rows: list[dict[str, Any]], method: str, labels: str, schedule: str, ratio: float,
                 key: str = "dice") -> dict[int, float]:
    """seed -> `key` at (`schedule`, `ratio`) minus the real-only run of the same seed (seeds with both only)."""
    base = by_seed(rows, key, where=lambda r: is_real_only(r["schedule"], r["ratio"]), method=method, labels=labels)
    this = by_seed(rows, key, method=method, labels=labels, schedule=schedule, ratio=ratio)
    return dict(zip(sorted(s for s in this if s in base), paired(this, base)))


def best_on_validation(rows: list[dict[str, Any]]) -> tuple[str, float] | None:
    """The (schedule, ratio) cell with the highest mean validation Dice (ties: real-only, then the smaller ratio)."""
    return choose_on_validation(rows, ("schedule", "ratio"), lambda k: (is_real_only(*k), -k[1]))


def reported_scores(rows: list[dict[str, Any]]) -> tuple[str, str, str]:
    """(Dice key, HD95 key, what they are): on slices of volumes the per-volume 3D scores, which validation selects
    on (in the slice mean an empty slice predicted empty counts as Dice 1), else the per-image ones."""
    if rows and all(r.get("vol_dice") is not None for r in rows):
        return "vol_dice", "vol_hd95", "Per-volume 3D Dice (slices stacked into their volumes; validation's score)"
    return "dice", "hd95", "Dice"


def as_reported(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of `rows` whose 'dice' / 'hd95' hold the reported scores of `reported_scores` (per volume on slices
    of volumes), for code that reads 'dice'."""
    dk, hk, _ = reported_scores(rows)
    return rows if dk == "dice" else [{**r, "dice": r[dk], "hd95": r[hk]} for r in rows]


def sweep_markdown(rows: list[dict[str, Any]], title: str) -> str:
    """Per (method, labels, schedule, ratio): validation and test Dice, the paired gain over real-only with its
    95 % interval; the cell chosen on validation in bold (it is reported on test, never chosen there)."""
    dk, hk, what = reported_scores(rows)
    lines = [f"# {title}", "", f"{len(rows)} finished runs. {what} is the mean over foreground classes; mean +- std "
             "over seeds when n >= 2, else the single value (n = 1). Ratio: the schedule's start. Gain = test Dice "
             "minus the real-only (constant ratio 0) run of the same seed, with its t-interval over seeds, "
             "Holm-adjusted over the comparisons of each table (benchmarks/PROTOCOL.md); p = Holm-adjusted paired "
             "t-test. Primary endpoint: the test Dice of the cell chosen on validation; the other rows are secondary. **Bold**: the cell with the best mean validation Dice per method and label budget "
             "(chosen on validation, reported on test).", ""]
    for (method, labels), sub in sorted(group(rows, ("method", "labels")).items()):
        cells = group(sub, ("schedule", "ratio"))
        chosen = best_on_validation(sub)
        gains = holm_gains({k: list(paired_gains(sub, method, labels, *k, dk).values()) for k in cells
                            if not is_real_only(*k)})
        lines += [f"## {method}, labels {labels}", "", "| schedule | ratio | realised | val Dice | test Dice | HD95 "
                  "| gain over real only | p | n |", "|---|---|---|---|---|---|---|---|---|"]
        for key in sorted(cells, key=lambda k: (not is_real_only(*k), k[0], k[1])):
            schedule, ratio = key
            cell = cells[key]
            dice = fmt_mean_std([r[dk] for r in cell], n_label=False)
            if key == chosen:
                dice = f"**{dice}**"
            realised = np.mean([r["realised_ratio"] or 0.0 for r in cell])
            if is_real_only(schedule, ratio):
                gain_txt, p_txt = "-", "-"
            else:
                g = gains[key]
                gain_txt, p_txt = fmt_family_gain(g), ("n/a" if not np.isfinite(g.p_holm) else f"{g.p_holm:.3f}")
            lines.append(f"| {schedule} | {ratio:g} | {realised:.3f} | "
                         f"{fmt_mean_std([r['val_dice'] for r in cell], n_label=False)} | {dice} | "
                         f"{fmt_mean_std([r[hk] for r in cell], n_label=False)} | {gain_txt} | {p_txt} | "
                         f"{len(cell)} |")
        if chosen is not None:
            lines += ["", f"Chosen on validation: {chosen[0]} schedule at ratio {chosen[1]:g}; its test Dice "
                      f"{fmt_mean_std([r[dk] for r in cells[chosen]])}.", ""]
    return "\n".join(lines)


def plot_dice_vs_ratio(rows: list[dict[str, Any]], path: Path,
                       extra: dict[str, list[dict[str, Any]]] | None = None) -> None:
    """Test Dice against constant synthetic ratio per (method, label fraction): mean with +-1 std bars over
    seeds (hollow markers: n = 1, no bar), the real-only run as a dashed reference line with its std band,
    and `extra` labelled point sets (e.g. an oracle row) in their own style."""
    dk = reported_scores(rows)[0]
    fig, ax, colors = new_figure((6.8, 4.4))
    constant = [r for r in rows if r["schedule"] == "constant"]
    series = sorted(group(constant, ("method", "labels")).items())
    for i, ((method, labels), sub) in enumerate(series):
        color = colors[i % len(colors)]
        error_points(ax, sub, "ratio", color, "o", f"{method}, {labels}", y=dk)
        m, s, n = mean_std([r[dk] for r in sub if r["ratio"] == 0])
        if n:
            ax.axhline(m, color=color, ls="--", lw=1, label=f"{method}, {labels}: real only (n = {n})")
            if n > 1:
                ax.axhspan(m - s, m + s, color=color, alpha=0.08)
    for j, (label, extra_rows) in enumerate((extra or {}).items()):
        error_points(ax, extra_rows, "ratio", colors[(len(series) + j) % len(colors)], "D", label, join=False,
                     y=reported_scores(extra_rows)[0])
    save_dice_figure(fig, ax, "share of synthetic pairs in each labeled batch",
                     "bars: +-1 std over seeds; hollow: n = 1", 7, path)


def write_sweep_summary(root: Path, title: str) -> list[dict[str, Any]]:
    """summary.csv, summary.md and dice_vs_ratio.png from every finished run under root."""
    rows = sweep_rows(collect(root))
    if rows:
        write_csv(rows, root / "summary.csv")
        atomic_write_text(root / "summary.md", sweep_markdown(rows, title))
        plot_dice_vs_ratio(rows, root / "dice_vs_ratio.png")
    return rows


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
    p.add_argument("--train-gan", action="store_true", help="train a GAN per label fraction and synthesize")
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
        make = synthesizer()
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
