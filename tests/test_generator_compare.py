"""benchmarks/generator_compare.py: the tables from hand-made run files, a missing generator, --keep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import generator_compare


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def fake_generator(root: Path, g: str, ratio: float) -> None:
    write(root / f"probe_{g}" / "result.json", {"s_per_iteration": 0.5, "iterations": 30, "wall_time_s": 20})
    write(root / g / "result.json", {"s_per_iteration": 0.6, "iterations": 2500, "wall_time_s": 1530})
    write(root / f"{g}_syn" / "manifest.json", {"seconds": 8.0, "n": 400, "sample_steps": 50 if g == "diffusion"
                                                else None})
    write(root / f"{g}_assess" / "quality.json", {
        "fidelity": {"synthetic_dice": 0.5, "real_dice": 0.6}, "fid": {"synthetic_vs_real": 3.0, "real_vs_real": 0.4},
        "kid": {"synthetic_vs_real": 0.02, "real_vs_real": 0.0}, "memorisation": {"near_copies": 1},
        "tstr": {"synthetic_only_dice": 0.3 * ratio / 0.5, "real_only_dice": 0.6, "ratio": ratio}})


def test_tables_from_run_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    fake_generator(tmp_path, "pix2pix", 0.25)
    fake_generator(tmp_path, "diffusion", 0.5)
    assert generator_compare.main(["--root", str(tmp_path), "--keep", str(tmp_path / "kept")]) == 0
    out = capsys.readouterr().out
    assert "| pix2pix | 2500 | 0.50 | 0.60 | 25.5 | 0.0200 |" in out
    assert "| diffusion | 2500 (sample steps 50) |" in out and "| task | not run |" in out
    assert "**0.250**" in out and "**0.500**" in out and "| 0.500 (0.600) | 3.00 (0.40) |" in out
    assert (tmp_path / "kept" / "diffusion_assess" / "quality.json").is_file()
    assert generator_compare.main(["--root", str(tmp_path / "kept")]) == 0
    assert capsys.readouterr().out.count("**0.500**") == 1
    assert generator_compare.main(["--root", str(tmp_path), "--names", "diffusion"]) == 0
    out = capsys.readouterr().out
    assert "| diffusion |" in out and "pix2pix" not in out


def test_empty_root_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert generator_compare.main(["--root", str(tmp_path)]) == 2
    assert capsys.readouterr().out.count("\n") == 1
