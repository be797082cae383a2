"""gan_aug.pix2pix and gan_aug.train: loss values, one optimisation step, run files, exact resume, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from gan_aug.cli import main
from gan_aug.config import GanConfig
from gan_aug.networks import LatentEncoder, build_discriminator, build_generator, kl_to_standard_normal, one_hot,\
    shared_noise
from gan_aug.pix2pix import (MS_EPS, Pix2Pix, d_adversarial_loss, feature_matching_loss, g_adversarial_loss,
                             linear_decay, mode_seeking_loss)
from gan_aug.train import train_gan
from ssl_seg.data.sources import open_source
from ssl_seg.data.splits import make_split
from ssl_seg.errors import UserError

DATA = "phantom:cardiac?n=20&size=32"



def tiny(out: Path, **kw) -> GanConfig:
    """A 32 px, ngf 8 GAN on 20 cardiac phantoms: well under a second per few steps."""
    base = dict(data=DATA, labeled_fraction=0.3, out=str(out), iterations=4, batch_size=2, patch_size=32, ngf=8,
                ndf=8, device="cpu", progress=False, log_every=1, image_every=2, val_every=2, checkpoint_every=2)
    return GanConfig(**{**base, **kw})


def test_adversarial_losses_match_hand_values() -> None:
    zeros, twos = [torch.zeros(1, 1, 2, 2)], [torch.full((1, 1, 2, 2), 2.0)]
    real, fake = d_adversarial_loss("vanilla", zeros, zeros)
    assert real.item() == pytest.approx(math.log(2)) and fake.item() == pytest.approx(math.log(2))
    real, fake = d_adversarial_loss("lsgan", [torch.ones(1, 1, 2, 2)], zeros)
    assert real.item() == 0.0 and fake.item() == 0.0
    real, fake = d_adversarial_loss("hinge", zeros, zeros)
    assert real.item() == 1.0 and fake.item() == 1.0
    real, fake = d_adversarial_loss("hinge", twos, [-t for t in twos])
    assert real.item() == 0.0 and fake.item() == 0.0
    assert g_adversarial_loss("hinge", twos).item() == -2.0
    assert g_adversarial_loss("lsgan", zeros).item() == 1.0
    assert g_adversarial_loss("vanilla", zeros).item() == pytest.approx(math.log(2))
    # two scales average: (log 2 + log(1 + e^-2)) / 2
    two_scale = g_adversarial_loss("vanilla", zeros + twos).item()
    assert two_scale == pytest.approx((math.log(2) + math.log(1 + math.exp(-2))) / 2)
    feats = [[torch.zeros(1, 2, 2, 2), torch.ones(1, 1, 1, 1)]]
    assert feature_matching_loss(feats, [[torch.full((1, 2, 2, 2), 0.5), torch.zeros(1, 1, 1, 1)]]).item() == 0.5
    with pytest.raises(UserError, match="vanilla, lsgan, hinge"):
        g_adversarial_loss("wgan", zeros)


def test_linear_decay_schedule() -> None:
    assert [linear_decay(s, 10) for s in (0, 4, 5)] == [1.0, 1.0, 1.0]
    assert linear_decay(6, 10) == pytest.approx(1 - 1 / 6)
    assert linear_decay(9, 10) == pytest.approx(1 - 4 / 6)


@pytest.mark.parametrize("gan_loss, generator, lambda_fm", [("vanilla", "unet", 0.0), ("hinge", "spade", 10.0)])
def test_one_step_moves_both_networks(gan_loss: str, generator: str, lambda_fm: float) -> None:
    torch.manual_seed(0)
    g = build_generator(generator, 4, 1, ngf=8, n_down=3)
    d = build_discriminator("patchgan", 4, 1, ndf=8, num_D=2)
    model = Pix2Pix(g, d, num_classes=4, total_iterations=10, device=torch.device("cpu"), gan_loss=gan_loss,
                    lambda_fm=lambda_fm)
    before_g = [p.detach().clone() for p in model.G.parameters()]
    before_d = [p.detach().clone() for p in model.D.parameters()]
    before_ema = [p.detach().clone() for p in model.G_ema.parameters()]
    mask = one_hot(torch.randint(0, 4, (2, 64, 64)), 4)
    losses = model.train_step(mask, torch.rand(2, 1, 64, 64) * 2 - 1, step=5)
    expected = {"D", "D_real", "D_fake", "G", "G_adv", "G_L1"} | ({"G_FM"} if lambda_fm else set())
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(not torch.equal(a, b) for a, b in zip(before_g, model.G.parameters()) if a.numel() > 1)
    assert all(not torch.equal(a, b) for a, b in zip(before_d, model.D.parameters()) if a.numel() > 1)
    assert any(not torch.equal(a, b) for a, b in zip(before_ema, model.G_ema.parameters()))
    assert losses["G"].item() == pytest.approx(
        losses["G_adv"].item() + 100 * losses["G_L1"].item() + lambda_fm * losses.get("G_FM", torch.tensor(0)).item(),
        rel=1e-5)


def test_mode_seeking_loss_matches_hand_values_and_pushes_the_samples_apart() -> None:
    a = torch.zeros(1, 1, 2, 2)
    b = torch.tensor([[[[0.5, -0.5], [0.0, 1.0]]]], requires_grad=True)  # mean |b - a| = 0.5
    loss = mode_seeking_loss(a, b)
    assert loss.item() == pytest.approx(1 / (0.5 + MS_EPS))
    loss.backward()  # d/db of 1 / mean|b - a| = -sign(b - a) / (4 * 0.5 ** 2): descent moves b away from a
    expected = -torch.sign(b.detach()) / (4 * (0.5 + MS_EPS) ** 2)
    assert torch.allclose(b.grad, expected)


def test_mode_seeking_step_draws_two_samples_and_adds_its_term() -> None:
    torch.manual_seed(0)
    g = build_generator("unet", 4, 1, ngf=8, n_down=3, noise_channel=True)
    d = build_discriminator("patchgan", 4, 1, ndf=8)
    model = Pix2Pix(g, d, num_classes=4, total_iterations=10, device=torch.device("cpu"), lambda_ms=2.0)
    seen: list[int] = []
    model.G.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].shape[0]))
    mask = one_hot(torch.randint(0, 4, (3, 32, 32)), 4)
    losses = model.train_step(mask, torch.rand(3, 1, 32, 32) * 2 - 1, step=0)
    assert seen == [6]  # both samples of each of the 3 masks in one generator pass
    assert {"G_ms", "G_adv", "G_L1"} <= set(losses) and 0 < losses["G_ms"].item() < 1 / MS_EPS
    assert losses["G"].item() == pytest.approx(
        losses["G_adv"].item() + 100 * losses["G_L1"].item() + 2.0 * losses["G_ms"].item(), rel=1e-5)


def test_mode_seeking_is_refused_without_noise_or_with_diffusion(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--lambda-ms.*--noise-channel"):
        tiny(tmp_path, lambda_ms=1.0, dropout=0.0)
    with pytest.raises(UserError, match="--lambda-ms: a GAN option"):
        tiny(tmp_path, lambda_ms=1.0, generator="diffusion")
    with pytest.raises(UserError, match="lambda.ms"):
        tiny(tmp_path, lambda_ms=-1.0)
    assert tiny(tmp_path, lambda_ms=1.0, dropout=0.0, noise_channel=True).lambda_ms == 1.0


def test_kl_to_standard_normal_matches_hand_values() -> None:
    mu, logvar = torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([[0.0, math.log(2)], [0.0, 0.0]])
    # first row: 0.5 (1 + 1 - 1 - 0) + 0.5 (0 + 2 - 1 - log 2); second row: N(0, I) itself, 0
    assert kl_to_standard_normal(mu, logvar).item() == pytest.approx((0.5 + 0.5 * (1 - math.log(2))) / 2)


def test_latent_step_encodes_the_real_image_for_the_first_sample_and_draws_the_second() -> None:
    torch.manual_seed(0)
    g = build_generator("unet", 4, 1, ngf=8, n_down=3, dropout=0.0, latent_dim=3)
    d = build_discriminator("patchgan", 4, 1, ndf=8)
    encoder = LatentEncoder(1, 3, nef=8)
    model = Pix2Pix(g, d, num_classes=4, total_iterations=10, device=torch.device("cpu"), encoder=encoder,
                    lambda_kl=0.5)
    codes: list[torch.Tensor] = []
    model.G.register_forward_hook(lambda _m, inputs, _o: codes.append(inputs[1].detach()))
    before = [p.detach().clone() for p in model.E.parameters()]
    mask, real = one_hot(torch.randint(0, 4, (2, 32, 32)), 4), torch.rand(2, 1, 32, 32) * 2 - 1
    torch.manual_seed(1)
    mu, logvar = encoder(real)
    expected = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # the step's first draw: the reparameterised code
    torch.manual_seed(1)
    losses = model.train_step(mask, real, step=0)
    assert len(codes) == 1 and codes[0].shape == (4, 3)  # both samples of each mask in one generator pass
    assert torch.allclose(codes[0][:2], expected.detach(), atol=1e-6)
    assert losses["G"].item() == pytest.approx(
        losses["G_adv"].item() + 100 * losses["G_L1"].item() + 0.5 * losses["G_KL"].item(), rel=1e-5)
    assert "G_ms" not in losses
    assert any(not torch.equal(a, b) for a, b in zip(before, model.E.parameters()))  # E trains with G
    assert "E" in model.state_dict() and "E" in model.models


def test_background_only_encoder_sees_the_real_image_with_the_structures_zeroed() -> None:
    torch.manual_seed(0)
    g = build_generator("unet", 2, 1, ngf=8, n_down=3, dropout=0.0, latent_dim=2)
    model = Pix2Pix(g, build_discriminator("patchgan", 2, 1, ndf=8), num_classes=2, total_iterations=4,
                    device=torch.device("cpu"), encoder=LatentEncoder(1, 2, nef=8), encode_background_only=True)
    seen: list[torch.Tensor] = []
    model.E.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].detach()))
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    labels[:, 8:16, 8:16] = 1
    real = torch.rand(1, 1, 32, 32) * 0.5 + 0.5  # no zero pixel of its own
    model.train_step(one_hot(labels, 2), real, step=0)
    assert torch.equal(seen[0][0, 0, 8:16, 8:16], torch.zeros(8, 8))  # the structure is hidden
    assert torch.equal(seen[0][0, 0, labels[0] == 0], real[0, 0, labels[0] == 0])  # the background is the image's


def test_latent_code_is_the_sampling_noise_and_follows_shared_noise() -> None:
    torch.manual_seed(0)
    g = build_generator("unet", 2, 1, ngf=8, n_down=3, dropout=0.0, latent_dim=4).eval()
    mask = one_hot(torch.zeros(2, 32, 32, dtype=torch.long), 2)  # two identical all-background masks
    z = torch.randn(2, 4)
    assert torch.equal(g(mask, z), g(mask, z))  # no other noise: the code decides the image
    drawn = g(mask)  # codes drawn from N(0, I): the two images of one mask differ
    assert (drawn[0] - drawn[1]).abs().max() > 1e-4
    with shared_noise(g, 1.0, seed=3):
        same = g(mask)
    assert torch.allclose(same[0], same[1])  # share 1: one code for every slice of a volume
    with pytest.raises(ValueError, match="--latent-dim"):
        build_generator("unet", 2, 1, ngf=8, n_down=3)(mask, z)


def test_latent_dim_is_refused_with_diffusion_and_counts_as_noise(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--latent-dim: a GAN option"):
        tiny(tmp_path, latent_dim=8, generator="diffusion")
    with pytest.raises(UserError, match="latent.dim"):
        tiny(tmp_path, latent_dim=-1)
    assert tiny(tmp_path, lambda_ms=1.0, dropout=0.0, latent_dim=8).lambda_ms == 1.0
    with pytest.raises(UserError, match="--latent-background-only.*--latent-dim"):
        tiny(tmp_path, latent_background_only=True)


def test_ema_generator_keeps_the_batchnorm_statistics_of_the_generator() -> None:
    torch.manual_seed(0)
    g = build_generator("unet", 4, 1, ngf=8, n_down=3, norm="batch", dropout=0.0)
    d = build_discriminator("patchgan", 4, 1, ndf=8, norm="batch")
    model = Pix2Pix(g, d, num_classes=4, total_iterations=10, device=torch.device("cpu"), ema_decay=0.999)
    stats = [name for name, _ in model.G_ema.named_buffers() if name.endswith("running_mean")]
    assert stats  # the test means something only if there are BatchNorm buffers
    for step in range(3):
        mask = one_hot(torch.randint(0, 4, (4, 32, 32)), 4)
        model.train_step(mask, torch.rand(4, 1, 32, 32) * 2 - 1, step=step)
    ema, live = dict(model.G_ema.named_buffers()), dict(model.G.named_buffers())
    for name in stats:  # moved away from the initial zeros, and equal to the generator's own statistics
        assert ema[name].abs().max() > 1e-3 and torch.equal(ema[name], live[name])
        var = name.replace("running_mean", "running_var")
        assert not torch.allclose(ema[var], torch.ones_like(ema[var])) and torch.equal(ema[var], live[var])
    # with decay 0 the EMA generator is the generator: same output in eval mode
    model.ema_decay = 0.0
    model.train_step(mask, torch.rand(4, 1, 32, 32) * 2 - 1, step=3)
    model.G.eval()
    assert torch.allclose(model.sample(mask), model.G(mask), atol=1e-6)


def test_ema_rampup_keeps_the_ema_generator_near_the_generator_early_on() -> None:
    def ema_gap(rampup: float) -> float:  # largest weight gap between G_ema and G after 3 steps
        torch.manual_seed(0)
        g = build_generator("unet", 4, 1, ngf=8, n_down=3, dropout=0.0)
        d = build_discriminator("patchgan", 4, 1, ndf=8)
        model = Pix2Pix(g, d, num_classes=4, total_iterations=10, device=torch.device("cpu"), ema_rampup=rampup)
        for step in range(3):
            torch.manual_seed(step)
            model.train_step(one_hot(torch.randint(0, 4, (4, 32, 32)), 4), torch.rand(4, 1, 32, 32) * 2 - 1, step)
        live = dict(model.G.named_parameters())
        return max((p - live[n]).abs().max().item() for n, p in model.G_ema.named_parameters())

    # no ramp: the EMA is the mean of the three steps' weights; ramp 0.05: half-lives of 0.05, 0.1 and 0.15 steps,
    # so the last update keeps 0.5 ** (1 / 0.15) = 1 % of the old EMA (measured: 2.3e-6 against 2.2e-4)
    assert ema_gap(0.05) < 0.05 * ema_gap(0.0)


def test_train_writes_run_on_the_ssl_seg_split(tmp_path: Path) -> None:
    cfg = tiny(tmp_path / "gan")
    result = train_gan(cfg)
    out = Path(cfg.out)
    for name in ("config.json", "split.json", "checkpoint.pt", "result.json"):
        assert (out / name).is_file()
    assert list((out / "tb").glob("events.out.tfevents.*"))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["kind"] == "gan-aug" and ckpt["step"] == 3 and ckpt["info"]["num_classes"] == 4
    assert set(ckpt["networks"]) == {"G", "D", "G_ema", "opt_G", "opt_D", "scaler_G", "scaler_D"}
    expected = make_split(open_source(DATA), seed=0, labeled_fraction=0.3).labeled
    assert ckpt["labeled_ids"] == expected and result["n_labeled"] == len(expected)
    assert GanConfig.load(out / "config.json").n_down == 4  # auto depth resolved and saved
    assert all(math.isfinite(v) for v in result["final_losses"].values())
    with pytest.raises(UserError, match="--resume"):
        train_gan(cfg)


@pytest.mark.parametrize("latent_dim", [0, 4])
def test_resume_continues_exactly(tmp_path: Path, killed_at_step, latent_dim: int) -> None:
    straight = tiny(tmp_path / "straight", latent_dim=latent_dim)
    train_gan(straight)

    killed = tiny(tmp_path / "killed", latent_dim=latent_dim)
    killed_at_step(lambda: train_gan(killed), 2)
    assert torch.load(Path(killed.out) / "checkpoint.pt", weights_only=True)["step"] == 1
    train_gan(GanConfig.load(Path(killed.out) / "config.json"), resume=True)

    a = torch.load(Path(straight.out) / "checkpoint.pt", weights_only=True)["networks"]
    b = torch.load(Path(killed.out) / "checkpoint.pt", weights_only=True)["networks"]
    assert ("E" in a) == (latent_dim > 0)
    for net in ("G", "D", "G_ema", "E")[: 4 if latent_dim else 3]:
        assert all(torch.equal(a[net][k], b[net][k]) for k in a[net]), net


def test_resume_refuses_changed_architecture(tmp_path: Path) -> None:
    cfg = tiny(tmp_path / "gan", iterations=2)
    train_gan(cfg)
    saved = GanConfig.load(Path(cfg.out) / "config.json")
    with pytest.raises(UserError, match="ngf"):
        saved.resumed_with({"ngf": 16, "iterations": 6})
    longer = saved.resumed_with({"iterations": 3, "data": DATA})
    assert longer.iterations == 3 and longer.ngf == 8
    assert train_gan(longer, resume=True)["iterations"] == 3


def test_non_finite_loss_stops_with_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="--lambda-l1 nan"):  # refused as a setting before training
        tiny(tmp_path / "nan", lambda_l1=float("nan"))
    original = Pix2Pix.train_step
    monkeypatch.setattr(Pix2Pix, "train_step", lambda *a: {**original(*a), "G_L1": torch.tensor(float("nan"))})
    with pytest.raises(UserError, match=r"non-finite loss \['G_L1'\] at step 0; lower --lr"):
        train_gan(tiny(tmp_path / "nan"))


def test_cli_train_and_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    code = main(["train", "--data", DATA, "--labeled-cases", "3", "--out", str(out), "--iterations", "2",
                 "--batch-size", "2", "--patch-size", "32", "--ngf", "8", "--ndf", "8", "--device", "cpu",
                 "--no-progress", "--generator", "spade", "--gan-loss", "lsgan", "--feature-matching"])
    assert code == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["labeled_cases"] == 3 and saved["labeled_fraction"] is None and saved["generator"] == "spade"
    capsys.readouterr()
    code = main(["train", "--data", DATA, "--out", str(out), "--iterations", "2", "--ngf", "16", "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --resume") and err.count("\n") == 1
    code = main(["train", "--data", "/nonexistent/data", "--out", str(tmp_path / "x"), "--iterations", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
