"""Command-line behaviour: user errors end with exit code 2 and one line naming the flag or file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ssl_seg.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _fails(capsys, argv: list[str], expected: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and expected in err[0], err[0]


BASE = ["train", "--iterations", "2", "--batch-size", "2", "--patch-size", "32", "--device", "cpu",
        "--base-channels", "4", "--no-progress"]


@pytest.mark.parametrize("extra, expected", [
    (["--data", "/nonexistent/folder"], "/nonexistent/folder"),
    (["--data", "phantom:cardiac?n=24&size=32", "--backbone", "resnet9000"], "unet"),
    (["--data", "phantom:cardiac?n=24&size=32", "--method", "magic"], "mean-teacher"),
    (["--data", "phantom:nope"], "cardiac"),
    (["--data", "phantom:cardiac?n=24&size=32", "--labeled-fraction", "0.001"], "labeled"),
    (["--data", "phantom:cardiac?n=24&size=32", "--labeled-fraction", "1.5"], "--labeled-fraction"),
    (["--data", "phantom:cardiac?n=24&size=32", "--patch-size", "64", "--no-pad"], "--patch-size"),
    (["--data", "phantom:cardiac?n=24&size=32", "--optimizer", "lbfgs"], "--optimizer"),
    (["--data", "phantom:cardiac?n=24&size=32", "--rampup-fraction", "1.5"], "--rampup-fraction"),
    (["--data", "phantom:cardiac?n=24&size=32", "--split-file", "/nope/split.json"], "/nope/split.json"),
])
def test_train_user_errors(capsys, tmp_path, extra, expected):
    argv = BASE + ["--out", str(tmp_path / "r")] + extra
    if "--patch-size" in extra:
        argv = [a for i, a in enumerate(argv) if not (a == "--patch-size" or argv[i - 1] == "--patch-size")] + extra
    _fails(capsys, argv, expected)


def test_corrupt_hdf5_is_one_line(capsys, tmp_path):
    bad = tmp_path / "broken.h5"
    bad.write_bytes(b"this is not an HDF5 file at all" * 10)
    _fails(capsys, BASE + ["--out", str(tmp_path / "r"), "--data", str(bad)], "broken.h5")


def test_evaluate_missing_run(capsys, tmp_path):
    _fails(capsys, ["evaluate", "--run", str(tmp_path / "nothing")], "nothing")


def test_resume_without_run(capsys, tmp_path):
    _fails(capsys, BASE + ["--data", "phantom:cardiac?n=24&size=32", "--out", str(tmp_path / "r"), "--resume"],
           "last.pt")


def test_make_phantoms_then_train_from_hdf5(tmp_path, capsys):
    assert main(["make-phantoms", "--task", "vessel", "--n", "12", "--size", "32", "--out", str(tmp_path)]) == 0
    h5 = tmp_path / "phantom_vessel.h5"
    assert h5.is_file()
    assert main(BASE + ["--data", str(h5), "--labeled-fraction", "0.5", "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "result.json").is_file()


def test_make_volume_phantoms_as_nifti_then_train_on_slices(tmp_path, capsys):
    argv = ["make-phantoms", "--task", "lesion_volume", "--n", "6", "--size", "32", "--depth", "8",
            "--spacing", "2.5,1,1", "--out", str(tmp_path)]
    assert main(argv) == 0
    folder = tmp_path / "phantom_lesion_volume"
    assert "6 8x32x32 lesion_volume volumes" in capsys.readouterr().out
    assert len(list((folder / "imagesTr").glob("*.nii.gz"))) == 6 and (folder / "dataset.json").is_file()
    assert main(BASE + ["--data", str(folder), "--labeled-cases", "1", "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "result.json").is_file()
    _fails(capsys, argv, "already exists")  # a second write is refused, nothing overwritten
    _fails(capsys, [*argv[:-4], "--spacing", "2.5,1", "--out", str(tmp_path / "other")], "--spacing")


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "ssl_seg.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    for command in ("train", "evaluate", "predict", "make-phantoms"):
        assert command in out.stdout
