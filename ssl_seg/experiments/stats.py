"""Numbers with their uncertainty, written for a person: n per cell, spread-matched decimals, 95 % intervals.

Rules every table, figure caption and finding follows (benchmarks/PROTOCOL.md): mean +- std only when n >= 2,
otherwise "n = 1"; the decimals follow the spread (two significant digits of the std); a gain carries an interval
(Student t over paired differences) and is "not established" when that interval includes 0 or cannot be computed
(n < 2). The comparisons of one table are one family: their p-values are Holm-adjusted (`holm_gains`), each
interval is widened by the factor Holm applied to its p, and the exact sign-flip p shows how much a small-n claim
leans on the t assumption.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Hashable, Iterable, Mapping, Sequence, TypeVar

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


ALPHA = 0.05  # family-wise error rate of a table's comparisons
SIGN_FLIP_EXACT_MAX = 16  # exact sign-flip p up to 2**16 sign patterns; larger n is not needed here
K = TypeVar("K", bound=Hashable)


def t_pvalue(diffs: Iterable[float | None]) -> float:
    """Two-sided paired t-test p of mean(diffs) = 0 (NaN when n < 2; 0 or 1 when every difference is equal)."""
    d = defined(diffs)
    if d.size < 2:
        return float("nan")
    sd = float(d.std(ddof=1))
    if sd == 0:
        return 1.0 if d[0] == 0 else 0.0
    t = float(d.mean()) / (sd / math.sqrt(d.size))
    return float(2 * scipy_stats.t.sf(abs(t), d.size - 1))


def sign_flip_pvalue(diffs: Iterable[float | None]) -> float:
    """Exact two-sided sign-flip permutation p: the share of the 2**n sign patterns whose |mean| reaches the observed.

    Its smallest value is 2 / 2**n (0.25 at n = 3, 0.0625 at n = 5), so with n <= 5 it can never reach 0.05.
    """
    d = defined(diffs)
    if d.size == 0 or d.size > SIGN_FLIP_EXACT_MAX:
        return float("nan")
    observed = abs(float(d.mean()))
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
    means = np.abs(signs @ d) / d.size
    return float(np.mean(means >= observed - 1e-12 * max(1.0, observed)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (NaN entries stay NaN and do not count in the family size)."""
    finite = sorted((p, i) for i, p in enumerate(pvalues) if math.isfinite(p))
    m = len(finite)
    out = [float("nan")] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


@dataclass(frozen=True)
class FamilyGain:
    """One comparison of a family: its Holm-widened interval, raw and Holm-adjusted t p, sign-flip p, family size."""

    interval: Interval
    p: float
    p_holm: float
    p_sign: float
    m: int

    @property
    def established(self) -> bool:
        """Whether the Holm-adjusted p is below ALPHA (the interval then excludes 0)."""
        return math.isfinite(self.p_holm) and self.p_holm < ALPHA


def holm_gains(family: Mapping[K, Iterable[float | None]]) -> dict[K, FamilyGain]:
    """Each comparison's paired differences -> its FamilyGain, Holm-adjusted over the whole `family`.

    The interval of a comparison is the paired t-interval at level 1 - ALPHA / c, c = p_Holm / p (the factor Holm
    applied to its p; at p = 0, Holm's factor for its rank), so it excludes 0 exactly when p_Holm < ALPHA.
    """
    diffs = {k: defined(v) for k, v in family.items()}
    keys = list(diffs)
    ps = [t_pvalue(diffs[k]) for k in keys]
    adjusted = holm(ps)
    m = sum(math.isfinite(p) for p in ps)
    order = sorted((p, i) for i, p in enumerate(ps) if math.isfinite(p))
    rank_factor = {i: m - r for r, (_, i) in enumerate(order)}
    out = {}
    for i, k in enumerate(keys):
        p, p_adj = ps[i], adjusted[i]
        if math.isfinite(p):
            factor = p_adj / p if p > 0 else rank_factor[i]
            level = 1 - ALPHA / max(1.0, factor)
        else:
            level = 1 - ALPHA
        out[k] = FamilyGain(paired_interval(diffs[k], level), p, p_adj, sign_flip_pvalue(diffs[k]), m)
    return out


def fmt_family_gain(g: FamilyGain) -> str:
    """'+3.6 [-2.1, +9.4] (Holm, m = 4, n = 3; p_Holm 0.41, sign-flip p 0.25): not established'."""
    iv = g.interval
    if iv.n == 0:
        return "n/a"
    if iv.n == 1:
        return f"{iv.mean:+.{SINGLE_DECIMALS}f} (n = 1, no interval): not established"
    d = decimals_for((iv.hi - iv.lo) / 2)
    return (f"{iv.mean:+.{d}f} [{iv.lo:+.{d}f}, {iv.hi:+.{d}f}] (Holm, m = {g.m}, n = {iv.n}; "
            f"p_Holm {g.p_holm:.2g}, sign-flip p {g.p_sign:.2g}): "
            + ("established" if g.established else "not established"))


def fmt_family(family: Mapping[K, Iterable[float | None]]) -> dict[K, str]:
    """Each comparison of `family` formatted by fmt_family_gain, Holm-adjusted together."""
    return {k: fmt_family_gain(g) for k, g in holm_gains(family).items()}
