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
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan_aug.cli import main as gan_main
from ssl_seg.engine import locks
from ssl_seg.errors import UserError
from ssl_seg.cli import main
from ssl_seg.engine.trainer import Trainer

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
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from ssl_seg.engine import locks; "
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


def test_a_forked_child_of_the_holder_does_not_keep_its_lock(tmp_path):
    """Before: after kill -9 of a run with DataLoader workers, the orphaned workers' copy of the lock descriptor kept
    the flock, and --resume was refused for seconds naming the dead pid."""
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import os, time; from ssl_seg.engine import locks; "
                               f"locks.acquire({str(out)!r})\n"
                               "if os.fork() == 0:\n"
                               f"    open({str(tmp_path / 'child')!r}, 'w').close(); time.sleep(60); os._exit(0)\n"
                               "print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env=env(), start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for _ in range(500):  # the child is past its fork handlers before the holder is killed
            if (tmp_path / "child").exists():
                break
            time.sleep(0.01)
        assert locks.is_locked(out)
        holder.send_signal(signal.SIGKILL)  # the holder dies; its forked child lives on
        holder.wait()
        assert not locks.is_locked(out)
        with locks.locked(out):
            pass
    finally:
        os.killpg(holder.pid, signal.SIGKILL)


def test_grid_cell_locked_by_another_process_is_left_to_it(tmp_path, caplog):
    from ssl_seg.experiments import grid
    from ssl_seg.experiments.ablation import ablation_runs
    from ssl_seg.experiments.profiles import base_config, profile

    runs = ablation_runs(base_config("phantom:cardiac", profile("tiny"), "cpu"), ["supervised"], [0.5], [], [0],
                         ["unet"], full_reference=False)
    cell = tmp_path / "runs" / runs[0].name
    holder = subprocess.Popen([sys.executable, "-c", "import time; from ssl_seg.engine import locks; "
                               f"locks.acquire({str(cell)!r}); print('locked', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env=env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert grid.run_grid(runs, tmp_path, progress=False) == []
        assert any(r.levelname == "WARNING" and "left to it" in r.getMessage() for r in caplog.records)
        assert not (cell / "last.pt").exists()
    finally:
        holder.kill()
        holder.wait()


def _no_flock(monkeypatch) -> None:
    """A file system without flock (some NFS/Lustre mounts): the O_EXCL lock file takes over."""
    import errno
    import fcntl

    def refuse(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)


def test_without_flock_a_live_holder_still_blocks(tmp_path, monkeypatch):
    _no_flock(monkeypatch)
    path = locks.acquire(tmp_path / "run")
    try:
        code = subprocess.run([sys.executable, "-c", "import errno, fcntl, sys\n"
                               "def refuse(fd, op): raise OSError(errno.ENOLCK, 'No locks available')\n"
                               "fcntl.flock = refuse\n"
                               "from ssl_seg.engine import locks\n"
                               f"try: locks.acquire({str(tmp_path / 'run')!r})\n"
                               "except locks.Locked as e: print(e); sys.exit(3)"],
                              capture_output=True, text=True, env=env())
        assert code.returncode == 3 and f"pid {os.getpid()}" in code.stdout
    finally:
        locks.release(path)


def test_without_flock_a_lock_left_by_kill_9_is_taken_over(tmp_path, monkeypatch):
    _no_flock(monkeypatch)
    dead = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    run = tmp_path / "run"
    run.mkdir()
    import socket

    (run / locks.LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 0}))
    with locks.locked(run):
        assert json.loads((run / locks.LOCK_NAME).read_text())["pid"] == os.getpid()
    (run / locks.LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": 0,
                                                   "proc_start": "1"}))  # our pid, but reused: another start
    with locks.locked(run):
        assert json.loads((run / locks.LOCK_NAME).read_text())["proc_start"] != "1"


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
                                         ("--ema-decay", "1.5"), ("--synthetic-ratio", "2"),
                                         ("--pretrain-fraction", "1.5"), ("--labeled-batch-size", "0"),
                                         ("--weight-ema", "1"), ("--weight-ema", "0")])
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


def test_make_phantoms_never_replaces_an_existing_h5(tmp_path, capsys):
    existing = tmp_path / "mine.h5"
    existing.write_bytes(b"a user's file")
    one_line_error(capsys, main(["make-phantoms", "--n", "4", "--size", "32", "--out", str(existing)]),
                   "already exists")
    assert existing.read_bytes() == b"a user's file"


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


@pytest.mark.parametrize(("given", "out"), [("data", "data"), ("data", "data/masks"), ("data/images", "data/images"),
                                            ("data/images", "data/masks"), ("data/images", "data/images/sub")])
def test_predict_never_writes_into_its_input_or_its_masks(finished_run, tmp_path, capsys, given, out):
    data = tmp_path / "data"
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True)
        Image.fromarray(np.full((32, 32), 7 if sub == "images" else 1, np.uint8)).save(data / sub / "a.png")
    before = {p: p.read_bytes() for p in data.rglob("*.png")}
    code = main(["predict", "--run", str(finished_run), "--input", str(tmp_path / given), "--out", str(tmp_path / out),
                 "--device", "cpu"])
    one_line_error(capsys, code, "choose a folder outside it")
    assert {p: p.read_bytes() for p in data.rglob("*.png")} == before


def test_predict_refuses_two_images_of_one_name(finished_run, tmp_path, capsys):
    images = tmp_path / "in"
    images.mkdir()
    for suffix in (".png", ".jpg", ".tif"):
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(images / f"a{suffix}")
    code = main(["predict", "--run", str(finished_run), "--input", str(images), "--out", str(tmp_path / "o"),
                 "--device", "cpu"])
    one_line_error(capsys, code, "a.jpg, a.png, a.tif")
    assert not (tmp_path / "o").exists()


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


# ------------------------------------------------------------------ 4. mask values read strictly


def _folder(root: Path, masks: list[np.ndarray], images: list[np.ndarray] | None = None, mask_format: str = "PNG"
            ) -> Path:
    """DIR/images/<i>.png + DIR/masks/<i>.png (masks optionally passed through JPEG first)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, mask in enumerate(masks):
        image = images[i] if images is not None else (mask * 40 + 20).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"s{i:02d}.png")
        if mask_format == "JPEG":
            import io

            buf = io.BytesIO()
            Image.fromarray(mask.astype(np.uint8)).save(buf, format="JPEG", quality=75)
            mask = np.asarray(Image.open(buf))
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"s{i:02d}.png")
    return root


def _phantom_masks(n: int = 8, task: str = "cardiac") -> list[np.ndarray]:
    from ssl_seg.data.phantoms import PhantomSource

    src = PhantomSource(task, n=n, size=32)
    return [src.load(i).mask for i in range(n)]


def test_near_binary_masks_are_refused(tmp_path, capsys):
    masks = [np.where(m > 0, 254, 0) for m in _phantom_masks()]
    for m in masks:
        m[0, :4] = 128  # anti-aliased edge pixels
    data = _folder(tmp_path / "d", masks)
    line = one_line_error(capsys, main(TRAIN + ["--data", str(data), "--out", str(tmp_path / "r")]), "[0, 128, 254]")
    assert "threshold" in line and not (tmp_path / "r").exists()


def test_jpeg_compressed_index_masks_are_refused(tmp_path, capsys):
    data = _folder(tmp_path / "d", _phantom_masks(), mask_format="JPEG")
    values = np.unique(np.concatenate([np.asarray(Image.open(p)).ravel() for p in (data / "masks").iterdir()]))
    assert values.max() > 3  # the compression made values no class has
    line = one_line_error(capsys, main(TRAIN + ["--data", str(data), "--out", str(tmp_path / "r")]), "JPEG")
    assert "PNG" in line


def test_image_like_masks_are_refused(tmp_path, capsys):
    ramp = np.tile(np.arange(64, dtype=np.uint8), (32, 1))[:, :32]
    data = _folder(tmp_path / "d", [ramp + 32 * (i % 2) for i in range(4)])
    one_line_error(capsys, main(TRAIN + ["--data", str(data), "--out", str(tmp_path / "r")]), "look like images")


def test_stated_classes_name_the_classes(tmp_path):
    data = _folder(tmp_path / "d", _phantom_masks())
    (data / "classes.json").write_text(json.dumps({"classes": ["background", "rv", "myo", "lv"]}))
    from ssl_seg.data.sources import open_source

    assert open_source(str(data)).class_names == ["background", "rv", "myo", "lv"]


def test_12_bit_values_in_16_bit_images_are_scaled_by_their_range_with_a_note(tmp_path, capsys):
    masks = _phantom_masks()
    images = [(m * 1000 + 95).astype(np.uint16) for m in masks]  # at most 3095: a 12-bit range
    data = _folder(tmp_path / "d", masks, images)
    from ssl_seg.data.sources import open_source

    src = open_source(str(data))
    assert max(src.load(i).image.max() for i in range(len(src))) == pytest.approx(3095 / 4095)
    assert main(TRAIN + ["--data", str(data), "--out", str(tmp_path / "r"), "--iterations", "2"]) == 0
    assert "4095" in capsys.readouterr().err
    assert "4095" in json.loads((tmp_path / "r" / "result.json").read_text())["data_notes"][0]


def test_truncated_image_is_found_when_the_data_is_opened(tmp_path, capsys):
    data = _folder(tmp_path / "d", _phantom_masks())
    last = data / "images" / "s07.png"
    last.write_bytes(last.read_bytes()[:-40])
    one_line_error(capsys, main(TRAIN + ["--data", str(data), "--out", str(tmp_path / "r")]), "s07.png: the image file is truncated")
    assert not (tmp_path / "r").exists()


def test_nan_pixels_are_a_data_problem(tmp_path, capsys):
    import h5py

    assert main(["make-phantoms", "--n", "12", "--size", "32", "--out", str(tmp_path)]) == 0
    with h5py.File(tmp_path / "phantom_cardiac.h5", "r+") as f:
        f["images"][:, 0, 5, 5] = np.nan
    code = main(TRAIN + ["--data", str(tmp_path / "phantom_cardiac.h5"), "--out", str(tmp_path / "r")])
    line = one_line_error(capsys, code, "NaN")
    assert "data problem" in line and "--lr" not in line


# ------------------------------------------------------------------ 5. synthetic data of another task


@pytest.fixture(scope="module")
def gan_dir(tmp_path_factory) -> Path:
    """A 2-step GAN on cardiac phantoms."""
    out = tmp_path_factory.mktemp("gan") / "g"
    assert gan_main(GAN_TRAIN + ["--out", str(out)]) == 0
    return out


def test_synthetic_pairs_of_another_task_are_refused(tmp_path, capsys):
    assert main(["make-phantoms", "--task", "lesion", "--n", "8", "--size", "32", "--out", str(tmp_path)]) == 0
    code = main(TRAIN + ["--synthetic", str(tmp_path / "phantom_lesion.h5"), "--synthetic-ratio", "0.5",
                         "--out", str(tmp_path / "r")])
    one_line_error(capsys, code, "another task")


def test_synthesize_mask_data_of_another_task_is_refused(gan_dir, tmp_path, capsys):
    code = gan_main(["synthesize", "--checkpoint", str(gan_dir), "--n", "4", "--out", str(tmp_path / "syn"),
                     "--mask-data", "phantom:lesion?n=8&size=32", "--device", "cpu", "--no-progress"])
    one_line_error(capsys, code, "--mask-data")
    assert not (tmp_path / "syn").exists()


# ------------------------------------------------------------------ 3. --overwrite replaces only synthesize's output


def _synthesize(gan_dir: Path, out: Path, *extra: str) -> int:
    return gan_main(["synthesize", "--checkpoint", str(gan_dir), "--n", "4", "--batch-size", "4", "--out", str(out),
                     "--device", "cpu", "--no-progress", *extra])


def test_overwrite_refuses_a_folder_synthesize_did_not_make(gan_dir, tmp_path, capsys):
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("years of work")
    one_line_error(capsys, _synthesize(gan_dir, precious, "--overwrite"), "not a dataset written by gan-aug")
    assert (precious / "chapter1.tex").read_text() == "years of work"


def test_overwrite_refuses_a_file(gan_dir, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    one_line_error(capsys, _synthesize(gan_dir, tmp_path / "notes.txt", "--overwrite"), "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces_synthesize_output(gan_dir, tmp_path):
    assert _synthesize(gan_dir, tmp_path / "syn") == 0
    assert _synthesize(gan_dir, tmp_path / "syn", "--overwrite", "--seed", "1") == 0
    assert json.loads((tmp_path / "syn" / "manifest.json").read_text())["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]


@pytest.mark.parametrize("where", ["notes.txt", "images/mine.png"])
def test_overwrite_names_and_keeps_a_users_file_inside_the_output(gan_dir, tmp_path, capsys, where):
    out = tmp_path / "syn"
    assert _synthesize(gan_dir, out, "--format", "png") == 0
    capsys.readouterr()
    (out / where).parent.mkdir(exist_ok=True)
    (out / where).write_text("mine")
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    one_line_error(capsys, _synthesize(gan_dir, out, "--format", "png", "--overwrite", "--seed", "1"), where)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before and (out / where).read_text() == "mine"


def test_synthesize_folder_follows_the_umask(gan_dir, tmp_path):
    old = os.umask(0o022)
    try:
        assert _synthesize(gan_dir, tmp_path / "syn") == 0
    finally:
        os.umask(old)
    assert (tmp_path / "syn").stat().st_mode & 0o777 == 0o755


def test_killed_synthesize_temp_folder_is_removed_by_the_next_run(gan_dir, tmp_path, capsys):
    from gan_aug.synthesize import MARK

    out = tmp_path / "syn"
    writer = subprocess.Popen([sys.executable, "-c", "import time; from pathlib import Path; "
                               "from gan_aug.synthesize import atomic_dir\n"
                               f"with atomic_dir(Path({str(out)!r})) as tmp:\n"
                               "    (tmp / 'synthetic.h5').write_bytes(b'half'); print(tmp, flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, env=env())
    leftover = Path(writer.stdout.readline().strip())
    foreign = tmp_path / "syn.tmp-mine"  # the same name pattern, but not synthesize's: kept
    foreign.mkdir()
    try:  # a second synthesize to the same --out while the first writes: refused, the first's folder kept
        one_line_error(capsys, _synthesize(gan_dir, out), "another gan-aug synthesize is writing it now")
        assert leftover.is_dir() and not out.exists()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert _synthesize(gan_dir, out) == 0  # the writer is dead: its folder is removed, this run writes --out
    assert not leftover.exists() and foreign.exists()
    assert not (out / MARK).exists() and not (out / locks.LOCK_NAME).exists()


# ------------------------------------------------------------------ more outputs the system refuses


def test_make_phantoms_out_unwritable(capsys):
    code = main(["make-phantoms", "--n", "4", "--size", "32", "--out", "/sys/medseg_lab_test"])
    one_line_error(capsys, code, "/sys/medseg_lab_test")


def test_synthesize_out_unwritable(gan_dir, capsys):
    one_line_error(capsys, _synthesize(gan_dir, Path("/sys/medseg_lab_test/syn")), "/sys/medseg_lab_test")


def test_predict_out_unwritable(finished_run, tmp_path, capsys):
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(images / "a.png")
    code = main(["predict", "--run", str(finished_run), "--input", str(images), "--out", "/sys/medseg_lab_test",
                 "--device", "cpu"])
    one_line_error(capsys, code, "/sys/medseg_lab_test")


def test_sweep_with_train_gan_checks_the_grid_before_training_gans(tmp_path, capsys):
    code = main(["sweep", "--profile", "tiny", "--fractions", "0.5", "--seeds", "0", "--device", "cpu",
                 "--train-gan", "--schedules", "zigzag", "--ratio-end", "0.5", "--out", str(tmp_path / "grid")])
    one_line_error(capsys, code, "--ratio-schedule zigzag")
    assert not (tmp_path / "grid" / "synthetic").exists()


# ------------------------------------------------------------------ split files name cases through --group-by


def _patient_slices(tmp_path: Path) -> Path:
    """A folder of 4 patients x 3 phantom slices named patientNNN_sliceK."""
    data = tmp_path / "slices"
    _folder(data, _phantom_masks(12))
    for i, path in enumerate(sorted((data / "images").iterdir())):
        for folder in ("images", "masks"):
            (data / folder / path.name).rename(data / folder / f"patient{i // 3:03d}_slice{i % 3}.png")
    return data


def test_split_file_of_patient_ids_works_on_a_folder_of_slices_with_group_by(tmp_path):
    data = _patient_slices(tmp_path)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"labeled": ["patient000"], "unlabeled": ["patient001"], "val": ["patient002"],
                                 "test": ["patient003"]}))
    argv = [a for a in TRAIN if a not in ("--labeled-fraction", "0.5")]
    assert main(argv + ["--data", str(data), "--group-by", "^(patient[0-9]+)", "--split-file", str(split),
                        "--iterations", "2", "--out", str(tmp_path / "r")]) == 0
    saved = json.loads((tmp_path / "r" / "split.json").read_text())
    assert saved["labeled"] == [f"patient000_slice{k}" for k in range(3)]
    assert saved["test"] == [f"patient003_slice{k}" for k in range(3)]


def test_split_file_that_puts_one_patient_in_labeled_and_test_is_refused(tmp_path, capsys):
    data = _patient_slices(tmp_path)
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"labeled": ["patient000_slice0", "patient000_slice1"], "unlabeled": ["patient001"],
                                 "val": ["patient002"], "test": ["patient003", "patient000_slice2"]}))
    argv = [a for a in TRAIN if a not in ("--labeled-fraction", "0.5")]
    one_line_error(capsys, main(argv + ["--data", str(data), "--group-by", "^(patient[0-9]+)", "--split-file",
                                        str(split), "--out", str(tmp_path / "r")]),
                   "case 'patient000' has samples in both train and test")


def test_gan_resume_through_the_library_with_other_settings_is_refused_before_writing(gan_dir, tmp_path):
    from gan_aug.config import GanConfig
    from gan_aug.train import train_gan
    from ssl_seg.errors import UserError

    run = tmp_path / "g"
    shutil.copytree(gan_dir, run)
    before = _snapshot(run)
    changed = GanConfig.load(run / "config.json")
    changed.out, changed.ngf, changed.iterations = str(run), 16, 4
    with pytest.raises(UserError, match="ngf"):
        train_gan(changed, resume=True)
    assert _snapshot(run) == before


def test_evaluate_run_folder_unwritable(finished_run, capsys, monkeypatch):
    """Root ignores file permissions, so the refusal a read-only run folder gives is raised where it would be."""
    import errno

    from ssl_seg import io_utils

    def read_only(final):
        raise PermissionError(errno.EACCES, "Permission denied", str(final))

    monkeypatch.setattr(io_utils, "atomic_path", read_only)
    code = main(["evaluate", "--run", str(finished_run), "--device", "cpu"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and "Traceback" not in err and len(errors) == 1  # after evaluate's progress bar
    assert errors[0].startswith(f"error: {finished_run}/") and "Permission denied" in errors[0]


@pytest.mark.parametrize("flock", [True, False])
def test_a_lock_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path, monkeypatch, flock):
    if not flock:
        _no_flock(monkeypatch)
    target = tmp_path / "precious.txt"
    target.write_text("user data\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / locks.LOCK_NAME).symlink_to(target)
    for call in (lambda: locks.acquire(run), lambda: locks.is_locked(run)):
        with pytest.raises(UserError, match="is a symbolic link") as info:
            call()
        assert "\n" not in str(info.value)
    assert target.read_text() == "user data\n" and (run / locks.LOCK_NAME).is_symlink()


def test_train_never_starts_over_a_finished_run_or_a_users_files(tmp_path, capsys, tiny_cfg):
    from ssl_seg.engine.runner import run_training

    run = Path(run_training(tiny_cfg)["run_dir"])
    (run / "last.pt").unlink()  # a finished run without its last checkpoint
    kept = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    one_line_error(capsys, main(TRAIN + ["--out", str(run)]), "a finished run (result.json)")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text("{}")
    (mine / "result.json").write_text('{"mine": 1}')
    one_line_error(capsys, main(TRAIN + ["--out", str(mine)]), "files this package did not start as a run")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == kept
    assert (mine / "result.json").read_text() == '{"mine": 1}' and sorted(p.name for p in mine.iterdir()) == [
        "config.json", "result.json"]


def test_an_unfinished_run_without_a_checkpoint_starts_again(tmp_path, tiny_cfg):
    from ssl_seg.engine.run_directory import RUN_MARKER
    from ssl_seg.engine.runner import run_training

    run = Path(run_training(tiny_cfg)["run_dir"])
    for name in ("last.pt", "best.pt", "result.json"):  # as if killed before its first checkpoint
        (run / name).unlink(missing_ok=True)
    assert (run / RUN_MARKER).is_file()
    assert Path(run_training(tiny_cfg)["run_dir"]) == run


@pytest.mark.parametrize(("section", "field", "value", "expected"), [
    ("data", "augment", "no", "DataConfig.augment: 'no' is not of type bool"),
    ("train", "iterations", 2.5, "TrainConfig.iterations: 2.5 is not of type int"),
    ("train", "lr", True, "TrainConfig.lr: True is not of type float | None"),
    ("data", "fractions", [0.7, 0.3], "DataConfig.fractions: [0.7, 0.3] is not of type tuple[float, float, float]"),
    ("data", "synthetic", "syn.h5", "DataConfig.synthetic: 'syn.h5' is not of type list[str]"),
    ("model", "backbone", None, "ModelConfig.backbone: None is not of type str"),
])
def test_json_config_fields_are_typed(tmp_path, capsys, section, field, value, expected):
    from ssl_seg.config import RunConfig

    config = RunConfig().to_dict()
    config[section][field] = value
    (tmp_path / "c.json").write_text(json.dumps(config))
    one_line_error(capsys, main(["train", "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "r")]),
                   expected)
    assert not (tmp_path / "r").exists()


def test_gan_checkpoint_every_0_is_refused(tmp_path, capsys):
    one_line_error(capsys, gan_main(GAN_TRAIN + ["--checkpoint-every", "0", "--out", str(tmp_path / "g")]),
                   "--checkpoint-every 0: must be at least 1")


@pytest.mark.parametrize("inside", [False, True])
def test_a_named_pipe_as_data_is_refused_not_waited_on(tmp_path, capsys, inside):
    pipe = tmp_path / ("data" if inside else "") / "x.h5"
    pipe.parent.mkdir(exist_ok=True)
    os.mkfifo(pipe)
    data = pipe.parent if inside else pipe
    code = subprocess.run([sys.executable, "-m", "ssl_seg.cli", *TRAIN[:1], "--data", str(data), *TRAIN[3:],
                           "--out", str(tmp_path / "r")], capture_output=True, text=True, env=env(), timeout=120)
    assert code.returncode == 2 and code.stderr.strip().count("\n") == 0 and "error:" in code.stderr


def _h5_pairs(path: Path, edit) -> Path:
    """A valid 10-pair project HDF5 file at `path`, then `edit(h5py.File)` applied to it in place."""
    import h5py

    from ssl_seg.data.h5format import H5DatasetWriter

    rng = np.random.default_rng(0)
    with H5DatasetWriter(path, 1, 16, 16, 2, ["background", "fg"], {"by": "test"}) as w:
        w.append(rng.random((10, 1, 16, 16), dtype=np.float32), (rng.random((10, 16, 16)) > 0.5).astype(np.uint8),
                 [f"s{i}" for i in range(10)], [f"c{i}" for i in range(10)])
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


def _float_masks(f):
    masks = f["masks"][:].astype(np.float32) * 0.6
    del f["masks"]
    f.create_dataset("masks", data=masks)


def _external_images(f):
    outside = f.filename + ".outside.raw"
    data = f["images"][:]
    data.tofile(outside)
    del f["images"]
    f.create_dataset("images", shape=data.shape, dtype=data.dtype, external=[(outside, 0, data.nbytes)])


def _set(key, value):
    def edit(f):
        if key == "num_classes":
            f.attrs["num_classes"], f.attrs["class_names"] = value, json.dumps(["background"])
        else:
            f[key][...] = value  # every sample: whichever is read first is refused
    return edit


@pytest.mark.parametrize(("edit", "expected"), [
    (_float_masks, "masks are float32"),
    (_external_images, "outside the file"),
    (_set("num_classes", 1), "num_classes 1"),
    (_set("masks", 5), "has label 5"),
    (_set("images", 1.5), "out-of-[0, 1]"),
])
def test_h5_outside_the_format_contract_is_refused(tmp_path, capsys, edit, expected):
    path = _h5_pairs(tmp_path / "d.h5", edit)
    one_line_error(capsys, main(["train", "--data", str(path), *TRAIN[3:], "--patch-size", "16",
                                 "--out", str(tmp_path / "r")]), expected)


@pytest.mark.parametrize("extra", [["--seeds", "0", "0"], ["--methods", "supervised", "supervised"],
                                   ["--fractions", "0.5", "0.5"]])
def test_duplicates_in_a_grid_are_refused_before_any_cell(tmp_path, capsys, extra):
    args = {"--methods": ["supervised"], "--fractions": ["0.5"], "--seeds": ["0"]}
    args[extra[0]] = extra[1:]
    code = main(["ablate", "--profile", "tiny", "--no-full-reference", "--device", "cpu", "--out", str(tmp_path / "g"),
                 *[v for k, vs in args.items() for v in (k, *vs)]])
    one_line_error(capsys, code, "times: a seed, method")
    assert not (tmp_path / "g" / "runs").exists()


def test_a_failing_grid_cell_is_named_and_the_others_still_run(tmp_path, capsys, monkeypatch):
    from ssl_seg.experiments import grid

    real = grid.run_one

    def flaky(run, root):
        if run.name.endswith("s0"):
            raise RuntimeError("boom")
        return real(run, root)

    monkeypatch.setattr(grid, "run_one", flaky)
    code = main(["ablate", "--profile", "tiny", "--no-full-reference", "--device", "cpu", "--methods", "supervised",
                 "--fractions", "0.5", "--seeds", "0", "1", "--out", str(tmp_path / "g")])
    assert code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: grid: 1 of 2 cell(s) failed") and "s0 (RuntimeError)" in line
    assert grid.is_finished(next((tmp_path / "g" / "runs").glob("*s1")))


def test_resume_without_the_best_checkpoint_is_refused(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(TRAIN + ["--out", str(run)]) == 0
    (run / "best.pt").unlink()
    capsys.readouterr()
    one_line_error(capsys, main(TRAIN + ["--iterations", "6", "--out", str(run), "--resume"]), "best.pt")


@pytest.mark.parametrize(("extra", "expected"), [
    (["--seed", "-1"], "--seed -1: must be an integer in [0, 2**32)"),
    (["--seed", str(2**40)], "must be an integer in [0, 2**32)"),
    (["--split-seed", "-3"], "--split-seed -3"),
    (["--fractions", "nan", "0.1", "0.2"], "--fractions [nan, 0.1, 0.2]"),
    (["--patch-size", "4096"], "over twice the largest image side (32 px)"),
])
def test_seeds_fractions_and_patch_sizes_that_cannot_work_are_one_line(tmp_path, capsys, extra, expected):
    one_line_error(capsys, main(TRAIN + extra + ["--out", str(tmp_path / "r")]), expected)
    assert not (tmp_path / "r" / "last.pt").exists()


def test_malformed_postprocessing_and_grid_result_files_are_one_line(finished_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "postprocessing.json").write_text("{not json")
    images = tmp_path / "in"
    images.mkdir()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(images / "a.png")
    code = main(["predict", "--run", str(run), "--input", str(images), "--out", str(tmp_path / "o"), "--device", "cpu"])
    one_line_error(capsys, code, "postprocessing.json: not readable JSON")
    grid = tmp_path / "g"
    cell = grid / "runs" / "unet__supervised__f0.5__s0"
    cell.mkdir(parents=True)
    (cell / "result.json").write_bytes(b"\xff\xfe")
    code = main(["ablate", "--profile", "tiny", "--methods", "supervised", "--fractions", "0.5", "--seeds", "0",
                 "--no-full-reference", "--device", "cpu", "--out", str(grid)])
    one_line_error(capsys, code, "result.json: not readable JSON")


# --- names read from dataset.json, manifest.json and .list files stay inside their folder -----------------------


@pytest.mark.parametrize("name", ["../outside.nii.gz", "/etc/passwd", "imagesTr/../../x.nii.gz"])
def test_dataset_json_names_outside_the_folder_are_refused_before_opening(tmp_path, name):
    from ssl_seg.data.msd import read_index

    root = tmp_path / "Task"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "x"},
                                                   "training": [{"image": name, "label": "labelsTr/a.nii.gz"}]}))
    with pytest.raises(UserError, match="outside") as e:
        read_index(root)
    assert "dataset.json" in str(e.value) and "\n" not in str(e.value)


def test_a_synthetic_manifest_pointing_outside_its_folder_is_refused(tmp_path, capsys):
    from gan_aug.assess import load_synthetic

    syn = tmp_path / "syn"
    syn.mkdir()
    (tmp_path / "elsewhere.h5").write_bytes(b"not read")
    (syn / "manifest.json").write_text(json.dumps({"format": "hdf5", "files": {"hdf5": "../elsewhere.h5"},
                                                   "gan_config": {}}))
    with pytest.raises(UserError, match=r"names '\.\./elsewhere\.h5', which is outside"):
        load_synthetic(syn)
    (syn / "manifest.json").write_text(json.dumps({"format": "hdf5"}))
    with pytest.raises(UserError, match="not a synthesize manifest"):
        load_synthetic(syn)
    (syn / "manifest.json").write_text("{")
    with pytest.raises(UserError, match="not readable JSON"):
        load_synthetic(syn)


def test_an_ssl4mis_list_naming_a_path_is_refused(tmp_path):
    from ssl_seg.data.sample import read_name_list

    listed = tmp_path / "train_slices.list"
    listed.write_text("case1_slice0\n\ncase1_slice1\n")
    assert read_name_list(listed) == ["case1_slice0", "case1_slice1"]
    listed.write_text("case1_slice0\n../../secret\n")
    with pytest.raises(UserError, match="names '../../secret', a path"):
        read_name_list(listed)


# --- sizes the machine refuses: one line naming the size and the memory there is ---------------------------------


def test_an_allocation_the_machine_refuses_is_one_line(tmp_path, capsys):
    code = main(["make-phantoms", "--n", "2", "--size", "8000000", "--out", str(tmp_path / "big.h5")])  # 233 TiB: beyond any address space
    line = one_line_error(capsys, code, "out of memory")
    assert "GiB" in line and "--patch-size" in line and not (tmp_path / "big.h5").exists()


def test_memory_messages_of_numpy_torch_and_cuda():
    from ssl_seg.cli import memory_error_message

    torch_cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                             "memory: you tried to allocate 14400000000 bytes. Error code 12")
    assert "refused an allocation of 13.4 GiB" in memory_error_message(torch_cpu)
    cuda = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79 GiB total capacity)")
    assert "the GPU refused an allocation of 2.00 GiB" in memory_error_message(cuda)
    assert memory_error_message(MemoryError("Unable to allocate 335. GiB for an array")).count("335 GiB") == 1
    assert memory_error_message(RuntimeError("shape mismatch")) is None  # other errors stay what they are


def test_threads_beyond_the_cores_are_refused(tmp_path, capsys):
    from ssl_seg.device import cpu_cores

    code = main(["train", "--data", "phantom:cardiac?n=8&size=32", "--patch-size", "32", "--threads", "100000",
                 "--iterations", "1", "--out", str(tmp_path / "run")])
    one_line_error(capsys, code, f"may run on {cpu_cores()} core(s)")


def test_masks_that_are_all_background_are_refused(tmp_path, capsys):
    """Before: 'best val Dice 1.0000' from masks with nothing to segment."""
    for i in range(12):
        for sub, array in (("images", np.random.default_rng(i).integers(0, 255, (32, 32), np.uint8)),
                           ("masks", np.zeros((32, 32), np.uint8))):
            (tmp_path / "d" / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(tmp_path / "d" / sub / f"a{i}.png")
    code = main(["train", "--data", str(tmp_path / "d"), "--patch-size", "32", "--iterations", "1",
                 "--labeled-fraction", "0.5", "--out", str(tmp_path / "run")])
    one_line_error(capsys, code, "masks: every label is background only")


def test_executor_slurm_off_a_cluster_is_one_line(tmp_path, capsys):
    pytest.importorskip("submitit")
    if shutil.which("srun"):
        pytest.skip("this machine is a Slurm cluster")
    code = main(["ablate", "--data", "phantom:cardiac?n=12&size=32", "--methods", "supervised", "--fractions", "0.5",
                 "--seeds", "0", "--iterations", "1", "--no-full-reference", "--executor", "slurm",
                 "--out", str(tmp_path / "grid")])
    one_line_error(capsys, code, "--executor: could not submit the jobs")


def test_gan_train_never_writes_over_a_users_files(tmp_path, capsys):
    """The segmentation run's guard (RunDirectory) holds for GAN runs too."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text("my own")
    one_line_error(capsys, gan_main(GAN_TRAIN + ["--out", str(out)]), "files this package did not start as a run")
    assert (out / "config.json").read_text() == "my own"
    assert gan_main(GAN_TRAIN + ["--out", str(tmp_path / "g")]) == 0
    assert (tmp_path / "g" / ".medseg_run").is_file()
    one_line_error(capsys, gan_main(GAN_TRAIN + ["--out", str(tmp_path / "g")]), "already holds a GAN run")
