"""DiffAugment on the discriminator's inputs: labels follow pixels, gradients reach G, and the GAN trains with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gan_aug.diff_augment import diff_augment
from gan_aug.networks import build_discriminator, build_generator, one_hot
from gan_aug.pix2pix import Pix2Pix
from gan_aug.train import train_gan
from test_gan_train import tiny


def _pair(b: int = 6, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """A random 3-class one-hot mask and an image that is its class index + 1 (0 nowhere), as (B, 1, H, W)."""
    labels = torch.randint(0, 3, (b, size, size))
    return one_hot(labels, 3), (labels + 1).unsqueeze(1).float()


def test_geometry_moves_mask_and_image_together() -> None:
    torch.manual_seed(0)
    mask, image = _pair()
    m, x = diff_augment(mask, image, policy=("translation", "cutout"))
    assert m.shape == mask.shape and x.shape == image.shape
    covered = m.sum(dim=1)  # 1 where a class survives, 0 where shifted-in or cut out
    assert set(covered.unique().tolist()) == {0.0, 1.0}
    # every surviving pixel keeps its label: the image still holds class index + 1 exactly there, 0 elsewhere
    assert torch.equal(x[:, 0], (m.argmax(dim=1) + 1).float() * covered)
    # cutout removes half of each side: at least a quarter of every sample (clamped at the border: less)
    cut = (covered == 0).float().mean(dim=(1, 2))
    assert (cut > 0).all() and (cut <= 0.25 + 2 * 0.125 + 1e-6).all()


def test_translation_is_an_integer_shift_within_an_eighth() -> None:
    torch.manual_seed(1)
    image = torch.arange(16 * 16, dtype=torch.float32).reshape(1, 1, 16, 16).repeat(8, 1, 1, 1) + 1
    mask = torch.ones(8, 1, 16, 16)
    _, x = diff_augment(mask, image, policy=("translation",))
    for b in range(8):  # the centre pixel's value tells the shift: at most 2 px (16 / 8) each way
        v = int(x[b, 0, 8, 8].item()) - 1
        dy, dx = v // 16 - 8, v % 16 - 8
        assert abs(dy) <= 2 and abs(dx) <= 2
        # shifted content, zero only where the shift brought the border in
        assert torch.equal(x[b, 0, 2:14, 2:14], image[b, 0, 2 + dy:14 + dy, 2 + dx:14 + dx])


def test_color_leaves_the_mask_and_keeps_gradients() -> None:
    torch.manual_seed(2)
    mask, _ = _pair(b=4)
    fake = torch.rand(4, 1, 16, 16, requires_grad=True)
    real = torch.rand(4, 1, 16, 16)
    m, f, r = diff_augment(mask, fake, real, policy=("color",))
    assert torch.equal(m, mask)
    # brightness in [-0.5, 0.5] then contrast in [0.5, 1.5] about the mean: an affine map a * x + c per sample
    a = (f - f.mean(dim=(1, 2, 3), keepdim=True)) / (fake - fake.mean(dim=(1, 2, 3), keepdim=True))
    assert torch.allclose(a.amin(dim=(1, 2, 3)), a.amax(dim=(1, 2, 3)), atol=1e-3)
    assert ((a.amin(dim=(1, 2, 3)) >= 0.5 - 1e-3) & (a.amax(dim=(1, 2, 3)) <= 1.5 + 1e-3)).all()
    # real and fake of one sample get the same transform (feature matching compares like with like)
    ar = (r - r.mean(dim=(1, 2, 3), keepdim=True)) / (real - real.mean(dim=(1, 2, 3), keepdim=True))
    assert torch.allclose(a.mean(dim=(1, 2, 3)), ar.mean(dim=(1, 2, 3)), atol=1e-3)
    f.sum().backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        diff_augment(mask, fake, policy=("rotate",))


def test_pix2pix_with_augmented_discriminator_trains_and_differs() -> None:
    def step(augment: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        g = build_generator("unet", 3, 1, ngf=8, n_down=3)
        d = build_discriminator("patchgan", 3, 1, ndf=8)
        model = Pix2Pix(g, d, num_classes=3, total_iterations=4, device=torch.device("cpu"), augment_d=augment,
                        lambda_fm=10.0)
        mask, _ = _pair(b=2, size=32)
        return model.train_step(mask, torch.rand(2, 1, 32, 32) * 2 - 1, step=0)

    plain, augmented = step(False), step(True)
    assert all(torch.isfinite(v) for v in augmented.values())
    assert plain["G_L1"].item() == pytest.approx(augmented["G_L1"].item())  # same G output before the update
    assert plain["D"].item() != pytest.approx(augmented["D"].item())  # D saw other inputs


def test_gan_run_saves_the_flag(tmp_path: Path) -> None:
    cfg = tiny(tmp_path / "gan", diff_augment=True)
    result = train_gan(cfg)
    assert result["iterations"] == cfg.iterations
    saved = (tmp_path / "gan" / "config.json").read_text()
    assert '"diff_augment": true' in saved


def test_draws_do_not_depend_on_how_many_images() -> None:
    """The G step augments `real` only for feature matching; the fake must see the same transform either way."""
    mask, image = _pair(b=3)
    other = torch.rand(3, 1, 16, 16)
    torch.manual_seed(5)
    m1, f1 = diff_augment(mask, image)
    torch.manual_seed(5)
    m2, f2, _ = diff_augment(mask, image, other)
    assert torch.equal(m1, m2) and torch.equal(f1, f2)
