"""Figures of a grid (matplotlib, Agg): test Dice against labeled fraction, share of the label gap recovered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..io_utils import atomic_path
from .summary import gap_recovery_per_seed, group, label_order, mean_std


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
    frac_rows = [r for r in rows if r["fraction"] is not None]
    fig, ax, colors = new_figure((6.5, 4.2))
    for i, ((backbone, method), sub) in enumerate(sorted(group(frac_rows, ("backbone", "method")).items())):
        label = method if len({r["backbone"] for r in rows}) == 1 else f"{backbone} / {method}"
        error_points(ax, sub, "fraction", colors[i % len(colors)], "o", label)
    ax.set_xscale("log")
    save_dice_figure(fig, ax, "labeled fraction of training cases",
                     "bars: +-1 std over seeds (seed s = split s); hollow: n = 1", 8, path)


def plot_gap_recovery(rows: list[dict[str, Any]], path: Path) -> None:
    """Bars of gap recovered per method and label budget: mean over seeds, +-1 std bars (none for n = 1)."""
    fig, ax, _ = new_figure((6.5, 4.0))
    entries = []
    several = len({r["backbone"] for r in rows}) > 1
    for backbone in sorted({r["backbone"] for r in rows}):
        for (method, labels), values in sorted(gap_recovery_per_seed(rows, backbone).items(),
                                               key=lambda kv: (label_order(kv[0][1]), kv[0][0])):
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


def new_figure(size: tuple[float, float]):
    """(figure, axes, the colour cycle) of a new `size` inch figure, drawn off screen (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    return fig, ax, plt.rcParams["axes.prop_cycle"].by_key()["color"]


def save_dice_figure(fig, ax, xlabel: str, title: str, legend_size: int, path: Path) -> None:
    """Label a test-Dice plot (x label, small title, grid, legend) and save it to `path`."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test Dice (mean over foreground classes)")
    ax.set_title(title, fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    """Lay out, write `fig` to `path` as PNG (atomically) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
