"""Real-vs-synthetic ratio sweep: ratios x schedules x label fractions x methods x seeds, tables and a figure.

Synthetic data is just a paired dataset here. With --train-gan, a synthesizer found through the
`ssl_seg.synthesizers` entry-point group (gan_aug's pix2pix) trains a GAN on each fraction's labeled pairs
and writes the synthetic dataset; ssl_seg itself never imports gan_aug.
"""

from __future__ import annotations

import argparse
import copy
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy import stats

from .ablation import save_figure, base_config, group, label_key, mean_std, profile, write_csv
from .config import RunConfig
from .errors import UserError
from .grid import GridRun, collect, run_grid
from .io_utils import atomic_write_text


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
                        cfg.method.name = method
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
    from .ablation import summary_rows

    rows = summary_rows(results)
    for row, r in zip(rows, results):
        row["realised_ratio"] = r.get("synthetic_ratio_mean")
    return rows


def gain_over_real(rows: list[dict[str, Any]], method: str, labels: str, schedule: str,
                   ratio: float) -> tuple[float, float, float, int]:
    """(mean gain, std, paired t-test p, n seeds) of Dice at (`schedule`, `ratio`) over real-only, paired by seed."""
    base = {r["seed"]: r["dice"] for r in rows if r["method"] == method and r["labels"] == labels
            and is_real_only(r["schedule"], r["ratio"])}
    this = {r["seed"]: r["dice"] for r in rows if r["method"] == method and r["labels"] == labels
            and r["schedule"] == schedule and r["ratio"] == ratio}
    seeds = sorted(s for s in this if s in base and this[s] is not None and base[s] is not None)
    diffs = np.array([this[s] - base[s] for s in seeds])
    if diffs.size == 0:
        return float("nan"), float("nan"), float("nan"), 0
    p = float(stats.ttest_rel([this[s] for s in seeds], [base[s] for s in seeds]).pvalue) if diffs.size > 1 \
        and np.ptp(diffs) > 0 else float("nan")
    return float(diffs.mean()), float(diffs.std(ddof=1)) if diffs.size > 1 else 0.0, p, int(diffs.size)


def sweep_markdown(rows: list[dict[str, Any]], title: str) -> str:
    """Mean +- std per (method, labels, schedule, ratio), best ratio per label budget in bold, paired gains."""
    lines = [f"# {title}", "", f"{len(rows)} finished runs; test Dice (mean over foreground classes), mean +- std "
             "over seeds. Ratio: the schedule's start. Gain = Dice minus the real-only (constant ratio 0) run of "
             "the same seed; p = paired t-test across seeds. **Bold**: best ratio per method and label budget.", ""]
    for (method, labels), sub in sorted(group(rows, ("method", "labels")).items()):
        cells = group(sub, ("schedule", "ratio"))
        means = {k: mean_std([r["dice"] for r in v]) for k, v in cells.items()}
        best = max(means, key=lambda k: means[k][0] if np.isfinite(means[k][0]) else -1)
        lines += [f"## {method}, labels {labels}", "", "| schedule | ratio | realised | Dice | HD95 | gain over "
                  "real only | p | seeds |", "|---|---|---|---|---|---|---|---|"]
        for key in sorted(cells, key=lambda k: (not is_real_only(*k), k[0], k[1])):
            schedule, ratio = key
            m, s, n = means[key]
            hm, hs, _ = mean_std([r["hd95"] for r in cells[key]])
            dice = f"{m:.4f} +- {s:.4f}"
            if key == best:
                dice = f"**{dice}**"
            realised = np.mean([r["realised_ratio"] or 0.0 for r in cells[key]])
            if is_real_only(schedule, ratio):
                gain_txt, p_txt = "-", "-"
            else:
                g, gs, p, _ = gain_over_real(sub, method, labels, schedule, ratio)
                gain_txt, p_txt = f"{g:+.4f} +- {gs:.4f}", ("n/a" if not np.isfinite(p) else f"{p:.3f}")
            hd = f"{hm:.2f}" if np.isfinite(hm) else "n/a"
            lines.append(f"| {schedule} | {ratio:g} | {realised:.3f} | {dice} | {hd} | {gain_txt} | {p_txt} | {n} |")
        lines += ["", f"Best: {best[0]} schedule at ratio {best[1]:g} ({means[best][0]:.4f}).", ""]
    return "\n".join(lines)


def plot_dice_vs_ratio(rows: list[dict[str, Any]], path: Path) -> None:
    """Dice against constant synthetic ratio, one line per (method, label fraction), band = +-1 std."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    constant = [r for r in rows if r["schedule"] == "constant"]
    for (method, labels), sub in sorted(group(constant, ("method", "labels")).items()):
        by_r = group(sub, ("ratio",))
        rs = sorted(r for (r,) in by_r)
        st = [mean_std([x["dice"] for x in by_r[(r,)]]) for r in rs]
        m, s = np.array([x[0] for x in st]), np.array([x[1] for x in st])
        ax.plot(rs, m, marker="o", label=f"{method}, {labels}")
        ax.fill_between(rs, m - s, m + s, alpha=0.15)
    ax.set_xlabel("share of synthetic pairs in each labeled batch")
    ax.set_ylabel("test Dice (mean over foreground classes)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def write_sweep_summary(root: Path, title: str) -> list[dict[str, Any]]:
    """summary.csv, summary.md and dice_vs_ratio.png from every finished run under root."""
    rows = sweep_rows(collect(root))
    if rows:
        write_csv(rows, root / "summary.csv")
        atomic_write_text(root / "summary.md", sweep_markdown(rows, title))
        plot_dice_vs_ratio(rows, root / "dice_vs_ratio.png")
    return rows


def synthesizer(name: str = "pix2pix") -> Callable[..., Path]:
    """The synthesizer registered under `name` in the `ssl_seg.synthesizers` entry-point group."""
    found = {e.name: e for e in entry_points(group="ssl_seg.synthesizers")}
    if name not in found:
        raise UserError(f"--train-gan needs a synthesizer '{name}'; installed: {sorted(found) or 'none'} "
                        "(install medseg-lab with its gan_aug package: pip install -e .)")
    return found[name].load()


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


def add_sweep_args(p: argparse.ArgumentParser) -> None:
    """Flags of `ssl-seg sweep` / benchmarks/ratio_sweep.py."""
    p.add_argument("--data", default="phantom:cardiac")
    p.add_argument("--synthetic", action="append", default=[], help="SYN_DIR, or FRACTION=SYN_DIR (repeatable)")
    p.add_argument("--train-gan", action="store_true", help="train a GAN per label fraction and synthesize")
    p.add_argument("--n-synthetic", type=int, default=None, help="pairs to synthesize per fraction (--train-gan)")
    p.add_argument("--mask-source", default="deform", help="masks of the synthesized pairs (--train-gan): deform | "
                   "mix (from the labeled masks); phantom is an oracle (the test set's own generator)")
    p.add_argument("--ratios", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--schedules", nargs="+", default=["constant"], help="constant linear cosine step warmup")
    p.add_argument("--ratio-end", type=float, default=0.0, help="final ratio of non-constant schedules")
    p.add_argument("--fractions", nargs="+", type=float, default=[0.05, 0.1])
    p.add_argument("--methods", nargs="+", default=["supervised"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--split-seed", type=int, default=0, help="one split per fraction (the GAN sees its labels)")
    p.add_argument("--backbone", default="unet")
    p.add_argument("--profile", default="quick", help="tiny | quick | standard")
    p.add_argument("--iterations", type=int)
    p.add_argument("--shard")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)
    p.add_argument("--summary-only", action="store_true")


def cmd_sweep(args: argparse.Namespace) -> None:
    """Run (this shard of) the ratio sweep, then write the summaries."""
    if 0.0 not in args.ratios:
        args.ratios = [0.0, *args.ratios]  # the real-only reference every gain is measured against
    prof = profile(args.profile)
    base = base_config(args.data, prof, args.device)
    base.model.backbone = args.backbone
    base.data.split_seed = args.split_seed
    if args.iterations is not None:
        base.train.iterations = base.train.image_every = args.iterations
        base.train.val_every = min(base.train.val_every, args.iterations)
    root = Path(args.out)
    synthetic = parse_synthetic(args.synthetic, args.fractions)
    if args.train_gan and not args.summary_only:
        make = synthesizer()
        for f, dirs in synthetic.items():
            if not dirs:
                dirs.append(str(make(data=base.data.data, labeled_fraction=f, split_seed=args.split_seed,
                                     out_dir=root / "synthetic" / label_key(f, None), profile=args.profile,
                                     device=args.device, n=args.n_synthetic, mask_source=args.mask_source)))
    missing = [f for f, d in synthetic.items() if not d]
    if missing and any(r > 0 for r in args.ratios) and not args.summary_only:
        raise UserError(f"no synthetic data for fraction(s) {missing}: pass --synthetic or --train-gan")
    runs = sweep_runs(base, synthetic, args.ratios, args.schedules, args.ratio_end, args.methods, args.seeds)
    if not args.summary_only:
        run_grid(runs, root, args.shard)
    rows = write_sweep_summary(root, f"Real-vs-synthetic ratio sweep on {base.data.data} ({args.profile} profile)")
    print(f"{len(rows)} finished runs summarised in {root / 'summary.md'}")
