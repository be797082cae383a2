"""Numbers with their uncertainty, written for a person: n per cell, spread-matched decimals, 95 % intervals.

Rules every table, figure caption and finding follows: mean +- std only when n >= 2, otherwise "n = 1";
the decimals follow the spread (two significant digits of the std); a gain carries a 95 % interval
(Student t over paired differences) and is "not established" when that interval includes 0 or cannot
be computed (n < 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np
from scipy import stats as scipy_stats

SINGLE_DECIMALS = 3  # a single value has no spread to match: Dice to 3 decimals


@dataclass(frozen=True)
class Interval:
    """Mean of paired differences with its 95 % t-interval (lo/hi NaN when n < 2)."""

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def established(self) -> bool:
        """Whether the interval excludes 0."""
        return self.n >= 2 and math.isfinite(self.lo) and (self.lo > 0 or self.hi < 0)


def defined(values: Iterable[float | None]) -> np.ndarray:
    """The finite values, as a float array."""
    v = np.array([x for x in values if x is not None], dtype=float)
    return v[np.isfinite(v)]


def decimals_for(spread: float, most: int = 4) -> int:
    """Decimals that show two significant digits of `spread` (0.2 -> 2, 0.012 -> 3), between 1 and `most`."""
    if not math.isfinite(spread) or spread <= 0:
        return most
    return int(min(most, max(1, 1 - math.floor(math.log10(spread)))))


def fmt_mean_std(values: Iterable[float | None], n_label: bool = True) -> str:
    """'0.63 +- 0.20 (n = 3)' for n >= 2, '0.632 (n = 1)' for one value, 'n/a' for none."""
    v = defined(values)
    if v.size == 0:
        return "n/a"
    if v.size == 1:
        return f"{v[0]:.{SINGLE_DECIMALS}f} (n = 1)"
    std = float(v.std(ddof=1))
    d = decimals_for(std)
    return f"{v.mean():.{d}f} +- {std:.{d}f}" + (f" (n = {v.size})" if n_label else "")


def paired_interval(diffs: Iterable[float | None], level: float = 0.95) -> Interval:
    """Mean of paired differences and its Student-t interval at `level`."""
    d = defined(diffs)
    if d.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    if d.size == 1:
        return Interval(float(d[0]), float("nan"), float("nan"), 1)
    half = float(scipy_stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return Interval(float(d.mean()), float(d.mean()) - half, float(d.mean()) + half, int(d.size))


def fmt_interval(iv: Interval) -> str:
    """'+0.03 [-0.05, +0.11] (95 % CI, n = 3)', or '+0.282 (n = 1, no interval)'."""
    if iv.n == 0:
        return "n/a"
    if iv.n == 1:
        return f"{iv.mean:+.{SINGLE_DECIMALS}f} (n = 1, no interval)"
    d = decimals_for((iv.hi - iv.lo) / 2)
    return f"{iv.mean:+.{d}f} [{iv.lo:+.{d}f}, {iv.hi:+.{d}f}] (95 % CI, n = {iv.n})"


def verdict(iv: Interval) -> str:
    """'established' when the 95 % interval excludes 0, else 'not established'."""
    return "established" if iv.established else "not established"


def fmt_gain(diffs: Iterable[float | None]) -> str:
    """A gain with its interval and verdict: '+0.03 [-0.05, +0.11] (95 % CI, n = 3): not established'."""
    iv = paired_interval(diffs)
    return f"{fmt_interval(iv)}: {verdict(iv)}" if iv.n else "n/a"
