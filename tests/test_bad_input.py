"""The catalogue of issue 12: bad inputs and faults a user can cause, one case per test.

Each case ends in exit code 2 and one line naming the file or flag (never a traceback), refuses before
anything is overwritten, or is handled without loss (locks, resume, stale temporary folders).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan_aug.cli import main as gan_main
from ssl_seg import locks
from ssl_seg.cli import main
from ssl_seg.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
DATA = "phantom:cardiac?n=24&size=32"
TRAIN = ["train", "--data", DATA, "--iterations", "4", "--val-every", "2", "--batch-size", "2", "--patch-size", "32",
         "--device", "cpu", "--base-channels", "4", "--no-progress", "--labeled-fraction", "0.5"]
GAN_TRAIN = ["train", "--data", DATA, "--labeled-fraction", "0.3", "--iterations", "2", "--batch-size", "2",
             "--patch-size", "32", "--ngf", "8", "--ndf", "8", "--device", "cpu", "--no-progress"]


def one_line_error(capsys, code: int, expected: str) -> str:
    """Assert exit code 2 and exactly one stderr line `error: ...` containing `expected`; return it."""
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
    return err[0]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 4-step run of TRAIN (copied by the tests that change it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(TRAIN + ["--out", str(out)]) == 0
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def _snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


# ------------------------------------------------------------------ 1. two runs on one --out


def test_second_run_on_a_locked_out_stops_at_once_and_a_killed_holder_frees_it(tmp_path, capsys):
    out = tmp_path / "dup"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from ssl_seg import locks; "
                               f"locks.acquire({str(out)!r}); print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env=env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = one_line_error(capsys, main(TRAIN + ["--out", str(out)]), "in use by pid")
        assert str(holder.pid) in line
        assert not (out / "config.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: the lock file stays, its lock does not
        holder.wait()
    assert (out / locks.LOCK_NAME).exists()
    assert main(TRAIN + ["--out", str(out), "--iterations", "2"]) == 0
    assert not (out / locks.LOCK_NAME).exists()  # released on exit


def test_grid_cell_locked_by_another_process_is_left_to_it(tmp_path, capsys):
    from ssl_seg import grid
    from ssl_seg.ablation import ablation_runs, base_config, profile

    runs = ablation_runs(base_config("phantom:cardiac", profile("tiny"), "cpu"), ["supervised"], [0.5], [], [0],
                         ["unet"], full_reference=False)
    cell = tmp_path / "runs" / runs[0].name
    holder = subprocess.Popen([sys.executable, "-c", "import time; from ssl_seg import locks; "
                               f"locks.acquire({str(cell)!r}); print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env=env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert grid.run_grid(runs, tmp_path, progress=False) == []
        assert "left to it" in capsys.readouterr().err and not (cell / "last.pt").exists()
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------ 2. resume checks the flags first


@pytest.mark.parametrize("flags, differs", [
    (["--split-seed", "1"], "data.split_seed"),
    (["--backbone", "fcn"], "model.backbone"),
    (["--method", "mean-teacher"], "method.name"),
    (["--data", "phantom:cardiac?n=30&size=32"], "data.data"),
])
def test_resume_with_other_settings_is_refused_before_writing(finished_run, tmp_path, capsys, flags, differs):
    run = _copy(finished_run, tmp_path)
    before = _snapshot(run)
    line = one_line_error(capsys, main(TRAIN + ["--out", str(run), "--resume", *flags]), "--resume")
    assert differs in line and "--iterations" in line  # names what differs and what may change
    assert _snapshot(run) == before


def test_resume_reuses_the_saved_config_and_may_extend_iterations(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    assert main(["train", "--out", str(run), "--resume", "--iterations", "6", "--no-progress"]) == 0
    result = json.loads((run / "result.json").read_text())
    assert result["iterations"] == 6 and result["segments"] == 2


def test_resumed_run_times_every_segment(tmp_path, monkeypatch):
    """(Bit-exact resume itself is tests/test_trainer.py::test_resume_is_exact.)"""
    original = Trainer.train_step
    monkeypatch.setattr(Trainer, "train_step", lambda self, step, batch: (
        (_ for _ in ()).throw(KeyboardInterrupt) if step == 3 else original(self, step, batch)))
    assert main(TRAIN + ["--out", str(tmp_path / "killed")]) == 130
    first = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["timing"]
    monkeypatch.setattr(Trainer, "train_step", original)
    assert main(TRAIN + ["--out", str(tmp_path / "killed"), "--resume"]) == 0
    result = json.loads((tmp_path / "killed" / "result.json").read_text())
    assert result["segments"] == 2
    assert result["s_per_iteration"] * 4 > first["train_s"] and result["wall_time_s"] > first["wall_s"]


# ------------------------------------------------------------------ ranges, validated in one place


@pytest.mark.parametrize("flag, value", [("--threshold", "5"), ("--consistency-weight", "-10"), ("--lr", "nan"),
                                         ("--ema-decay", "1.5"), ("--synthetic-ratio", "2")])
def test_out_of_range_flag(tmp_path, capsys, flag, value):
    one_line_error(capsys, main(TRAIN + ["--out", str(tmp_path / "r"), flag, value]), flag)
    assert not (tmp_path / "r").exists()


def test_gan_train_lr_nan(tmp_path, capsys):
    one_line_error(capsys, gan_main(GAN_TRAIN + ["--out", str(tmp_path / "g"), "--lr", "nan"]), "--lr")


def test_gan_divergence_stops_the_run(tmp_path, capsys):
    one_line_error(capsys, gan_main(GAN_TRAIN + ["--out", str(tmp_path / "g"), "--lr", "1e6"]), "diverged")


# ------------------------------------------------------------------ outputs the system refuses


def test_train_out_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    one_line_error(capsys, main(TRAIN + ["--out", str(tmp_path / "f")]), "is a file")


def test_make_phantoms_out_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    one_line_error(capsys, main(["make-phantoms", "--n", "4", "--size", "32", "--out", str(tmp_path / "f")]),
                   str(tmp_path / "f"))


def test_gan_train_out_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    one_line_error(capsys, gan_main(GAN_TRAIN + ["--out", str(tmp_path / "f")]), "is a file")


def test_ablate_out_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    code = main(["ablate", "--profile", "tiny", "--methods", "supervised", "--fractions", "0.5", "--seeds", "0",
                 "--no-full-reference", "--device", "cpu", "--out", str(tmp_path / "f")])
    one_line_error(capsys, code, str(tmp_path / "f"))


def test_predict_out_is_a_file(finished_run, tmp_path, capsys):
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(images / "a.png")
    (tmp_path / "f").write_text("x")
    code = main(["predict", "--run", str(finished_run), "--input", str(images), "--out", str(tmp_path / "f"),
                 "--device", "cpu"])
    one_line_error(capsys, code, str(tmp_path / "f"))


def test_train_out_unwritable(capsys):
    one_line_error(capsys, main(TRAIN + ["--out", "/sys/medseg_lab_test/run"]), "/sys/medseg_lab_test")


def test_disk_full_while_saving_is_one_line_and_keeps_earlier_files(tmp_path):
    """A file-size limit makes the first checkpoint write fail as a full disk would."""
    out = tmp_path / "full"

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    proc = subprocess.run([sys.executable, "-m", "ssl_seg.cli", *TRAIN, "--out", str(out)], capture_output=True,
                          text=True, env=env(), cwd=ROOT, preexec_fn=small_files, timeout=120)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1 and err[0].startswith("error: "), proc.stderr
    assert ".pt" in err[0] and "intact" in err[0]
    assert json.loads((out / "config.json").read_text())["train"]["iterations"] == 4
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


# ------------------------------------------------------------------ grids are checked whole, up front


@pytest.mark.parametrize("flags, expected", [
    (["--methods", "supervised", "magic"], "--method magic"),
    (["--backbones", "unet", "resnet9000"], "--backbone resnet9000"),
    (["--methods", "supervised", "--iterations", "0"], "--iterations 0"),
])
def test_ablate_checks_every_cell_before_the_first(tmp_path, capsys, flags, expected):
    code = main(["ablate", "--profile", "tiny", "--fractions", "0.5", "--seeds", "0", "--device", "cpu",
                 "--out", str(tmp_path / "grid"), *flags])
    one_line_error(capsys, code, expected)
    assert not (tmp_path / "grid" / "runs").exists()


@pytest.mark.parametrize("flags, expected", [
    (["--schedules", "constant", "zigzag"], "--ratio-schedule zigzag"),
    (["--ratios", "0", "1.5"], "--synthetic-ratio 1.5"),
])
def test_sweep_checks_every_cell_before_the_first(tmp_path, capsys, flags, expected):
    syn = tmp_path / "syn"
    assert main(["make-phantoms", "--n", "8", "--size", "32", "--out", str(syn)]) == 0
    capsys.readouterr()
    code = main(["sweep", "--profile", "tiny", "--fractions", "0.5", "--seeds", "0", "--device", "cpu",
                 "--synthetic", str(syn), "--out", str(tmp_path / "grid"), *flags])
    one_line_error(capsys, code, expected)
    assert not (tmp_path / "grid" / "runs").exists()


# ------------------------------------------------------------------ configs store absolute DATA paths


def test_run_config_stores_absolute_data_path(tmp_path, monkeypatch):
    assert main(["make-phantoms", "--n", "12", "--size", "32", "--out", str(tmp_path / "d")]) == 0
    monkeypatch.chdir(tmp_path)
    argv = [a if a != DATA else "d/phantom_cardiac.h5" for a in TRAIN]
    assert main(argv + ["--out", "r", "--iterations", "2"]) == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["data"]["data"] == str(tmp_path / "d" / "phantom_cardiac.h5")


def test_gan_config_stores_absolute_data_path(tmp_path, monkeypatch):
    assert main(["make-phantoms", "--n", "12", "--size", "32", "--out", str(tmp_path / "d")]) == 0
    monkeypatch.chdir(tmp_path)
    argv = [a if a != DATA else "d/phantom_cardiac.h5" for a in GAN_TRAIN]
    assert gan_main(argv + ["--out", "g", "--labeled-fraction", "0.5"]) == 0
    assert json.loads((tmp_path / "g" / "config.json").read_text())["data"] == str(tmp_path / "d" / "phantom_cardiac.h5")
