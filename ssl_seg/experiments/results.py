"""Result rows of finished runs, and the few operations every table is made of: a score per seed, seed-paired
differences, means over seeds, choices made on validation, and which score is the primary endpoint. Rows are the
typed `ResultRow`s of `summary_rows` (method, labels, seed, dice, val_dice, ...); every table, sweep, study report and
benchmark reads them through these."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .summary import ResultRow, group, mean_std

Row = ResultRow


def score_key(rows: Iterable[Row]) -> str:
    """The primary endpoint's column (benchmarks/PROTOCOL.md): per-volume Dice of the checkpoint chosen on validation
    where the runs have volumes (validation chooses on it too), else the per-image Dice."""
    return "vol_dice" if any(r.get("vol_dice") is not None for r in rows) else "dice"


def by_seed(rows: Iterable[Row], key: str = "dice", where: Callable[[Row], bool] | None = None,
            **match: Any) -> dict[int, float]:
    """seed -> `key` of the rows whose fields equal `match` (and pass `where`); rows without a score are left out."""
    return {r["seed"]: r[key] for r in rows if all(r.get(k) == v for k, v in match.items())
            and (where is None or where(r)) and r.get(key) is not None}


def paired(a: dict[int, float], b: dict[int, float]) -> list[float]:
    """a - b for each seed both have, in seed order."""
    return [a[s] - b[s] for s in sorted(a) if s in b]


def wins(a: dict[int, float], b: dict[int, float]) -> tuple[int, int]:
    """(seeds where a > b, seeds both have)."""
    common = [s for s in a if s in b]
    return sum(a[s] > b[s] for s in common), len(common)


def validation_means(rows: Iterable[Row], keys: tuple[str, ...]) -> dict[tuple, float]:
    """Values of `keys` -> the mean validation Dice of their rows (cells without a finite mean left out)."""
    means = {k: mean_std([r["val_dice"] for r in v])[0] for k, v in group(list(rows), keys).items()}
    return {k: m for k, m in means.items() if np.isfinite(m)}


def choose_on_validation(rows: Iterable[Row], keys: tuple[str, ...],
                         tie_break: Callable[[tuple], Any] = lambda k: 0) -> tuple | None:
    """The cell (values of `keys`) with the highest mean validation Dice, ties by `tie_break`; never a test score."""
    means = validation_means(rows, keys)
    return max(means, key=lambda k: (means[k], tie_break(k))) if means else None
