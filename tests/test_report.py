"""ssl_seg.experiments.stats (numbers with their uncertainty) and ssl_seg.engine.curves (curves.png from TensorBoard events)."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from ssl_seg.engine.curves import plot_curves, read_scalars
from ssl_seg.experiments.stats import decimals_for, fmt_gain, fmt_interval, fmt_mean_std, paired_interval


def test_decimals_follow_the_spread():
    assert [decimals_for(s) for s in (0.2041, 0.09, 0.012, 0.0004, 3.0)] == [2, 3, 3, 4, 1]
    assert decimals_for(0.0) == decimals_for(float("nan")) == 4


def test_mean_std_only_from_two_values_on():
    assert fmt_mean_std([0.5]) == "0.500 (n = 1)"
    assert fmt_mean_std([None, 0.5, float("nan")]) == "0.500 (n = 1)"  # undefined values do not count
    assert fmt_mean_std([]) == "n/a"
    # 0.5, 0.7: std 0.1414 -> two decimals
    assert fmt_mean_std([0.5, 0.7]) == "0.60 +- 0.14 (n = 2)"
    assert fmt_mean_std([0.501, 0.502, 0.503], n_label=False) == "0.5020 +- 0.0010"


def test_paired_interval_matches_scipy_and_says_when_a_gain_is_not_established():
    diffs = [0.1, 0.05, 0.2]
    iv = paired_interval(diffs)
    lo, hi = scipy_stats.t.interval(0.95, 2, loc=sum(diffs) / 3, scale=scipy_stats.sem(diffs))
    assert (iv.mean, iv.lo, iv.hi, iv.n) == (pytest.approx(0.35 / 3), pytest.approx(lo), pytest.approx(hi), 3)
    assert not iv.established and fmt_gain(diffs) == "+0.12 [-0.07, +0.31] (95 % CI, n = 3): not established"
    assert fmt_gain([0.10, 0.10, 0.11]) == "+0.103 [+0.089, +0.118] (95 % CI, n = 3): established"
    assert fmt_gain([-0.10, -0.10, -0.11]).endswith(": established")  # a clear loss is established too
    one = paired_interval([0.282])
    assert one.n == 1 and math.isnan(one.lo) and not one.established
    assert fmt_interval(one) == "+0.282 (n = 1, no interval)" and "+- 0.000" not in fmt_gain([0.282])
    assert fmt_gain([]) == "n/a"


def test_curves_png_from_event_files_including_a_resumed_step(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    tb = tmp_path / "tb"
    writer = SummaryWriter(str(tb))
    for step in range(5):
        writer.add_scalar("loss/sup", 1.0 / (step + 1), step)
        writer.add_scalar("lr", 0.01, step)
    writer.add_scalar("val/model/dice", 0.4, 4)
    writer.add_scalar("val/model/hd95", 9.0, 4)  # not a curve of the validation panel
    writer.close()
    writer = SummaryWriter(str(tb))  # a resumed run logs step 4 again, then goes on
    writer.add_scalar("loss/sup", 0.1, 4)
    writer.add_scalar("val/model/dice", 0.6, 9)
    writer.close()
    scalars = read_scalars(tb)
    assert scalars["loss/sup"] == ([0, 1, 2, 3, 4], [1.0, 0.5, pytest.approx(1 / 3), 0.25, pytest.approx(0.1)])
    assert scalars["val/model/dice"] == ([4, 9], [pytest.approx(0.4), pytest.approx(0.6)])
    assert plot_curves(tb, tmp_path / "curves.png") and (tmp_path / "curves.png").stat().st_size > 5000
    assert not plot_curves(tmp_path / "empty", tmp_path / "none.png") and not (tmp_path / "none.png").exists()
