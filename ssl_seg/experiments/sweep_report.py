"""Ratio-sweep results: flat rows, paired gains over real only, the cell chosen on validation, the Markdown table and
the Dice-vs-ratio figure (`summary.md`, `summary.csv`, `dice_vs_ratio.png`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..io_utils import atomic_write_text
from .figures import error_points, new_figure, save_dice_figure
from .grid import collect
from .results import by_seed, choose_on_validation, paired, score_key
from .stats import fmt_family_gain, fmt_mean_std, holm_gains
from .summary import group, mean_std, summary_rows
from .tables import write_csv


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
    if score_key(rows) == "vol_dice":
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
