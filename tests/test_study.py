"""`ssl-seg study` and the pix2pix synthesizer: plans, findings from known numbers, a tiny study end to end, resume."""

from __future__ import annotations

import json
import re

import pytest

import gan_aug.provider as provider
from gan_aug.config import GanConfig
from gan_aug.study import PLANS, best_ratio, findings, plan
from gan_aug.train import train_gan
from ssl_seg import grid
from ssl_seg.ablation import PROFILES
from ssl_seg.cli import main
from ssl_seg.data.readers import open_source
from ssl_seg.data.splits import Split
from ssl_seg.errors import UserError

DATA = "phantom:cardiac?n=24&size=32"


def test_every_profile_has_a_consistent_plan():
    assert set(PLANS) == set(provider.GAN_BUDGETS) and set(PLANS) <= set(PROFILES)
    for name in set(PROFILES) - set(PLANS):  # segmentation-only profiles (realistic): a clear error, no study
        with pytest.raises(UserError, match="no study plan"):
            plan(name)
    for p in PLANS.values():
        assert p.sweep_fraction in p.fractions and p.ratios[0] == 0 and "supervised" in p.methods


def _low(method: str, labels: str, seed: int, dice: float) -> dict:
    return {"backbone": "unet", "method": method, "labels": labels, "seed": seed, "dice": dice, "n_labeled": 8}


def _sweep(method: str, ratio: float, seed: int, dice: float) -> dict:
    return {"method": method, "labels": "f0.1", "schedule": "constant", "ratio": ratio, "seed": seed, "dice": dice}


def test_findings_state_the_numbers():
    low = [_low("supervised", "f0.1", 0, 0.50), _low("supervised", "f0.1", 1, 0.60),
           _low("unimatch", "f0.1", 0, 0.62), _low("unimatch", "f0.1", 1, 0.68),
           _low("supervised", "f1", 0, 0.80), _low("supervised", "f1", 1, 0.80)]
    sweep = [_sweep("supervised", 0.0, 0, 0.50), _sweep("supervised", 0.5, 0, 0.58),
             _sweep("supervised", 1.0, 0, 0.30), _sweep("unimatch", 0.0, 0, 0.62), _sweep("unimatch", 0.5, 0, 0.61)]
    text = "\n".join(findings(low, sweep, "f0.1"))
    # unimatch 0.65 vs supervised 0.55: +0.100; gap (0.65 - 0.55) / (0.80 - 0.55) = 40 %
    assert "best method **unimatch**, test Dice 0.650 (2 seed(s)), +0.100 over supervised (0.550)" in text
    assert "recovers 40% of the gap" in text and "Full-label supervised reference: test Dice 0.800" in text
    assert ("**Ratio sweep, supervised, labels f0.1**: best ratio **0.5** (Dice 0.580; real only 0.500); the best "
            "synthetic ratio 0.5 changes Dice by +0.080 +- 0.000 (1 seed(s)); synthetic pairs alone (ratio 1) "
            "give 0.300.") in text
    assert "best ratio **0** (Dice 0.620; real only 0.620)" in text and "changes Dice by -0.010" in text
    # the fewest seeds of any cell (the sweep's 1) and the largest ablation std (supervised 0.5, 0.6: 0.0707)
    assert "Seeds: as few as 1 per cell. Seed-to-seed std of test Dice reaches 0.071 (supervised, f0.1)" in text
    assert best_ratio(sweep, "supervised", "f0.1", nonzero=True) == 0.5
    assert best_ratio([_sweep("supervised", 0.5, 0, 0.5), _sweep("supervised", 0.25, 0, 0.5)],
                      "supervised", "f0.1") == 0.25  # ties go to the smaller ratio


def test_no_default_mask_source_is_the_phantom_oracle():
    import argparse
    import inspect

    from gan_aug.cli import build_parser
    from gan_aug.masks import DEFAULT_MASK_SOURCE, ORACLE_MASK_SOURCES
    from gan_aug.synthesize import synthesize
    from ssl_seg.sweep import add_sweep_args

    assert DEFAULT_MASK_SOURCE == "deform" and "phantom" in ORACLE_MASK_SOURCES
    defaults = [inspect.signature(f).parameters["mask_source"].default
                for f in (provider.train_and_synthesize, synthesize)]
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
    path = provider.train_and_synthesize(DATA, 0.25, 0, tmp_path, "tiny", "cpu", n=6)
    assert calls == [True] and json.loads((tmp_path / "gan" / "result.json").read_text())["iterations"] == 4
    assert path == tmp_path / "synthetic_deform" / "synthetic.h5" and len(open_source(str(path))) == 6
    # phantom data, yet the masks come from the labeled masks: the phantom generator is an oracle
    assert json.loads((path.parent / "manifest.json").read_text())["mask_source"] == "deform"
    assert provider.train_and_synthesize(DATA, 0.25, 0, tmp_path, "tiny", "cpu", n=6) == path and calls == [True]
    with pytest.raises(UserError, match="other settings"):
        provider.train_and_synthesize(DATA, 0.25, 1, tmp_path, "tiny", "cpu", n=6)  # another split seed


def test_tiny_study_end_to_end_then_resume_redoes_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "study"
    argv = ["study", "--profile", "tiny", "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    report = (out / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert links and all((out / link).exists() for link in links), [l for l in links if not (out / l).exists()]
    for artefact in ("low_label/summary.md", "low_label/dice_vs_labels.png", "low_label/gap_recovery.png",
                     "ratio_sweep/dice_vs_ratio.png", "synthetic/f0.25/synthetic_deform/samples.png",
                     "synthetic/f0.25/synthetic_deform/synthetic.h5", "study.json"):
        assert f"]({artefact})" in report
    assert "## Findings" in report and "| supervised | f0.25 |" in report and "| constant | 0.5 | 0.500 |" in report
    study = json.loads((out / "study.json").read_text())
    assert study["profile"] == "tiny" and study["data"] == DATA
    leg = study["ssl_with_synthetic"]
    assert leg == {"method": "mean-teacher", "ratio": 0.5}
    # the GAN saw exactly the labeled pairs the sweep trains on
    gan_labeled = Split.load(out / "synthetic" / "f0.25" / "gan" / "split.json").labeled
    sweep_run = out / "ratio_sweep" / "runs" / "supervised__f0.25__constant__r0.5__s0"
    assert Split.load(sweep_run / "split.json").labeled == gan_labeled
    assert json.loads((sweep_run / "result.json").read_text())["synthetic_ratio_mean"] == 0.5
    assert (out / "ratio_sweep" / "runs" / "mean-teacher__f0.25__constant__r0.5__s0" / "result.json").is_file()

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("**/*") if p.suffix in (".pt", ".h5")}
    monkeypatch.setattr(grid, "run_one", lambda run, root: pytest.fail(f"re-trained {run.name}"))
    monkeypatch.setattr(provider, "train_gan", lambda *a, **k: pytest.fail("re-trained the GAN"))
    monkeypatch.setattr(provider, "synthesize", lambda *a, **k: pytest.fail("re-synthesized"))
    capsys.readouterr()
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("**/*") if p.suffix in (".pt", ".h5")} == stamps
    assert "3 done already" in capsys.readouterr().out

    assert main(["study", "--profile", "quick", "--out", str(out), "--device", "cpu"]) == 2
    assert "another profile" in capsys.readouterr().err
