"""benchmarks/seed_gains.py: per-volume scores of 2D and 3D runs, seed pairing, gains and gaps by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("seed_gains", Path(__file__).parents[1] / "benchmarks" / "seed_gains.py")
seed_gains = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(seed_gains)


def _row(method, labels, seed, dice, hd95, volume=False):
    """A summary row: 2D runs on volumetric data carry vol_* (per-volume) keys, 3D runs plain per-volume ones."""
    prefix = "vol_" if volume else ""
    return {"method": method, "labels": labels, "seed": seed, f"{prefix}dice": dice, f"{prefix}hd95": hd95,
            "dice": 0.0 if volume else dice}  # a 2D slice mean that must not be read as per volume


def test_scores_are_per_volume_for_2d_and_3d_runs_and_paired_by_seed():
    assert seed_gains.score(_row("supervised", "f0.05", 0, 0.8, 3.0, volume=True), "vol_dice") == 0.8
    assert seed_gains.score(_row("supervised", "f0.05", 0, 0.7, 3.0), "vol_dice") == 0.7
    assert seed_gains.score(_row("supervised", "f0.05", 0, 0.7, 3.0), "vol_dice_pp") is None
    rows = [_row("supervised", "f0.05", 0, 0.70, 4.0), _row("supervised", "f0.05", 1, 0.60, 5.0),
            _row("mean-teacher", "f0.05", 1, 0.65, 4.5), _row("mean-teacher", "f0.05", 0, 0.74, 3.0),
            _row("mean-teacher", "f0.05", 2, 0.90, 1.0)]  # seed 2 has no supervised partner
    assert seed_gains.paired(rows, ("mean-teacher", "f0.05"), ("supervised", "f0.05"), "vol_dice") \
        == pytest.approx([4.0, 5.0])  # Dice points, seeds 0 and 1 only
    assert seed_gains.paired(rows, ("mean-teacher", "f0.05"), ("supervised", "f0.05"), "vol_hd95") \
        == pytest.approx([-1.0, -0.5])  # mm


def test_report_prints_cells_gains_and_the_gap_to_full_labels(tmp_path, capsys, monkeypatch):
    rows = [{**_row(m, labels, s, d, 3.0), "name": f"{m}_{labels}_{s}", "best_step": 9, "s_per_iteration": 0.5,
             "wall_time_s": 60.0} for m, labels, s, d in
            [("supervised", "f1", 0, 0.90), ("supervised", "f1", 1, 0.80), ("supervised", "f0.05", 0, 0.70),
             ("supervised", "f0.05", 1, 0.60), ("mean-teacher", "f0.05", 0, 0.74), ("mean-teacher", "f0.05", 1, 0.65)]]
    results = [{"name": r["name"], "test": {"n_cases": 4, "per_class": {
        "1": {"dice": 0.9, "hd95": 1.5, "n_undefined_hd95": 0}, "2": {"dice": 0.25, "hd95": 3.0, "n_undefined_hd95": 3}}}}
        for r in rows]
    monkeypatch.setattr(seed_gains, "summary_rows", lambda found: rows if found == results else [])
    monkeypatch.setattr(seed_gains, "collect", lambda root: results)
    assert seed_gains.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| mean-teacher | f0.05 | 1 | 0.900 | 1.50 (0/4) | 0.250 | 3.00 (3/4) |" in out  # per class, best
    assert "| mean-teacher | f0.05 | 2 | 0.695 +- 0.064 |" in out  # mean and sample std of 0.74, 0.65
    # gains +4 and +5 points: mean 4.5, t(0.975, 1) * 0.707 / sqrt(2) = 6.35 half-width
    assert "| mean-teacher | f0.05 | Dice best | +4.5 [-1.9, +10.9] (95 % CI, n = 2): not established | 2/2 |" in out
    assert "| supervised | f0.05 | Dice best | +20.0" in out  # full - supervised 5 %: 20 points on both seeds


def test_current_rule_keeps_any_rise_and_redecides_what_the_old_margin_dropped(tmp_path):
    import json

    def choice(without, with_, kept):
        return {"lcc_classes": kept, "val_dice_without": without, "val_dice_with": with_}

    raw = {"dice": 0.80, "hd95": 9.0, "volume": {"dice": 0.78, "hd95": 10.0}}
    result = {"test": {**raw, "postprocessed": {"dice": 0.81, "hd95": 4.0}},
              "test_last": {**raw, "postprocessed": {"dice": 0.85, "hd95": 3.0}}}
    (tmp_path / "postprocessing.json").write_text(json.dumps(choice({"1": 0.900}, {"1": 0.900}, [1])))  # no rise
    (tmp_path / "postprocessing_last.json").write_text(json.dumps(choice({"1": 0.90}, {"1": 0.903}, [1])))  # +0.3
    notes = seed_gains.redecide_lcc(result, tmp_path)
    assert result["test"]["postprocessed"] == raw  # dropped: the +LCC scores are the raw ones, per volume too
    assert result["test_last"]["postprocessed"] == {"dice": 0.85, "hd95": 3.0}  # any rise is kept: as stored
    assert notes == [f"{tmp_path.name} test: filter classes [1] -> []"]
    margin = {"test": {**raw, "postprocessed": dict(raw)}}  # the old half-point margin dropped a +0.3 filter
    (tmp_path / "postprocessing.json").write_text(json.dumps(choice({"1": 0.900}, {"1": 0.903}, [])))
    seed_gains.redecide_lcc(margin, tmp_path)
    assert margin["test"]["postprocessed"] == {"dice": None, "hd95": None}  # kept now: needs a re-evaluation
    multi = {"test": {**raw, "postprocessed": {"dice": 0.9, "hd95": 2.0}}}
    (tmp_path / "postprocessing.json").write_text(
        json.dumps(choice({"1": 0.5, "2": 0.5}, {"1": 0.6, "2": 0.499}, [1, 2])))  # class 2 fell 0.1 points
    seed_gains.redecide_lcc(multi, tmp_path)
    assert multi["test"]["postprocessed"] == {"dice": None, "hd95": None}  # a subset: needs a re-evaluation
