"""The statistics every table uses, against hand-computed cases and scipy's own tests."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from ssl_seg.experiments.stats import (fmt_family, holm, holm_gains, paired_interval, sign_flip_pvalue,
                                       t_pvalue)


def test_holm_matches_the_hand_computed_step_down():
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> raised to 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = holm([0.02, float("nan"), 0.01])  # NaN is no comparison: family of 2
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.02) and math.isnan(adjusted[1])


def test_t_pvalue_equals_scipy_one_sample_t():
    rng = np.random.default_rng(0)
    for _ in range(20):
        d = rng.normal(0.5, 1.0, size=int(rng.integers(2, 9)))
        assert t_pvalue(d) == pytest.approx(scipy_stats.ttest_1samp(d, 0.0).pvalue, rel=1e-10)
    assert math.isnan(t_pvalue([1.0])) and t_pvalue([2.0, 2.0]) == 0.0 and t_pvalue([0.0, 0.0]) == 1.0


def test_sign_flip_is_exact_and_matches_scipy_permutation_test():
    assert sign_flip_pvalue([1.0, 2.0, 3.0]) == pytest.approx(2 / 8)  # all positive: only +++ and --- reach it
    assert sign_flip_pvalue([1.0, 1.0, 1.0, 1.0, 1.0]) == pytest.approx(2 / 32)  # never below 0.05 at n = 5
    rng = np.random.default_rng(1)
    for _ in range(10):
        d = rng.normal(0.3, 1.0, size=6)
        ref = scipy_stats.permutation_test((d,), np.mean, permutation_type="samples", alternative="two-sided",
                                           n_resamples=np.inf).pvalue
        assert sign_flip_pvalue(d) == pytest.approx(ref, rel=1e-9)


def test_holm_intervals_exclude_zero_exactly_when_holm_establishes():
    rng = np.random.default_rng(2)
    for _ in range(30):
        family = {k: rng.normal(rng.uniform(-1, 3), 1.0, size=4) for k in range(int(rng.integers(1, 6)))}
        for k, g in holm_gains(family).items():
            excludes = g.interval.lo > 0 or g.interval.hi < 0
            assert excludes == g.established
            assert g.p_holm >= g.p - 1e-15
            raw = paired_interval(family[k])
            assert g.interval.hi - g.interval.lo >= raw.hi - raw.lo - 1e-12  # never narrower than the 95 % one


def test_a_family_of_one_is_the_plain_95_interval():
    d = [3.0, 1.0, 4.0]
    (g,) = holm_gains({"a": d}).values()
    plain = paired_interval(d)
    assert (g.interval.lo, g.interval.hi) == pytest.approx((plain.lo, plain.hi)) and g.p_holm == pytest.approx(g.p)


def test_correction_can_withdraw_what_one_test_alone_establishes():
    strong, weak = [5.0, 5.5, 6.0], [1.0, 1.3, 1.9]
    assert paired_interval(weak).established  # alone, p ~ 0.02
    family = holm_gains({"strong": strong, "weak": weak, "noise1": [1, -1, 0.5], "noise2": [-2, 1, 0.2]})
    assert family["strong"].established and not family["weak"].established
    text = fmt_family({"weak": weak, "noise": [1, -1, 0.5]})["weak"]
    assert "Holm, m = 2, n = 3" in text and "sign-flip p 0.25" in text
