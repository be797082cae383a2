"""The ratio sweep: grid shape and shards, paired gains, tables, --synthetic parsing, a tiny real sweep, ratio 0."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_seg.experiments import grid
from ssl_seg.experiments.profiles import base_config, profile
from ssl_seg.engine.checkpoint import load_checkpoint
from ssl_seg.cli import main
from ssl_seg.data.h5format import H5DatasetWriter
from ssl_seg.data.phantoms import PhantomSource
from ssl_seg.errors import UserError
from ssl_seg.engine.runner import run_training
from ssl_seg.experiments.stats import t_pvalue
from ssl_seg.experiments.sweep import parse_synthetic, sweep_runs
from ssl_seg.experiments.sweep_report import as_reported, paired_gains, sweep_markdown


@pytest.fixture
def synthetic_h5(tmp_path: Path) -> Path:
    """8 'synthetic' cardiac pairs of 32 px (phantoms of another seed) in the project HDF5 format."""
    source = PhantomSource("cardiac", n=8, size=32, seed=7)
    samples = [source.load(i) for i in range(len(source))]
    path = tmp_path / "syn" / "synthetic.h5"
    with H5DatasetWriter(path, 1, 32, 32, source.num_classes, source.class_names, {"test": True}) as writer:
        writer.append(np.stack([s.image for s in samples]), np.stack([s.mask for s in samples]),
                      [f"syn_{i}" for i in range(8)], [f"syn_{i}" for i in range(8)])
    return path


def test_grid_has_one_real_only_run_per_cell_and_shards_cover_it():
    base = base_config("phantom:cardiac", profile("tiny"), "cpu")
    runs = sweep_runs(base, {0.1: ["a"], 0.25: ["b"]}, [0.0, 0.5, 1.0], ["constant", "linear"], 0.2,
                      ["supervised", "mean-teacher"], [0, 1])
    # per (fraction, method, seed): real-only once + 2 constant ratios + linear from 0, 0.5 and 1 (each to 0.2)
    assert len(runs) == 2 * 2 * 2 * (1 + 2 + 3)
    names = [r.name for r in runs]
    assert len(set(names)) == len(names)
    ramp = [r for r in runs if r.tags["ratio"] == 0 and r.tags["schedule"] == "linear"]
    assert len(ramp) == 8 and all(r.cfg.data.synthetic and r.cfg.data.ratio_end == 0.2 for r in ramp)
    real_only = [r for r in runs if r.tags["ratio"] == 0 and r.tags["schedule"] == "constant"]
    cells = {(r.tags["fraction"], r.tags["method"], r.tags["seed"]) for r in real_only}
    assert len(real_only) == len(cells) == 8
    assert all(r.cfg.data.synthetic == [] and r.cfg.data.ratio_schedule == "constant" for r in real_only)
    linear = next(r for r in runs if r.tags["schedule"] == "linear" and r.tags["fraction"] == 0.25)
    assert linear.cfg.data.synthetic == ["b"] and linear.cfg.data.ratio_end == 0.2
    constant = next(r for r in runs if r.tags["schedule"] == "constant" and r.tags["ratio"] == 1.0)
    assert constant.cfg.data.ratio_end is None and constant.cfg.data.synthetic_ratio == 1.0
    ending_at_zero = sweep_runs(base, {0.1: ["a"]}, [0.0, 0.5], ["constant", "linear"], 0.0, ["supervised"], [0])
    assert sorted(r.name for r in ending_at_zero) == ["supervised__f0.1__constant__r0.5__s0",
                                                      "supervised__f0.1__constant__r0__s0",
                                                      "supervised__f0.1__linear__r0.5__s0"]
    shards = [grid.shard(runs, f"{i}/3") for i in range(3)]
    assert sorted(r.name for s in shards for r in s) == sorted(names)
    assert sum(len(s) for s in shards) == len(runs)


def _row(seed: int, ratio: float, dice: float, method: str = "supervised", val: float | None = None) -> dict:
    return {"name": f"{method}{ratio}{seed}", "method": method, "labels": "f0.1", "schedule": "constant",
            "ratio": ratio, "seed": seed, "dice": dice, "hd95": 4.0, "realised_ratio": ratio,
            "val_dice": {0.0: 0.5, 0.5: 0.6, 1.0: 0.7}[ratio] if val is None else val}


def test_paired_gain_and_table_match_hand_computed_values():
    rows = [_row(0, 0.0, 0.5), _row(1, 0.0, 0.6), _row(2, 0.0, 0.7),
            _row(0, 0.5, 0.6), _row(1, 0.5, 0.65), _row(2, 0.5, 0.9),
            _row(0, 1.0, 0.4), _row(5, 1.0, 0.9)]  # seed 5 has no real-only twin: not paired
    # ratio 0.5: differences 0.1, 0.05, 0.2 -> mean 0.11667, sample std 0.07638; t^2 = 7 with 2 dof, and the
    # two-sided p of Student's t with 2 dof is 1 - t / sqrt(t^2 + 2) = 1 - sqrt(7) / 3
    gains = paired_gains(rows, "supervised", "f0.1", "constant", 0.5)
    assert gains == {0: pytest.approx(0.1), 1: pytest.approx(0.05), 2: pytest.approx(0.2)}
    assert t_pvalue(gains.values()) == pytest.approx(1 - math.sqrt(7) / 3, rel=1e-6)
    assert paired_gains(rows, "supervised", "f0.1", "constant", 1.0) == {0: pytest.approx(-0.1)}
    assert paired_gains(rows, "unimatch", "f0.1", "constant", 0.5) == {}

    md = sweep_markdown(rows, "t")
    line = next(l for l in md.splitlines() if l.startswith("| constant | 0.5 |"))
    # test Dice 0.6, 0.65, 0.9 -> 0.7167 +- 0.1607: two significant digits of the std. Gains 0.1, 0.05, 0.2:
    # mean 0.1167, half-width t(0.975, 2) * 0.07638 / sqrt(3) = 4.3027 * 0.04410 = 0.1897 -> [-0.07, +0.31]
    assert line == ("| constant | 0.5 | 0.500 | 0.6000 +- 0.0000 | 0.72 +- 0.16 | 4.0000 +- 0.0000 | "
                    "+0.12 [-0.07, +0.31] (Holm, m = 1, n = 3; p_Holm 0.12, sign-flip p 0.25): not established | "
                    "0.118 | 3 |")  # ratio 1 has one paired seed, no p: the family is ratio 0.5 alone
    assert "| constant | 0 | 0.000 | 0.5000 +- 0.0000 | 0.60 +- 0.10 | 4.0000 +- 0.0000 | - | - | 3 |" in md
    # ratio 1 has the best validation Dice (0.7): it is the chosen (bold) cell although 0.5 is better on test
    assert "| constant | 1 | 1.000 | 0.7000 +- 0.0000 | **0.65 +- 0.35** |" in md
    assert "| -0.100 (n = 1, no interval): not established |" in md  # one paired seed: no interval
    assert "Chosen on validation: constant schedule at ratio 1; its test Dice 0.65 +- 0.35 (n = 2)." in md

    # a warmup from ratio 0 uses synthetic pairs: it is measured against the real-only runs, not counted as one
    ramp = [{**_row(s, 0.0, d), "schedule": "warmup", "name": f"w{s}"} for s, d in ((0, 0.8), (1, 0.8), (2, 0.8))]
    assert paired_gains(rows + ramp, "supervised", "f0.1", "warmup", 0.0) == pytest.approx({0: 0.3, 1: 0.2, 2: 0.1})
    assert paired_gains(rows + ramp, "supervised", "f0.1", "constant", 0.5)[2] == pytest.approx(0.2)
    ramp = [{**r, "val_dice": 0.9} for r in ramp]
    # gains 0.3, 0.2, 0.1: t = 2 sqrt(3), p = 1 - t / sqrt(t^2 + 2) = 0.0742, the smaller of a family of two: Holm
    # doubles it (0.148 > 0.118 of ratio 0.5), so its interval is at 97.5 %: 6.2053 * 0.1 / sqrt(3) = 0.358
    assert ("| warmup | 0 | 0.000 | 0.9000 +- 0.0000 | **0.8000 +- 0.0000** | 4.0000 +- 0.0000 | "
            "+0.20 [-0.16, +0.56] (Holm, m = 2, n = 3; p_Holm 0.15, sign-flip p 0.25): not established | 0.148 |") \
        in sweep_markdown(rows + ramp, "t")


def test_sweep_table_on_volume_slices_reports_per_volume_dice():
    """On slices of volumes the table reports (and pairs) the per-volume Dice that validation selects on, not the
    slice mean, where every empty slice predicted empty counts as Dice 1."""
    rows = [{**_row(s, r, 0.9), "vol_dice": v, "vol_hd95": 3.0}
            for s, r, v in ((0, 0.0, 0.2), (1, 0.0, 0.3), (2, 0.0, 0.4), (0, 0.5, 0.3), (1, 0.5, 0.3), (2, 0.5, 0.6))]
    md = sweep_markdown(rows, "t")
    assert "Per-volume 3D Dice" in md
    # gains 0.1, 0, 0.2: mean 0.1, std 0.1, half-width 4.3027 * 0.1 / sqrt(3) = 0.2484
    assert ("| constant | 0.5 | 0.500 | 0.6000 +- 0.0000 | **0.40 +- 0.17** | 3.0000 +- 0.0000 | "
            "+0.10 [-0.15, +0.35] (Holm, m = 1, n = 3; p_Holm 0.23, sign-flip p 0.5): not established |") in md
    assert "| constant | 0 | 0.000 | 0.5000 +- 0.0000 | 0.30 +- 0.10 | 3.0000 +- 0.0000 | - |" in md


def test_study_rows_on_volume_slices_carry_per_volume_dice():
    """The study's report reads 'dice': on slices of volumes as_reported puts the per-volume scores there (the slice
    mean 0.9 here would read every run as near perfect), and leaves per-image rows as they are."""
    from gan_aug.study_report import by_seed

    rows = [{**_row(s, r, 0.9), "vol_dice": v, "vol_hd95": 3.0}
            for s, r, v in ((0, 0.0, 0.2), (1, 0.0, 0.3), (2, 0.0, 0.4), (0, 0.5, 0.3), (1, 0.5, 0.3), (2, 0.5, 0.6))]
    reported = as_reported(rows)
    assert by_seed(reported, ratio=0.0) == {0: 0.2, 1: 0.3, 2: 0.4}
    assert {r["hd95"] for r in reported} == {3.0}
    assert rows[0]["dice"] == 0.9  # the caller's rows are not changed
    plain = [_row(0, 0.0, 0.9)]
    assert as_reported(plain) is plain


def test_parse_synthetic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    assert parse_synthetic([str(a), f"0.1={b}"], [0.05, 0.1]) == {0.05: [str(a)], 0.1: [str(a), str(b)]}
    with pytest.raises(UserError, match="FRACTION=DIR"):
        parse_synthetic([f"tenth={a}"], [0.1])
    with pytest.raises(UserError, match="0.2 is not among --fractions"):
        parse_synthetic([f"0.2={a}"], [0.1])
    with pytest.raises(UserError, match="not found"):
        parse_synthetic([str(tmp_path / "missing")], [0.1])


def test_tiny_sweep_end_to_end_and_resume(tmp_path, synthetic_h5, monkeypatch):
    out = tmp_path / "sweep"
    argv = ["sweep", "--data", "phantom:cardiac", "--profile", "tiny", "--synthetic", str(synthetic_h5),
            "--ratios", "0.5", "--fractions", "0.25", "--seeds", "0", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert sorted((r["ratio"], r["realised_ratio"]) for r in rows) == [("0.0", "0.0"), ("0.5", "0.5")]
    result = json.loads((out / "runs" / "supervised__f0.25__constant__r0.5__s0" / "result.json").read_text())
    assert result["synthetic_ratio_mean"] == 0.5 and result["tags"]["ratio"] == 0.5
    assert "| constant | 0.5 | 0.500 |" in (out / "summary.md").read_text()
    assert (out / "dice_vs_ratio.png").stat().st_size > 1000
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*.pt")}

    def no_training(run, root):
        raise AssertionError(f"finished run {run.name} was trained again")

    monkeypatch.setattr(grid, "run_one", no_training)
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*.pt")} == stamps
    # rebuilding the tables needs neither the synthetic data nor training
    (out / "summary.md").unlink()
    assert main(["sweep", "--summary-only", "--profile", "tiny", "--fractions", "0.25", "--out", str(out)]) == 0
    assert "| constant | 0.5 | 0.500 |" in (out / "summary.md").read_text()


def test_ratio_zero_trains_exactly_like_real_only(tiny_cfg, synthetic_h5, tmp_path):
    def final_weights(out: str, synthetic: list[str], ratio: float) -> dict[str, torch.Tensor]:
        tiny_cfg.out, tiny_cfg.train.iterations = str(tmp_path / out), 3
        tiny_cfg.data.synthetic, tiny_cfg.data.synthetic_ratio = synthetic, ratio
        run_training(tiny_cfg)
        return load_checkpoint(tmp_path / out / "last.pt")["models"]["model"]

    real = final_weights("real", [], 0.0)
    zero = final_weights("zero", [str(synthetic_h5)], 0.0)
    half = final_weights("half", [str(synthetic_h5)], 0.5)
    assert real.keys() == zero.keys()
    assert all(torch.equal(real[k], zero[k]) for k in real)
    assert not all(torch.equal(real[k], half[k]) for k in real)  # the synthetic pairs do reach the network


def _grouped_folder(root: Path) -> Path:
    """24 cardiac phantom slices of 32 px as a folder, 8 patients x 3 slices named p<k>_s<j>."""
    source = PhantomSource("cardiac", n=24, size=32, seed=3)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(len(source)):
        sample, stem = source.load(i), f"p{i // 3}_s{i % 3}"
        Image.fromarray((sample.image[0] * 255).astype(np.uint8)).save(root / "images" / f"{stem}.png")
        Image.fromarray(sample.mask.astype(np.uint8)).save(root / "masks" / f"{stem}.png")
    return root


def test_train_gan_trains_on_the_sweeps_grouped_split(tmp_path):
    """--group-by reaches the GAN: it trains on the runs' labeled pairs, not on an ungrouped split's (which would
    put validation and test patients' pairs into the GAN and its deformed masks)."""
    data, out = _grouped_folder(tmp_path / "slices"), tmp_path / "sweep"
    argv = ["sweep", "--data", str(data), "--group-by", "^(p[0-9]+)_", "--profile", "tiny", "--train-gan",
            "--fractions", "0.5", "--ratios", "0.5", "--seeds", "0", "--iterations", "2", "--device", "cpu",
            "--out", str(out)]
    assert main(argv) == 0
    gan = json.loads((out / "synthetic" / "f0.5" / "gan" / "split.json").read_text())
    run = json.loads((out / "runs" / "supervised__f0.5__constant__r0__s0" / "split.json").read_text())
    assert len(run["labeled"]) % 3 == 0  # whole patients
    assert sorted(gan["labeled"]) == sorted(run["labeled"]) and sorted(gan["test"]) == sorted(run["test"])


def test_study_trains_its_gan_on_the_grouped_split(tmp_path, monkeypatch):
    """The study hands --group-by to its GAN task too (checked by running that task)."""
    from gan_aug import study
    from ssl_seg.data.sources import open_source
    from ssl_seg.data.splits import make_split

    class Stop(Exception):
        pass

    tasks = []

    def record_and_stop(todo, *args, **kwargs):
        tasks.extend(todo)
        raise Stop

    monkeypatch.setattr(study, "run_tasks", record_and_stop)
    data = _grouped_folder(tmp_path / "slices")
    with pytest.raises(Stop):
        study.run_study(str(data), "tiny", tmp_path / "study", "cpu", "test",
                        run_flags={"data.group_by": "^(p[0-9]+)_"})
    function, args = tasks[0]
    assert function is study.synthetic_sets
    function(*args)
    gan = json.loads(next((tmp_path / "study").rglob("gan/split.json")).read_text())
    fraction = study.study_plan("tiny").sweep_fraction
    wanted = make_split(open_source(str(data)), seed=study.SPLIT_SEED, group_by="^(p[0-9]+)_",
                        labeled_fraction=fraction)
    assert sorted(gan["labeled"]) == sorted(wanted.labeled)
