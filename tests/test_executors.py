"""Grid cells as submitit jobs: submitit's local executor stands in for Slurm (same submission, pickling, results)."""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_seg.experiments import grid
from ssl_seg.experiments.ablation import ablation_runs
from ssl_seg.experiments.profiles import base_config, profile
from ssl_seg.errors import UserError
from ssl_seg.experiments.executors import add_executor_flags, add_threads_flag, build_executor

submitit = pytest.importorskip("submitit")
ROOT = Path(__file__).resolve().parents[1]


def _two_cells():
    base = base_config("phantom:cardiac?n=24&size=32", profile("tiny"), "cpu")
    base.data.patch_size, base.model.base_channels, base.train.iterations = 32, 4, 2
    base.train.val_every = base.train.image_every = 2
    return ablation_runs(base, ["supervised"], [0.5], [], [0, 1], ["unet"], full_reference=False)


def test_cells_run_as_jobs_a_failure_is_one_line_and_a_relaunch_skips_finished_cells(tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO", "ssl_seg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    runs = _two_cells()
    broken = copy.deepcopy(runs[0])
    broken.name, broken.cfg.data.data = "broken", "phantom:nosuchtask"
    monkeypatch.setattr(grid, "check_grid", lambda runs: None)  # let the bad cell reach its job
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(timeout_min=5)
    with pytest.raises(UserError, match=r"1 job\(s\) failed: broken \(log .*submitit") as info:
        grid.run_grid([*runs, broken], tmp_path, executor=executor, progress=False, threads=1)
    assert "\n" not in str(info.value) and "3 cell job(s) submitted" in caplog.text
    caplog.clear()
    assert all(grid.is_finished(tmp_path / "runs" / r.name) for r in runs)  # the two good cells finished
    assert all(json.loads((tmp_path / "runs" / r.name / "config.json").read_text())["train"]["threads"] == 1
               for r in runs)  # --threads reached the jobs
    stamps = [(tmp_path / "runs" / r.name / "result.json").stat().st_mtime_ns for r in runs]

    class NoSubmissions:
        def map_array(self, *args):
            raise AssertionError("a finished cell was submitted again")

    again = grid.run_grid(runs, tmp_path, executor=NoSubmissions(), progress=False)
    assert sorted(r["name"] for r in again) == sorted(r.name for r in runs)
    assert "2 done already" in caplog.text
    assert stamps == [(tmp_path / "runs" / r.name / "result.json").stat().st_mtime_ns for r in runs]


def test_executor_flags():
    p = argparse.ArgumentParser()
    add_executor_flags(p)
    add_threads_flag(p)
    assert build_executor(p.parse_args([]), "unused") is None
    with pytest.raises(UserError, match="--executor pbs"):
        build_executor(p.parse_args(["--executor", "pbs"]), "unused")
    with pytest.raises(UserError, match="--slurm-cpus 0"):
        build_executor(p.parse_args(["--executor", "slurm", "--slurm-cpus", "0"]), "unused")


def test_study_tasks_run_as_jobs_in_order_and_a_failure_is_one_line(tmp_path, monkeypatch):
    from gan_aug.study import run_tasks

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])))
    executor = submitit.LocalExecutor(folder=tmp_path / "submitit")
    executor.update_parameters(timeout_min=5)
    assert run_tasks([(pow, (3, 2)), (pow, (4, 2))], workers=1, threads=1, executor=executor) == [9, 16]
    with pytest.raises(UserError, match=r"1 job\(s\) failed: factorial \(log .*submitit") as info:
        run_tasks([(pow, (2, 2)), (math.factorial, (-1,))], workers=1, threads=1, executor=executor)
    assert "\n" not in str(info.value)


def test_study_has_the_executor_flags(tmp_path):
    out = subprocess.run([sys.executable, "-m", "ssl_seg.cli", "study", "--out", str(tmp_path / "s"),
                          "--executor", "pbs"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == ["error: --executor pbs: use one of local, slurm"]
