"""Low-label ablation: methods x label fractions (or labeled cases) x seeds x backbones, tables and figures."""

from __future__ import annotations

import argparse
import copy
import csv
import io
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RunConfig, add_run_flags
from ..errors import UserError
from ..flags import apply, given
from .executors import add_executor_flags, add_threads_flag, build_executor
from .grid import GridRun, collect, run_grid
from .profiles import GRID_DEFAULTS, PROFILES, base_config, profile
from ..io_utils import atomic_path, atomic_write_text
from .stats import decimals_for, fmt_gain


def label_key(fraction: float | None, cases: int | None) -> str:
    """'f0.05' or 'c3': the label budget in run names and tables."""
    return f"c{cases}" if cases is not None else f"f{fraction:g}"


def ablation_runs(base: RunConfig, methods: list[str], fractions: list[float], labeled_cases: list[int],
                  seeds: list[int], backbones: list[str], full_reference: bool = True) -> list[GridRun]:
    """The grid; seed s also draws the split (split seed = s), so methods share labeled sets seed for seed."""
    budgets: list[tuple[float | None, int | None]] = [(f, None) for f in fractions] + [(None, c) for c in labeled_cases]
    if not budgets:
        raise UserError("give --fractions or --labeled-cases")
    for f in fractions:
        if not 0 < f <= 1:
            raise UserError(f"--fractions {f}: each must be in (0, 1]")
    cells: list[tuple[str, float | None, int | None]] = [(m, f, c) for m in methods for f, c in budgets]
    if full_reference and (("supervised", 1.0, None) not in cells):
        cells.append(("supervised", 1.0, None))
    runs = []
    for backbone in backbones:
        for method, fraction, cases in cells:
            for seed in seeds:
                cfg = copy.deepcopy(base)
                cfg.model.backbone, cfg.method.name = backbone, method
                cfg.data.labeled_fraction, cfg.data.labeled_cases = fraction, cases
                cfg.train.seed = cfg.data.split_seed = seed
                key = label_key(fraction, cases)
                name = f"{backbone}__{method}__{key}__s{seed}"
                runs.append(GridRun(name, cfg, {"backbone": backbone, "method": method, "labels": key,
                                                "fraction": fraction, "cases": cases, "seed": seed}))
    return runs


# ---------------------------------------------------------------- summaries


def summary_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per run (what summary.csv holds)."""
    rows = []
    for r in results:
        t = r["tags"]
        rows.append({"name": r["name"], "backbone": t["backbone"], "method": t["method"], "labels": t["labels"],
                     "fraction": t["fraction"], "cases": t["cases"], "seed": t["seed"],
                     "n_labeled": r["n_labeled"], "dice": r["test"]["dice"], "hd95": r["test"]["hd95"],
                     "iou": r["test"]["iou"], "asd": r["test"]["asd"], **_extra_scores(r), "val_dice": r["val_dice"],
                     "best_step": r.get("best_step"),
                     "best_model": r["best_model"], "iterations": r["iterations"],
                     "s_per_iteration": r["s_per_iteration"], "wall_time_s": r["wall_time_s"],
                     **{k: v for k, v in t.items() if k not in ("backbone", "method", "labels", "fraction",
                                                                "cases", "seed")}})
    return rows


def _extra_scores(result: dict[str, Any]) -> dict[str, Any]:
    """Per-volume (vol_*), post-processed (*_pp) and last-checkpoint (*_last) test scores, where present."""
    out: dict[str, Any] = {}
    for suffix, key in (("", "test"), ("_last", "test_last")):
        test = result.get(key)
        if test is None:
            continue
        for pp, scores in (("", test), ("_pp", test.get("postprocessed"))):
            if scores is None:
                continue
            if suffix or pp:
                out.update({f"dice{pp}{suffix}": scores["dice"], f"hd95{pp}{suffix}": scores["hd95"]})
            if "volume" in scores:
                out.update({f"vol_dice{pp}{suffix}": scores["volume"]["dice"],
                            f"vol_hd95{pp}{suffix}": scores["volume"]["hd95"]})
    return out


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """rows -> CSV (atomic)."""
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _label_order(key: str) -> tuple[int, float]:
    return (0, float(key[1:])) if key.startswith("f") else (1, float(key[1:]))


def group(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple, list[dict[str, Any]]]:
    """Rows grouped by the values of `keys`."""
    out: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        out[tuple(row[k] for k in keys)].append(row)
    return out


def mean_std(values: list[float | None]) -> tuple[float, float, int]:
    """(mean, sample std, n) over the defined values (NaN when none)."""
    v = np.array([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def paired_wins(rows: list[dict[str, Any]], method: str, backbone: str, labels: str,
                key: str = "dice") -> tuple[int, int]:
    """(seeds where `method` beats supervised on the same labeled set, seeds compared), on score `key`."""
    by_seed = {r["seed"]: r.get(key) for r in rows if r["method"] == method and r["backbone"] == backbone
               and r["labels"] == labels}
    sup = {r["seed"]: r.get(key) for r in rows if r["method"] == "supervised" and r["backbone"] == backbone
           and r["labels"] == labels}
    common = [s for s in by_seed if s in sup and by_seed[s] is not None and sup[s] is not None]
    return sum(by_seed[s] > sup[s] for s in common), len(common)


def paired_diffs(rows: list[dict[str, Any]], method: str, backbone: str, labels: str,
                 key: str = "dice") -> list[float]:
    """Per-seed `key` of `method` minus supervised on the same labeled set (seeds with both only)."""
    this = {r["seed"]: r.get(key) for r in rows if (r["method"], r["backbone"], r["labels"]) == (method, backbone,
                                                                                              labels)}
    sup = {r["seed"]: r.get(key) for r in rows if (r["method"], r["backbone"], r["labels"]) == ("supervised",
                                                                                             backbone, labels)}
    return [this[s] - sup[s] for s in sorted(this) if s in sup and this[s] is not None and sup[s] is not None]


def gap_recovery(rows: list[dict[str, Any]], backbone: str, key: str = "dice") -> dict[tuple[str, str], float]:
    """(method, labels) -> (SSL - supervised) / (full-label supervised - supervised), from seed means of `key`."""
    full = mean_std([r.get(key) for r in rows if r["backbone"] == backbone and r["method"] == "supervised"
                     and r["labels"] == "f1"])[0]
    means = {k: mean_std([r.get(key) for r in v])[0] for k, v in group(
        [r for r in rows if r["backbone"] == backbone], ("method", "labels")).items()}
    out = {}
    for (method, labels), m in means.items():
        sup = means.get(("supervised", labels))
        if method == "supervised" or sup is None or labels == "f1" or not np.isfinite(full) or full - sup <= 0:
            continue
        out[(method, labels)] = (m - sup) / (full - sup)
    return out


SCORE_TABLES = tuple((f"{v}dice{pp}{c}", f"{v}hd95{pp}{c}", f"{vn}, {cn} checkpoint{ppn}")
                     for v, vn in (("", "slice/case means"), ("vol_", "per volume (3D)"))
                     for pp, ppn in (("", ""), ("_pp", ", largest-component post-processing chosen on validation"))
                     for c, cn in (("", "best-on-validation"), ("_last", "last")))


def summary_markdown(rows: list[dict[str, Any]], title: str) -> str:
    """Mean +- std over seeds per backbone x method x label budget; the best Dice (and HD95) per budget in bold.

    One table per score the runs have: case means and, for volumetric data, per-volume scores, each for the
    best-on-validation and the last checkpoint.
    """
    lines = [f"# {title}", "", f"{len(rows)} finished runs. Test split; Dice and HD95 are means over foreground "
             "classes, then mean +- std over seeds (std shown only for n >= 2). **Bold**: best per backbone and "
             "label budget.", ""]
    for dice_key, hd_key, heading in SCORE_TABLES:
        if any(r.get(dice_key) is not None for r in rows):
            lines += [f"## {heading}", ""] + _score_tables(rows, dice_key, hd_key)
    lines += ["Labels: `fX` = labeled fraction X of the training cases, `cN` = N labeled cases. "
              "Gap recovered = (method - supervised) / (full-label supervised - supervised) at the same label "
              "budget, from seed means.", ""]
    return "\n".join(lines)


def _fmt_stat(mean: float, std: float, n: int, digits: int) -> str:
    """'m +- s (n)' for n >= 2 with decimals matching the std, 'm (n=1)' (`digits` decimals) for one run."""
    if n == 0 or not np.isfinite(mean):
        return "n/a"
    if n == 1:
        return f"{mean:.{digits}f} (n=1)"
    d = decimals_for(std)
    return f"{mean:.{d}f} +- {std:.{d}f} (n={n})"


def _score_tables(rows: list[dict[str, Any]], dice_key: str, hd_key: str) -> list[str]:
    """The method x label-budget table of one (Dice, HD95) score pair, per backbone."""
    lines = []
    for backbone in sorted({r["backbone"] for r in rows}):
        sub = [r for r in rows if r["backbone"] == backbone]
        cells = group(sub, ("method", "labels"))
        stats = {k: (mean_std([r.get(dice_key) for r in v]), mean_std([r.get(hd_key) for r in v]))
                 for k, v in cells.items()}
        best_dice = {lab: max(((s[0][0], m) for (m, l2), s in stats.items() if l2 == lab), default=(None, None))
                     for lab in {k[1] for k in stats}}
        best_hd = {lab: min(((s[1][0], m) for (m, l2), s in stats.items() if l2 == lab and np.isfinite(s[1][0])),
                            default=(None, None)) for lab in {k[1] for k in stats}}
        recovery = gap_recovery(sub, backbone, dice_key)
        lines += [f"### {backbone}", "", "| method | labels | n labeled | Dice | HD95 | beats supervised (seeds) "
                  "| paired gain, 95 % CI | gap recovered | s / iter |", "|---|---|---|---|---|---|---|---|---|"]
        for (method, labels) in sorted(cells, key=lambda k: (_label_order(k[1]), k[0] != "supervised", k[0])):
            (dm, ds, n), (hm, hs, hn) = stats[(method, labels)]
            dice = _fmt_stat(dm, ds, n, 4)
            hd = _fmt_stat(hm, hs, hn, 2)
            if best_dice[labels][1] == method:
                dice = f"**{dice}**"
            if best_hd[labels][1] == method:
                hd = f"**{hd}**"
            wins, compared = paired_wins(sub, method, backbone, labels, dice_key)
            beats = "-" if method == "supervised" else f"{wins}/{compared}"
            gain = "-" if method == "supervised" else fmt_gain(paired_diffs(sub, method, backbone, labels, dice_key))
            rec = recovery.get((method, labels))
            speed = float(np.mean([r["s_per_iteration"] for r in cells[(method, labels)]]))
            n_lab = int(np.mean([r["n_labeled"] for r in cells[(method, labels)]]))
            lines.append(f"| {method} | {labels} | {n_lab} | {dice} | {hd} | {beats} | {gain} | "
                         f"{'-' if rec is None else f'{rec:.0%}'} | {speed:.3f} |")
        lines.append("")
    return lines


def error_points(ax, rows: list[dict[str, Any]], x: str, color: str, marker: str, label: str,
                 join: bool = True, y: str = "dice") -> None:
    """Mean `y` per value of `x` with +-1 std bars over seeds (n >= 2) or a hollow marker (n = 1); n in the label."""
    by_x = group([r for r in rows if r[x] is not None], (x,))
    xs = sorted(v for (v,) in by_x)
    st = [mean_std([r[y] for r in by_x[(v,)]]) for v in xs]
    m, s, n = np.array([t[0] for t in st]), np.array([t[1] for t in st]), [t[2] for t in st]
    if join and len(xs) > 1:
        ax.plot(xs, m, color=color, lw=1, alpha=0.6)
    ns = sorted(set(n))
    label = f"{label} (n = {ns[0]})" if len(ns) == 1 else f"{label} (n = {ns[0]}-{ns[-1]})"
    for k, (xv, mk, sk, nk) in enumerate(zip(xs, m, s, n)):
        ax.errorbar([xv], [mk], yerr=[sk] if nk > 1 else None, fmt=marker, color=color, capsize=3,
                    mfc=color if nk > 1 else "white", label=label if k == 0 else None)


def plot_dice_vs_labels(rows: list[dict[str, Any]], path: Path) -> None:
    """Test Dice against label fraction, one series per (backbone, method): +-1 std bars over seeds, hollow n = 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frac_rows = [r for r in rows if r["fraction"] is not None]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, ((backbone, method), sub) in enumerate(sorted(group(frac_rows, ("backbone", "method")).items())):
        label = method if len({r["backbone"] for r in rows}) == 1 else f"{backbone} / {method}"
        error_points(ax, sub, "fraction", colors[i % len(colors)], "o", label)
    ax.set_xscale("log")
    ax.set_xlabel("labeled fraction of training cases")
    ax.set_ylabel("test Dice (mean over foreground classes)")
    ax.set_title("bars: +-1 std over seeds (seed s = split s); hollow: n = 1", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


def gap_recovery_per_seed(rows: list[dict[str, Any]], backbone: str) -> dict[tuple[str, str], list[float]]:
    """(method, labels) -> per seed (SSL - supervised of that seed) / (full-label mean - supervised mean)."""
    full = mean_std([r["dice"] for r in rows if r["backbone"] == backbone and r["method"] == "supervised"
                     and r["labels"] == "f1"])[0]
    sub = [r for r in rows if r["backbone"] == backbone and r["dice"] is not None]
    out = {}
    for (method, labels), cell in group(sub, ("method", "labels")).items():
        sup = {r["seed"]: r["dice"] for r in sub if r["method"] == "supervised" and r["labels"] == labels}
        gap = full - mean_std(list(sup.values()))[0]
        if method == "supervised" or labels == "f1" or not np.isfinite(gap) or gap <= 0:
            continue
        values = [(r["dice"] - sup[r["seed"]]) / gap for r in cell if r["seed"] in sup]
        if values:
            out[(method, labels)] = values
    return out


def plot_gap_recovery(rows: list[dict[str, Any]], path: Path) -> None:
    """Bars of gap recovered per method and label budget: mean over seeds, +-1 std bars (none for n = 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    entries = []
    several = len({r["backbone"] for r in rows}) > 1
    for backbone in sorted({r["backbone"] for r in rows}):
        for (method, labels), values in sorted(gap_recovery_per_seed(rows, backbone).items(),
                                               key=lambda kv: (_label_order(kv[0][1]), kv[0][0])):
            name = f"{backbone}\n{method}\n{labels}" if several else f"{method}\n{labels}"
            entries.append((f"{name}\nn = {len(values)}", mean_std(values)))
    if entries:
        means, stds = [e[1][0] for e in entries], [e[1][1] if e[1][2] > 1 else 0.0 for e in entries]
        ax.bar(range(len(entries)), means, yerr=stds, capsize=4, color="tab:blue")
        ax.set_xticks(range(len(entries)), [n for n, _ in entries], fontsize=7, rotation=45, ha="right")
    ax.axhline(0, color="black", lw=0.8)
    ax.axhline(1, color="gray", lw=0.8, ls="--")
    ax.set_ylabel("gap recovered: (SSL - sup) / (full - sup)")
    ax.set_title("share of the supervised label gap recovered (bars: +-1 std over seeds)", fontsize=9)
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


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
    p.add_argument("--methods", nargs="+", default=["supervised", "mean-teacher", "pseudo-label", "cps", "unimatch"])
    p.add_argument("--fractions", nargs="*", type=float, default=None, help="labeled fractions (default 0.05 0.1)")
    p.add_argument("--labeled-cases", nargs="*", type=int, default=[], help="labeled case counts, e.g. 1 3 7")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--backbones", nargs="+", default=["unet"])
    p.add_argument("--profile", default="quick", help=" | ".join(PROFILES))
    p.add_argument("--iterations", type=int, help="override the profile's iterations")
    p.add_argument("--no-full-reference", action="store_true", help="skip the 100 %% labels supervised runs")
    p.add_argument("--shard", help="i/N: run every N-th run starting at i (spread a grid over machines)")
    add_executor_flags(p)
    add_threads_flag(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="grid directory (runs/, summary.*)")
    p.add_argument("--summary-only", action="store_true", help="only rebuild the tables and figures")
    p.set_defaults(config_flags=add_run_flags(p, skip=ABLATE_SETS, notes=GRID_DEFAULTS))


def cmd_ablate(args: argparse.Namespace) -> None:
    """Run (this shard of) the ablation grid, then write the summaries from all finished runs."""
    base = base_config(args.data, profile(args.profile), args.device, args.iterations)
    apply(base, given(args, args.config_flags))
    fractions = args.fractions if args.fractions is not None else ([] if args.labeled_cases else [0.05, 0.1])
    runs = ablation_runs(base, args.methods, fractions, args.labeled_cases, args.seeds, args.backbones,
                         full_reference=not args.no_full_reference)
    root = Path(args.out)
    if not args.summary_only:
        run_grid(runs, root, args.shard, executor=build_executor(args, root), threads=args.threads)
    rows = write_summary(root, f"Low-label ablation on {base.data.data} ({args.profile} profile)")
    print(f"{len(rows)} finished runs summarised in {root / 'summary.md'}")
