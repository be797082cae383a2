"""The generated results page and the pre-registration check, rebuilt from a small fixture of result files in a
throwaway git repository."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from benchmarks import leaderboard, preregistration

COMMITTED = "2026-01-01T00:00:00+00:00"


def _git(root: Path, *args: str, date: str = COMMITTED) -> None:
    env = {**os.environ, "GIT_COMMITTER_DATE": date, "GIT_AUTHOR_DATE": date}
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True, env=env)


def _run(root: Path, folder: str, seed: int, val: float, test: float, schedule: str | None, started: str,
         volume: bool = True) -> None:
    run = root / "benchmarks" / "results" / folder / f"s{seed}"
    run.mkdir(parents=True)
    scores = {"dice": 0.0, "volume": {"dice": test}} if volume else {"dice": test}
    (run / "result.json").write_text(json.dumps({"seed": seed, "val_dice": val, "s_per_iteration": 0.5,
                                                 "started_at": started, "wall_time_s": 7200.0, "test": scores}))
    (run / "config.json").write_text(json.dumps({"train": {"lr_schedule": schedule}}))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one pre-registered cell (3 seeds, two schedules per arm) and one exploratory cell."""
    if subprocess.run(["git", "--version"], capture_output=True).returncode != 0:
        pytest.skip("git not installed")
    root = tmp_path / "repo"
    (root / "benchmarks" / "preregistered").mkdir(parents=True)
    _git(root, "init", "-q")
    (root / "benchmarks" / "preregistered" / "c.md").write_text("predictions\n")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "predictions")
    after = "2026-01-02T00:00:00+00:00"
    # supervised: per seed the higher validation Dice picks constant (s0, s1) or poly (s2)
    for seed, (vc, tc, vp, tp) in enumerate(((0.70, 0.60, 0.65, 0.99), (0.71, 0.62, 0.60, 0.99), (0.5, 0.10, 0.72, 0.61))):
        _run(root, "sup_const", seed, vc, tc, "constant", after)
        _run(root, "sup_poly", seed, vp, tp, "poly", after)
    for seed, test in enumerate((0.65, 0.66, 0.68)):  # gains +5, +4, +7 points over 0.60, 0.62, 0.61
        _run(root, "uni", seed, 0.8, test, "poly", after)
        _run(root, "full", seed, 0.9, 0.70, "constant", after)  # full - supervised: 10, 8, 9 points
    _run(root, "old_sup", 0, 0.7, 0.50, "constant", "2025-06-01T00:00:00+00:00", volume=False)
    _run(root, "old_mt", 0, 0.7, 0.55, "constant", "2025-06-01T00:00:00+00:00", volume=False)
    cells = {"cells": [
        {"id": "c", "data": "D", "labels": "2 volumes", "seeds": [0, 1, 2], "predictions": "benchmarks/preregistered/c.md",
         "arms": {"supervised": ["benchmarks/results/sup_const/*", "benchmarks/results/sup_poly/*"],
                  "unimatch": ["benchmarks/results/uni/*"], "full labels": ["benchmarks/results/full/*"]}},
        {"id": "old", "data": "E", "labels": "5 %", "seeds": [0], "exploratory": "run before the protocol",
         "arms": {"supervised": ["benchmarks/results/old_sup/*"], "mean-teacher": ["benchmarks/results/old_mt/*"]}}],
        "withdrawn": [{"claim": "A claim.", "why": "Chosen on test."}]}
    (root / "benchmarks" / "cells.json").write_text(json.dumps(cells))
    (root / "benchmarks" / "RESULTS.md").write_text("# Notebook\n\nold entries\n")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "results", date="2026-01-03T00:00:00+00:00")
    return root


def test_page_rebuilds_from_result_files_with_choices_on_validation(repo: Path):
    assert leaderboard.main(["--root", str(repo)]) == 0
    text = (repo / "benchmarks" / "RESULTS.md").read_text()
    assert text.startswith(leaderboard.START) and text.rstrip().endswith("old entries")  # the notebook stays below
    claims = text.split("## Claims")[1].split("## Exploratory")[0]
    # supervised per seed on validation: constant 0.60, constant 0.62, poly 0.61 (never the poly 0.99 on test)
    assert "| D | 2 volumes | supervised | 3 | 0.610 +- 0.010 | constant 2, poly 1 |" in claims
    # gains 5, 4, 7: mean 5.33, sd 1.53, 95 % half-width 4.3027 * 1.5275 / sqrt 3 = 3.79 (a family of one);
    # t = 6.05 with 2 dof: p = 1 - t / sqrt(t^2 + 2) = 0.026
    assert "| unimatch | 3 | 0.663 +- 0.015 | poly 3 | +5.3 [+1.5, +9.1] (Holm, m = 1, n = 3; p_Holm 0.026, " \
           "sign-flip p 0.25): established |" in claims
    # shares 5/10, 4/8, 7/9 -> 50 %, 50 %, 78 %: mean 59 %, half-width 4.3027 * 16.04 / sqrt 3 = 39.8
    assert "+59 % [+19, +99] (95 % CI, n = 3)" in claims
    assert "| full labels | 3 | 0.7000 +- 0.0000 |" in claims
    exploratory = text.split("## Exploratory")[1]
    assert "old (E, 5 %): run before the protocol" in exploratory
    assert "| E | 5 % | mean-teacher | 1 | 0.550 (n = 1) | constant 1 | +5.000 (n = 1, no interval): not established |" \
        in exploratory  # per case Dice where the data has no volumes
    assert "**A claim.** Chosen on test." in text
    assert (repo / leaderboard.FIGURE).stat().st_size > 0
    assert leaderboard.main(["--root", str(repo), "--check"]) == 0
    assert leaderboard.main(["--root", str(repo)]) == 0  # regenerating replaces the front, never stacks it
    assert (repo / "benchmarks" / "RESULTS.md").read_text() == text
    (repo / "benchmarks" / "results" / "uni" / "s0" / "result.json").write_text(json.dumps(
        {"seed": 0, "val_dice": 0.8, "s_per_iteration": 0.5, "started_at": "2026-01-02T00:00:00+00:00",
         "test": {"dice": 0, "volume": {"dice": 0.7}}}))
    assert leaderboard.main(["--root", str(repo), "--check"]) == 1  # a changed result file: the page is stale


def test_preregistration_passes_then_fails_on_an_early_run_or_an_edited_prediction(repo: Path, capsys):
    assert preregistration.main(["--root", str(repo)]) == 0
    assert "ok   c: pre-registered" in capsys.readouterr().out
    early = repo / "benchmarks" / "results" / "uni" / "s1" / "result.json"
    early.write_text(early.read_text().replace("2026-01-02", "2025-12-31"))  # started before the predictions commit
    assert preregistration.main(["--root", str(repo)]) == 1
    assert "uni/s1 started 2025-12-31" in capsys.readouterr().out
    assert leaderboard.main(["--root", str(repo)]) == 0
    text = (repo / "benchmarks" / "RESULTS.md").read_text()
    assert "No cell passes the pre-registration check yet." in text and "the pre-registration check failed" in text
    early.write_text(early.read_text().replace("2025-12-31", "2026-01-02"))
    (repo / "benchmarks" / "preregistered" / "c.md").write_text("predictions, revised after looking\n")
    _git(repo, "commit", "-qam", "edit", date="2026-01-04T00:00:00+00:00")
    assert preregistration.main(["--root", str(repo)]) == 1
    assert "changed after it was added" in capsys.readouterr().out


def test_a_cell_may_name_its_baseline_arm(repo: Path):
    for seed, test in enumerate((0.67, 0.69, 0.70)):  # over unimatch's 0.65, 0.66, 0.68: +2, +3, +2 points
        _run(repo, "uni_plus", seed, 0.85, test, "poly", "2026-01-02T00:00:00+00:00")
    spec = json.loads((repo / "benchmarks" / "cells.json").read_text())
    spec["cells"][0]["arms"]["unimatch+x"] = ["benchmarks/results/uni_plus/*"]
    spec["cells"].append({**spec["cells"][0], "id": "b", "baseline": "unimatch",
                          "arms": {"unimatch": ["benchmarks/results/uni/*"],
                                   "unimatch+x": ["benchmarks/results/uni_plus/*"]}})
    (repo / "benchmarks" / "cells.json").write_text(json.dumps(spec))
    assert leaderboard.main(["--root", str(repo)]) == 0
    claims = (repo / "benchmarks" / "RESULTS.md").read_text().split("## Claims")[1].split("## Exploratory")[0]
    assert "| unimatch+x | 3 | 0.687 +- 0.015 | poly 3 | over unimatch: +2.3 [" in claims  # cell b: against unimatch
    assert "| unimatch+x | 3 | 0.687 +- 0.015 | poly 3 | +7.7 [" in claims  # cell c: against supervised (0.610)


def test_a_cell_without_predictions_must_say_why(repo: Path, capsys):
    spec = json.loads((repo / "benchmarks" / "cells.json").read_text())
    del spec["cells"][1]["exploratory"]
    (repo / "benchmarks" / "cells.json").write_text(json.dumps(spec))
    assert preregistration.main(["--root", str(repo)]) == 1
    assert "FAIL old: neither a predictions file nor an 'exploratory' reason" in capsys.readouterr().out


def test_an_amendment_counts_only_when_committed_before_the_first_run_finished(repo: Path, capsys):
    spec = json.loads((repo / "benchmarks" / "cells.json").read_text())
    spec["cells"][0]["amendments"] = ["benchmarks/preregistered/c.amendment.md"]
    (repo / "benchmarks" / "cells.json").write_text(json.dumps(spec))
    amendment = repo / "benchmarks" / "preregistered" / "c.amendment.md"
    amendment.write_text("drop a candidate\n")
    assert preregistration.main(["--root", str(repo)]) == 1
    assert "c.amendment.md is not committed" in capsys.readouterr().out
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "amend", date="2026-01-02T01:00:00+00:00")  # runs started 00:00, took 2 h
    assert preregistration.main(["--root", str(repo)]) == 0
    amendment.write_text("drop a candidate, and another\n")
    _git(repo, "commit", "-qam", "late", date="2026-01-02T03:00:00+00:00")
    assert preregistration.main(["--root", str(repo)]) == 1
    assert "c.amendment.md changed after it was added" in capsys.readouterr().out


def test_a_broken_cells_file_is_one_line_and_exit_2(repo: Path, capsys):
    (repo / "benchmarks" / "cells.json").write_text('{"cells": [{"id": "x"}]}')
    assert leaderboard.main(["--root", str(repo)]) == 2
    assert preregistration.main(["--root", str(repo)]) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all("not a cells file" in line for line in lines)
    no_arm = {"id": "x", "data": "D", "labels": "L", "seeds": [0], "arms": {"unimatch": []}, "baseline": "mt"}
    (repo / "benchmarks" / "cells.json").write_text(json.dumps({"cells": [no_arm]}))  # a baseline that is no arm
    assert leaderboard.main(["--root", str(repo)]) == 2
    assert "not a cells file" in capsys.readouterr().out


def test_a_reused_arm_needs_a_passing_source_cell_with_the_same_runs(repo: Path, capsys):
    (repo / "benchmarks" / "preregistered" / "w.md").write_text("warm predictions\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "warm predictions", date="2026-01-05T00:00:00+00:00")
    for seed in range(3):  # the warm arm ran after its predictions; the reused supervised runs (01-02) before
        _run(repo, "uni_warm", seed, 0.8, 0.7, "poly", "2026-01-06T00:00:00+00:00")
    spec = json.loads((repo / "benchmarks" / "cells.json").read_text())
    warm = {"id": "w", "data": "D", "labels": "2 volumes", "seeds": [0, 1, 2],
            "predictions": "benchmarks/preregistered/w.md", "reused": {"supervised": "c"},
            "arms": {"supervised": spec["cells"][0]["arms"]["supervised"],
                     "unimatch+warm": ["benchmarks/results/uni_warm/*"]}}
    spec["cells"].append(warm)
    (repo / "benchmarks" / "cells.json").write_text(json.dumps(spec))
    assert preregistration.main(["--root", str(repo)]) == 0
    assert "ok   w: pre-registered in benchmarks/preregistered/w.md, 3 runs started after it" in capsys.readouterr().out
    # a recipe chosen on validation may keep the reused real-only runs as one of its candidates: checked by cell c
    warm["arms"]["unimatch+warm"] = ["benchmarks/results/uni_warm/*", "benchmarks/results/sup_poly/*"]
    (repo / "benchmarks" / "cells.json").write_text(json.dumps(spec))
    assert preregistration.main(["--root", str(repo)]) == 0
    assert "3 runs started after it" in capsys.readouterr().out
    warm["arms"]["unimatch+warm"] = ["benchmarks/results/uni_warm/*", "benchmarks/results/old_sup/*"]
    (repo / "benchmarks" / "cells.json").write_text(json.dumps(spec))
    assert preregistration.main(["--root", str(repo)]) == 1  # a candidate no reused arm lists is checked here
    assert "old_sup/s0 started 2025-06-01" in capsys.readouterr().out
    warm["arms"]["unimatch+warm"] = ["benchmarks/results/uni_warm/*"]
    warm["arms"]["supervised"] = ["benchmarks/results/sup_poly/*"]  # not the source cell's arm
    (repo / "benchmarks" / "cells.json").write_text(json.dumps(spec))
    assert preregistration.main(["--root", str(repo)]) == 1
    assert "arm 'supervised' differs from the same arm of c" in capsys.readouterr().out
    warm["arms"]["supervised"], warm["reused"] = spec["cells"][0]["arms"]["supervised"], {"supervised": "old"}
    (repo / "benchmarks" / "cells.json").write_text(json.dumps(spec))
    assert preregistration.main(["--root", str(repo)]) == 1
    assert "reuses cell 'old', which is not a pre-registered cell" in capsys.readouterr().out
    # a third cell may reuse w's own arm (w reusing c's supervised arm does not matter), never the arm w reuses
    warm["reused"] = {"supervised": "c"}
    for seed in range(3):
        _run(repo, "uni_warm_x", seed, 0.8, 0.7, "poly", "2026-01-06T00:00:00+00:00")
    third = {**warm, "id": "t", "reused": {"unimatch+warm": "w", "supervised": "c"},
             "arms": {**warm["arms"], "unimatch+warm+x": ["benchmarks/results/uni_warm_x/*"]}}
    spec["cells"].append(third)
    (repo / "benchmarks" / "cells.json").write_text(json.dumps(spec))
    assert preregistration.main(["--root", str(repo)]) == 0
    capsys.readouterr()
    third["reused"] = {"unimatch+warm": "w", "supervised": "w"}
    (repo / "benchmarks" / "cells.json").write_text(json.dumps(spec))
    assert preregistration.main(["--root", str(repo)]) == 1
    assert "arm 'supervised' reuses cell 'w', which is not a pre-registered cell" in capsys.readouterr().out
