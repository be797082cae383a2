"""Tables of a grid: summary.csv (one row per run) and summary.md (mean +- std over seeds per cell, paired gains)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from ..io_utils import atomic_write_text
from .stats import decimals_for, fmt_family
from .results import by_seed, paired, score_key, wins
from .summary import gap_recovery, group, label_order, mean_std


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """rows -> CSV (atomic)."""
    buf = io.StringIO()
    fields = list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


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
    primary = score_key(rows)
    for dice_key, hd_key, heading in SCORE_TABLES:
        if any(r.get(dice_key) is not None for r in rows):
            role = "primary endpoint" if dice_key == primary else "secondary: no claim rests on it"
            lines += [f"## {heading} ({role})", ""] + _score_tables(rows, dice_key, hd_key)
    lines += ["Labels: `fX` = labeled fraction X of the training cases, `cN` = N labeled cases. "
              "Gap recovered = (method - supervised) / (full-label supervised - supervised) at the same label "
              "budget, from seed means. Paired gains: t-intervals Holm-adjusted over the comparisons of each table "
              "(m), with the exact sign-flip p beside them (benchmarks/PROTOCOL.md).", ""]
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
        scores = {k: by_seed(v, dice_key) for k, v in cells.items()}
        supervised = {lab: scores.get(("supervised", lab), {}) for _, lab in cells}
        gains = fmt_family({(m, lab): paired(scores[m, lab], supervised[lab]) for m, lab in cells
                            if m != "supervised"})
        lines += [f"### {backbone}", "", "| method | labels | n labeled | Dice | HD95 | beats supervised (seeds) "
                  "| paired gain, Holm-adjusted CI | gap recovered | s / iter |", "|---|---|---|---|---|---|---|---|---|"]
        for (method, labels) in sorted(cells, key=lambda k: (label_order(k[1]), k[0] != "supervised", k[0])):
            (dm, ds, n), (hm, hs, hn) = stats[(method, labels)]
            dice = _fmt_stat(dm, ds, n, 4)
            hd = _fmt_stat(hm, hs, hn, 2)
            if best_dice[labels][1] == method:
                dice = f"**{dice}**"
            if best_hd[labels][1] == method:
                hd = f"**{hd}**"
            won, compared = wins(scores[method, labels], supervised[labels])
            beats = "-" if method == "supervised" else f"{won}/{compared}"
            gain = gains.get((method, labels), "-")
            rec = recovery.get((method, labels))
            speed = float(np.mean([r["s_per_iteration"] for r in cells[(method, labels)]]))
            n_lab = int(np.mean([r["n_labeled"] for r in cells[(method, labels)]]))
            lines.append(f"| {method} | {labels} | {n_lab} | {dice} | {hd} | {beats} | {gain} | "
                         f"{'-' if rec is None else f'{rec:.0%}'} | {speed:.3f} |")
        lines.append("")
    return lines
