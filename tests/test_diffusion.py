"""gan_aug.diffusion: the DDIM sampler against the DDIM update by hand, a training step, exact resume, noise sharing,
synthesize with --sample-steps, and the one-line refusals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_aug.cli import main
from gan_aug.config import GanConfig
from gan_aug.diffusion import TRAIN_TIMESTEPS, Diffusion, DiffusionGenerator
from gan_aug.networks import build_generator, one_hot, shared_noise
from gan_aug.train import train_gan

DATA = "phantom:cardiac?n=20&size=32"


def tiny(out: Path, **kw) -> GanConfig:
    """A 32 px, ngf 8 diffusion generator on 20 cardiac phantoms, 2 DDIM steps when validating."""
    base = dict(data=DATA, labeled_fraction=0.3, out=str(out), generator="diffusion", iterations=4, batch_size=2,
                patch_size=32, ngf=8, sample_steps=2, device="cpu", progress=False, log_every=1, image_every=2,
                val_every=2, checkpoint_every=2)
    return GanConfig(**{**base, **kw})


def masks(b: int = 2, size: int = 16, k: int = 3) -> torch.Tensor:
    """One-hot masks (b, k, size, size) of random class indices."""
    return one_hot(torch.randint(0, k, (b, size, size), generator=torch.Generator().manual_seed(0)), k)


def test_ddim_sampler_matches_the_update_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    # a constant noise prediction eps = 0.3; two DDIM steps visit t = 500 then t = 0 (then alpha_prev = 1)
    g = DiffusionGenerator(num_classes=3, out_channels=1, ngf=8, n_down=1, sample_steps=2)
    monkeypatch.setattr(g, "predict_noise", lambda x, mask, t: torch.full_like(x, 0.3))
    m = masks()
    torch.manual_seed(5)
    got = g(m)
    torch.manual_seed(5)
    x = torch.randn(2, 1, 16, 16).double()  # x_T, drawn as the sampler draws it
    betas = np.linspace(1e-4, 0.02, TRAIN_TIMESTEPS)
    alpha_bar = np.cumprod(1 - betas)
    for t, prev in ((500, alpha_bar[0]), (0, 1.0)):
        x0 = ((x - math.sqrt(1 - alpha_bar[t]) * 0.3) / math.sqrt(alpha_bar[t])).clamp(-1, 1)  # DDIM eq. 12
        x = math.sqrt(prev) * x0 + math.sqrt(1 - prev) * 0.3
    assert got.shape == (2, 1, 16, 16)
    torch.testing.assert_close(got.double(), x.clamp(-1, 1), atol=2e-5, rtol=0)


def test_sampling_steps_seed_and_range() -> None:
    g = DiffusionGenerator(num_classes=3, out_channels=1, ngf=8, n_down=2, sample_steps=3).eval()
    calls = []
    g.unet.register_forward_hook(lambda *a: calls.append(1))
    m = masks(size=20)  # not a multiple of the stride: padded, cropped back
    torch.manual_seed(1)
    a = g(m)
    assert len(calls) == 3 and a.shape == (2, 1, 20, 20) and a.abs().max() <= 1
    torch.manual_seed(1)
    assert torch.equal(g(m), a)  # DDIM (eta 0) is deterministic given x_T
    torch.manual_seed(2)
    assert not torch.equal(g(m), a)


def test_shared_noise_makes_a_batch_share_its_starting_noise() -> None:
    g = DiffusionGenerator(num_classes=3, out_channels=1, ngf=8, n_down=1, sample_steps=1).eval()
    same = masks(b=1).expand(3, -1, -1, -1)  # three identical masks
    with shared_noise(g, 1.0, seed=0):
        x = g(same)
    assert torch.allclose(x[0], x[1]) and torch.allclose(x[0], x[2])
    with shared_noise(g, 0.0, seed=0):
        x = g(same)
    assert not torch.allclose(x[0], x[1])


def test_one_step_moves_the_network_and_its_ema() -> None:
    torch.manual_seed(0)
    g = build_generator("diffusion", 3, 1, ngf=8, n_down=2)
    model = Diffusion(g, num_classes=3, total_iterations=10, device=torch.device("cpu"), ema_decay=0.5)
    before = {k: v.clone() for k, v in model.G.state_dict().items()}
    ema_before = {k: v.clone() for k, v in model.G_ema.state_dict().items()}
    batch = {"labeled": {"mask": torch.randint(0, 3, (2, 16, 16)), "image": torch.rand(2, 1, 16, 16) * 2 - 1}}
    losses = model.optimization_step(batch, 0)
    assert set(losses) == {"G"} and 0 < losses["G"].item() < 10
    assert any(not torch.equal(before[k], v) for k, v in model.G.state_dict().items())
    assert any(not torch.equal(ema_before[k], v) for k, v in model.G_ema.state_dict().items())
    assert model.models == {"G": model.G} and set(model.eval_models()) == {"G_ema"} and model.shown_losses == {"G": "G"}


def test_training_resumes_exactly(tmp_path: Path, killed_at_step) -> None:
    straight = tiny(tmp_path / "straight")
    train_gan(straight)
    killed = tiny(tmp_path / "killed")
    killed_at_step(lambda: train_gan(killed), 2)
    train_gan(GanConfig.load(Path(killed.out) / "config.json"), resume=True)
    a = torch.load(Path(straight.out) / "checkpoint.pt", weights_only=True)["networks"]
    b = torch.load(Path(killed.out) / "checkpoint.pt", weights_only=True)["networks"]
    assert set(a) == {"G", "G_ema", "opt_G", "scaler_G"}
    for net in ("G", "G_ema"):
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net]), net


def test_cli_train_synthesize_and_one_line_refusals(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gan = tmp_path / "gan"
    train_gan(tiny(gan))
    syn = tmp_path / "syn"
    assert main(["synthesize", "--checkpoint", str(gan), "--n", "3", "--out", str(syn), "--sample-steps", "1",
                 "--device", "cpu", "--no-progress", "--format", "png"]) == 0
    manifest = json.loads((syn / "manifest.json").read_text())
    assert manifest["sample_steps"] == 1 and manifest["gan_config"]["generator"] == "diffusion"
    assert len(list((syn / "images").iterdir())) == 3
    capsys.readouterr()

    pix2pix = tmp_path / "pix2pix"
    train_gan(tiny(pix2pix, generator="unet", iterations=1))
    cases = [
        (["synthesize", "--checkpoint", str(pix2pix), "--n", "2", "--out", str(tmp_path / "s2"), "--sample-steps",
          "4", "--device", "cpu"], "--sample-steps 4"),
        (["synthesize", "--checkpoint", str(gan), "--n", "2", "--out", str(tmp_path / "s3"), "--sample-steps", "0",
          "--device", "cpu"], "--sample-steps 0"),
        (["train", "--data", DATA, "--out", str(tmp_path / "t1"), "--generator", "diffusion", "--task-weight", "1"],
         "--task-weight"),
        (["train", "--data", DATA, "--out", str(tmp_path / "t2"), "--generator", "diffusion", "--sample-steps",
          "0"], "--sample-steps"),
    ]
    for argv, flag in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"error: {flag}") and err.count("\n") == 1, err
    assert not (tmp_path / "s2").exists() and not (tmp_path / "t1").exists()


def test_help_lists_the_diffusion_generator_and_its_flags(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "diffusion" in out and "--sample-steps" in out
    with pytest.raises(SystemExit):
        main(["synthesize", "--help"])
    assert "--sample-steps" in capsys.readouterr().out


def test_sweep_trains_a_diffusion_generator_with_generator_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from ssl_seg.cli import main as ssl_main

    base = ["sweep", "--data", "phantom:cardiac", "--profile", "tiny", "--train-gan", "--fractions", "0.25",
            "--ratios", "0.5", "--seeds", "0", "--iterations", "2", "--device", "cpu"]
    assert ssl_main([*base, "--generator", "nonesuch", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --generator nonesuch") and "diffusion" in err and err.count("\n") == 1
    out = tmp_path / "sweep"
    assert ssl_main([*base, "--generator", "diffusion", "--out", str(out)]) == 0
    gan = json.loads((out / "synthetic" / "f0.25" / "gan" / "config.json").read_text())
    manifest = json.loads((out / "synthetic" / "f0.25" / "synthetic_deform" / "manifest.json").read_text())
    assert gan["generator"] == "diffusion" and manifest["sample_steps"] == gan["sample_steps"] == 50
    assert (out / "runs" / "supervised__f0.25__constant__r0.5__s0" / "result.json").is_file()
