"""The ablation grid: resumable (a killed grid redoes nothing), shards cover it exactly once, summaries."""

from __future__ import annotations

import csv
import json

import pytest

from ssl_seg.experiments import grid
from ssl_seg.experiments.ablation import ablation_runs
from ssl_seg.experiments.profiles import base_config, profile
from ssl_seg.experiments.summary import summary_rows
from ssl_seg.experiments.tables import summary_markdown
from ssl_seg.cli import main
from ssl_seg.errors import UserError


def _runs():
    base = base_config("phantom:cardiac", profile("tiny"), "cpu")
    return ablation_runs(base, ["supervised", "mean-teacher"], [0.25], [], [0, 1], ["unet"])


def test_grid_shape_and_shards():
    runs = _runs()
    names = [r.name for r in runs]
    assert len(names) == 2 * 1 * 2 + 2  # + the full-label supervised reference for each seed
    a, b = grid.shard(runs, "0/2"), grid.shard(runs, "1/2")
    assert sorted(r.name for r in a + b) == sorted(names)
    assert not {r.name for r in a} & {r.name for r in b}
    with pytest.raises(UserError, match="--shard"):
        grid.shard(runs, "2/2")
    sup, mt = [r for r in runs if r.tags["seed"] == 1 and r.tags["fraction"] == 0.25]
    assert sup.cfg.data.split_seed == mt.cfg.data.split_seed == 1  # same labeled set seed for seed


def test_killed_grid_resumes_without_redoing(tmp_path, monkeypatch):
    runs = _runs()[:3]
    calls = []
    real = grid.run_one

    def run_once_then_die(run, root):
        if calls:
            raise KeyboardInterrupt
        calls.append(run.name)
        return real(run, root)

    monkeypatch.setattr(grid, "run_one", run_once_then_die)
    with pytest.raises(KeyboardInterrupt):
        grid.run_grid(runs, tmp_path, progress=False)
    assert grid.is_finished(tmp_path / "runs" / runs[0].name)
    first = (tmp_path / "runs" / runs[0].name / "result.json").read_text()

    redone = []
    monkeypatch.setattr(grid, "run_one", lambda run, root: (redone.append(run.name), real(run, root))[1])
    results = grid.run_grid(runs, tmp_path, progress=False)
    assert redone == [r.name for r in runs[1:]]
    assert len(results) == 3
    assert (tmp_path / "runs" / runs[0].name / "result.json").read_text() == first


def test_two_shards_then_summary(tmp_path, capfd):
    argv = ["ablate", "--data", "phantom:cardiac", "--profile", "tiny", "--methods", "supervised", "pseudo-label",
            "--fractions", "0.25", "--seeds", "0", "--device", "cpu", "--out", str(tmp_path)]
    assert main(argv + ["--shard", "0/2"]) == 0
    assert main(argv + ["--shard", "1/2"]) == 0
    assert "evaluate" not in capfd.readouterr().err  # cells run without bars: none from their test scoring either
    rows = list(csv.DictReader((tmp_path / "summary.csv").open()))
    assert sorted(r["name"] for r in rows) == sorted(r.name for r in ablation_runs(
        base_config("phantom:cardiac", profile("tiny"), "cpu"), ["supervised", "pseudo-label"], [0.25], [], [0],
        ["unet"]))
    md = (tmp_path / "summary.md").read_text()
    assert "pseudo-label" in md and "**" in md
    assert (tmp_path / "dice_vs_labels.png").stat().st_size > 1000
    assert (tmp_path / "gap_recovery.png").is_file()
    result = json.loads(next((tmp_path / "runs").glob("*pseudo-label*/result.json")).read_text())
    assert 0 <= result["test"]["dice"] <= 1
    # both checkpoints are scored on test, and the summary has a table for each
    assert 0 <= result["test_last"]["dice"] <= 1
    assert "last checkpoint" in md and "best-on-validation checkpoint" in md
    assert "per volume" not in md  # phantoms are 2D images, not slices of volumes


def test_summary_math():
    def row(method, labels, seed, dice, fraction=0.1):
        return {"name": f"{method}{labels}{seed}", "tags": {"backbone": "unet", "method": method, "labels": labels,
                "fraction": fraction, "cases": None, "seed": seed}, "n_labeled": 3, "val_dice": dice,
                "test": {"dice": dice, "hd95": 5.0, "iou": dice, "asd": 1.0}, "best_model": "model",
                "iterations": 1, "s_per_iteration": 0.1, "wall_time_s": 1}
    results = [row("supervised", "f0.1", 0, 0.5), row("supervised", "f0.1", 1, 0.6),
               row("unimatch", "f0.1", 0, 0.7), row("unimatch", "f0.1", 1, 0.55),
               row("supervised", "f1", 0, 0.9, 1.0), row("supervised", "f1", 1, 0.9, 1.0)]
    md = summary_markdown(summary_rows(results), "t")
    # unimatch mean 0.625 vs supervised 0.55, full 0.9: recovered (0.625-0.55)/(0.9-0.55) = 21 %
    line = next(l for l in md.splitlines() if l.startswith("| unimatch | f0.1"))
    assert "**0.62 +- 0.11 (n=2)**" in line  # 0.625 +- 0.1061: two significant digits of the std and "| 1/2 |" in line and "21%" in line
    # paired gains per seed +0.20 and -0.05: mean +0.075, 95 % t half-width 12.706 * 0.17678 / sqrt(2) = 1.5883 (a
    # family of one: Holm leaves it); t = 0.6 with 1 dof: p = 1 - 2 atan(0.6) / pi = 0.656; every sign pattern's
    # |mean| reaches 0.075: sign-flip p 1
    assert "| +0.1 [-1.5, +1.7] (Holm, m = 1, n = 2; p_Holm 0.66, sign-flip p 1): not established |" in line
    assert "## slice/case means, best-on-validation checkpoint (primary endpoint)" in md
