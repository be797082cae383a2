"""`ssl-seg study` and the pix2pix synthesizer: plans, findings from known numbers, a tiny study end to end, resume."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

import gan_aug.provider as provider
from gan_aug.config import GanConfig
from gan_aug.study_report import best_ssl_method, chosen_ratio, findings
from gan_aug.train import train_gan
from ssl_seg.experiments import grid
from ssl_seg.cli import main
from ssl_seg.data.sources import open_source
from ssl_seg.data.splits import Split
from ssl_seg.errors import UserError
from ssl_seg.experiments.synthesis import SynthesisRequest

DATA = "phantom:cardiac?n=24&size=32"


def _low(method: str, labels: str, seed: int, dice: float, val: float) -> dict:
    return {"backbone": "unet", "method": method, "labels": labels, "seed": seed, "dice": dice, "val_dice": val,
            "n_labeled": 8}


def _sweep(method: str, ratio: float, seed: int, dice: float, val: float) -> dict:
    return {"method": method, "labels": "f0.1", "schedule": "constant", "ratio": ratio, "seed": seed, "dice": dice,
            "val_dice": val}


def test_findings_state_each_conclusion_with_its_interval():
    low = [_low("supervised", "f0.1", s, d, 0.5) for s, d in enumerate((0.50, 0.60, 0.55))]
    low += [_low("unimatch", "f0.1", s, d, 0.6) for s, d in enumerate((0.62, 0.68, 0.60))]
    low += [_low("mean-teacher", "f0.1", s, d, 0.7) for s, d in enumerate((0.60, 0.70, 0.66))]
    low += [_low("supervised", "f1", 0, 0.80, 0.8)]
    sweep = [_sweep("supervised", 0.0, 0, 0.50, 0.60), _sweep("supervised", 0.0, 1, 0.60, 0.60),
             _sweep("supervised", 0.25, 0, 0.70, 0.65), _sweep("supervised", 0.25, 1, 0.75, 0.65),
             _sweep("supervised", 0.5, 0, 0.58, 0.70), _sweep("supervised", 0.5, 1, 0.61, 0.70)]
    oracle = [_sweep("supervised", 0.5, 0, 0.80, 0.9), _sweep("supervised", 0.5, 1, 0.82, 0.9)]
    # chosen on validation: ratio 0.5 (val 0.70) although 0.25 is better on test; mean-teacher (val 0.7)
    assert chosen_ratio(sweep, "supervised", "f0.1") == 0.5
    assert best_ssl_method(low, "f0.1") == "mean-teacher"
    text = "\n".join(findings(low, sweep, oracle, "f0.1", {"ratio": 0.5, "mask_source": "deform"}))
    # five gains, Holm over them. Raw two-sided t p: mean-teacher (0.10, 0.10, 0.11; t = 31.0, 2 dof) 0.00104,
    # oracle - deform (0.22, 0.21; t = 43, 1 dof) 0.0148, unimatch (0.12, 0.08, 0.05; t = 4.11) 0.0544, oracle
    # (0.30, 0.22; t = 6.5) 0.0972, synthetic (0.08, 0.01; t = 1.29) 0.421. Holm: 5 x 0.00104 = 0.0052,
    # 4 x 0.0148 = 0.059, 3 x 0.0544 = 0.163, 2 x 0.0972 = 0.194, 0.421. Mean-teacher's interval at 1 - 0.05 / 5:
    # t(0.995, 2) 9.925 * 0.005774 / sqrt 3 = 0.0331 -> [+0.070, +0.136]
    assert "supervised test Dice 0.550 +- 0.050 (n = 3)" in text
    assert ("mean-teacher - supervised: +0.103 [+0.070, +0.136] (Holm, m = 5, n = 3; p_Holm 0.0052, sign-flip p "
            "0.25): established.") in text
    assert "unimatch - supervised: +0.08 [-0.07, +0.24] (Holm, m = 5, n = 3; p_Holm 0.16" in text
    assert "Best SSL method on validation: mean-teacher." in text
    assert "Full-label supervised reference: test Dice 0.800 (n = 1)." in text
    assert "ratio 0.5 chosen on validation (validation Dice 0.700, above real only's 0.600)" in text
    assert "test Dice gain over real only: +0.04 [-0.40, +0.49] (Holm, m = 5, n = 2; p_Holm 0.42" in text
    # established alone (95 %: [+0.151, +0.279]) but not in the family of five: the correction withdraws it
    assert "oracle minus `deform` masks +0.22 [-0.04, +0.47] (Holm, m = 5, n = 2; p_Holm 0.059, sign-flip p 0.5): " \
           "not established" in text
    assert "+- 0.000" not in text


def test_no_default_mask_source_is_the_phantom_oracle():
    import argparse
    import inspect

    from gan_aug.cli import build_parser
    from gan_aug.masks import DEFAULT_MASK_SOURCE
    from gan_aug.synthesize import synthesize
    from ssl_seg.experiments.sweep import add_sweep_args

    assert DEFAULT_MASK_SOURCE == "deform"
    defaults = [SynthesisRequest(DATA, 0.1, 0, Path("o"), "tiny", "cpu").mask_source,
                inspect.signature(synthesize).parameters["mask_source"].default]
    defaults.append(build_parser().parse_args(["synthesize", "--checkpoint", "g", "--n", "1", "--out", "o"]).mask_source)
    sweep = argparse.ArgumentParser()
    add_sweep_args(sweep)
    defaults.append(sweep.parse_args(["--out", "o"]).mask_source)
    assert defaults == ["deform"] * 4


def test_provider_resumes_a_killed_gan_and_refuses_other_settings(tmp_path, monkeypatch):
    wanted = provider.gan_config(DATA, 0.25, 0, tmp_path / "gan", "tiny", "cpu")
    train_gan(GanConfig(**{**wanted.to_dict(), "iterations": 2}))  # stands for a run killed after 2 of 4 steps
    calls = []
    real = provider.train_gan
    monkeypatch.setattr(provider, "train_gan", lambda cfg, resume: (calls.append(resume), real(cfg, resume))[1])
    request = SynthesisRequest(DATA, 0.25, 0, tmp_path, "tiny", "cpu", n=6)
    path = provider.train_and_synthesize(request)
    assert calls == [True] and json.loads((tmp_path / "gan" / "result.json").read_text())["iterations"] == 4
    assert path == tmp_path / "synthetic_deform" / "synthetic.h5" and len(open_source(str(path))) == 6
    # phantom data, yet the masks come from the labeled masks: the phantom generator is an oracle
    assert json.loads((path.parent / "manifest.json").read_text())["mask_source"] == "deform"
    assert provider.train_and_synthesize(request) == path and calls == [True]
    with pytest.raises(UserError, match="other settings"):
        provider.train_and_synthesize(dataclasses.replace(request, split_seed=1))  # another split seed


def test_tiny_study_end_to_end_then_resume_redoes_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "study"
    argv = ["study", "--profile", "tiny", "--out", str(out), "--device", "cpu", "--workers", "2"]  # a spawned pool
    assert main(argv) == 0
    report = (out / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert links and all((out / link).exists() for link in links), [l for l in links if not (out / l).exists()]
    for artefact in ("low_label/summary.md", "low_label/dice_vs_labels.png", "low_label/gap_recovery.png",
                     "ratio_sweep/dice_vs_ratio.png", "synthetic/f0.25/synthetic_deform/samples.png",
                     "synthetic/f0.25/synthetic_deform/synthetic.h5", "synthetic/f0.25/gan/curves.png", "study.json"):
        assert f"]({artefact})" in report
    # what a person can trust: no machine paths, no spread claimed from one seed, n stated, the oracle labelled
    assert str(tmp_path) not in report and not re.search(r"(^|[\s(`'\"])/(tmp|home|work|Users|root)/", report)
    assert "--out OUT" in report and "+- 0.000" not in report and "(n = 1" in report
    assert "| supervised | f0.25 |" in report and "| supervised | deform | 0.5 (chosen on validation) |" in report
    assert "Oracle upper bound, not a result" in report and "| supervised | phantom (oracle) | 0.5 |" in report
    study = json.loads((out / "study.json").read_text())
    assert study["profile"] == "tiny" and study["data"] == DATA
    decisions = study["decisions"]
    assert decisions["ratio"] == 0.5 and decisions["mask_source"] == "deform"
    assert decisions["ssl_with_synthetic"] == {"method": "mean-teacher", "ratio": 0.5}
    manifest = json.loads((out / study["synthetic"]["deform"]).parent.joinpath("manifest.json").read_text())
    assert manifest["mask_source"] == "deform" and "phantom" in study["synthetic"]
    # the GAN saw exactly the labeled pairs the sweep trains on
    gan_labeled = Split.load(out / "synthetic" / "f0.25" / "gan" / "split.json").labeled
    sweep_run = out / "ratio_sweep" / "runs" / "supervised__f0.25__constant__r0.5__s0"
    assert Split.load(sweep_run / "split.json").labeled == gan_labeled
    assert json.loads((sweep_run / "result.json").read_text())["synthetic_ratio_mean"] == 0.5
    assert (out / "ratio_sweep" / "runs" / "mean-teacher__f0.25__constant__r0.5__s1" / "result.json").is_file()
    oracle_run = out / "oracle" / "runs" / "supervised__f0.25__constant__r0.5__s0__oracle"
    assert json.loads((oracle_run / "config.json").read_text())["data"]["synthetic"] == [
        str(out / study["synthetic"]["phantom"])]
    run_dirs = [d for root in ("low_label", "ratio_sweep", "oracle") for d in (out / root / "runs").iterdir()]
    assert len(run_dirs) == 3 + 2 * 2 + 2 + 2 * 2 and all((d / "curves.png").stat().st_size > 1000 for d in run_dirs)

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("**/*") if p.suffix in (".pt", ".h5")}
    monkeypatch.setattr(grid, "run_one", lambda run, root: pytest.fail(f"re-trained {run.name}"))
    monkeypatch.setattr(provider, "train_gan", lambda *a, **k: pytest.fail("re-trained the GAN"))
    monkeypatch.setattr(provider, "synthesize", lambda *a, **k: pytest.fail("re-synthesized"))
    capsys.readouterr()
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("**/*") if p.suffix in (".pt", ".h5")} == stamps
    assert "3 runs, 3 done already" in capsys.readouterr().out
    (out / "report.md").unlink()
    assert main(argv + ["--report-only"]) == 0 and (out / "report.md").read_text() == report
    assert main(["study", "--profile", "tiny", "--out", str(tmp_path / "none"), "--report-only"]) == 2

    assert main(["study", "--profile", "quick", "--out", str(out), "--device", "cpu"]) == 2
    assert "another profile" in capsys.readouterr().err

