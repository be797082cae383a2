"""gan_aug.networks: generator/discriminator shapes over the registries, PatchGAN receptive field, stochasticity."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gan_aug.networks import (DISCRIMINATORS, GENERATORS, auto_n_down, build_discriminator, build_generator,
                              one_hot)
from ssl_seg.errors import UserError



@pytest.mark.parametrize("name", sorted(set(GENERATORS) - {"diffusion"}))  # sampled without gradients: test_diffusion
@pytest.mark.parametrize("size", [(32, 32), (64, 64), (48, 80), (50, 70)])
@pytest.mark.parametrize("num_classes", [2, 4])
def test_generator_shapes_range_and_gradients(name: str, size: tuple[int, int], num_classes: int) -> None:
    torch.manual_seed(0)
    h, w = size
    g = build_generator(name, num_classes, out_channels=3, ngf=8, n_down=3, noise_channel=num_classes == 4,
                        latent_dim=3 if size == (50, 70) else 0)
    mask = one_hot(torch.randint(0, num_classes, (2, h, w)), num_classes)
    y = g(mask)
    assert y.shape == (2, 3, h, w)  # 50x70 is not a multiple of the stride 8: padded, then cropped back
    assert torch.isfinite(y).all() and y.abs().max() <= 1.0
    y.mean().backward()
    missing = [n for n, p in g.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


@pytest.mark.parametrize("num_D", [1, 2])
def test_discriminator_feature_shapes(num_D: int) -> None:
    d = build_discriminator("patchgan", num_classes=4, image_channels=1, ndf=8, n_layers=3, num_D=num_D)
    out = d(one_hot(torch.zeros(2, 64, 64, dtype=torch.long), 4), torch.zeros(2, 1, 64, 64))
    assert len(out) == num_D
    # 64 -> 32 -> 16 -> 8 (stride 2) -> 7 -> 6 (4x4 stride 1, pad 1); widths 8, 16, 32, 64, 1
    assert [tuple(f.shape) for f in out[0]] == [(2, 8, 32, 32), (2, 16, 16, 16), (2, 32, 8, 8), (2, 64, 7, 7),
                                                (2, 1, 6, 6)]
    if num_D == 2:  # the second scale sees the pair average-pooled to 32 px: 16, 8, 4, 3, 2
        assert tuple(out[1][-1].shape) == (2, 1, 2, 2)


def _analytic_receptive_field(module: nn.Module) -> int:
    """Receptive field of stacked convs: r <- r * stride + (kernel - stride), from the output back."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    r = 1
    for conv in reversed(convs):
        r = r * conv.stride[0] + (conv.kernel_size[0] - conv.stride[0])
    return r


@pytest.mark.parametrize("n_layers, expected", [(1, 16), (2, 34), (3, 70)])
def test_patchgan_receptive_field(n_layers: int, expected: int) -> None:
    d = build_discriminator("patchgan", num_classes=1, image_channels=1, ndf=4, n_layers=n_layers, norm="none")
    assert _analytic_receptive_field(d.nets[0]) == expected
    # empirically: the input pixels that move one central logit (no norm layer couples distant pixels)
    torch.manual_seed(0)
    x = torch.randn(1, 2, 160, 160, dtype=torch.float64, requires_grad=True)
    logits = d.double().nets[0](x)[-1]
    c = logits.shape[-1] // 2
    logits[0, 0, c, c].backward()
    touched = x.grad[0].abs().sum(0) > 0
    rows, cols = touched.any(1).nonzero(), touched.any(0).nonzero()
    assert int(rows.max() - rows.min() + 1) == expected
    assert int(cols.max() - cols.min() + 1) == expected


def test_default_patchgan_is_70() -> None:
    d = build_discriminator("patchgan", num_classes=4, image_channels=1)
    assert _analytic_receptive_field(d.nets[0]) == 70


def test_dropout_is_the_noise_source_in_eval_mode() -> None:
    torch.manual_seed(0)
    mask = one_hot(torch.randint(0, 2, (1, 32, 32)), 2)
    noisy = build_generator("unet", 2, 1, ngf=8, n_down=4, dropout=0.5).eval()
    assert not torch.equal(noisy(mask), noisy(mask))
    plain = build_generator("unet", 2, 1, ngf=8, n_down=4, dropout=0.0).eval()
    assert torch.equal(plain(mask), plain(mask))


def test_one_hot_and_auto_depth() -> None:
    mask = torch.tensor([[[0, 2], [1, 0]]])
    assert one_hot(mask, 3)[0, :, 0, 1].tolist() == [0.0, 0.0, 1.0]
    assert one_hot(mask, 3).sum(1).eq(1).all()
    assert [auto_n_down(s) for s in (32, 64, 128, 256, 512)] == [4, 5, 6, 7, 8]


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(UserError, match="unet, spade"):
        build_generator("resnet", 2, 1)
    with pytest.raises(UserError, match="patchgan"):
        build_discriminator("stylegan", 2, 1)
    with pytest.raises(UserError, match="instance, batch, none"):
        build_generator("unet", 2, 1, norm="group")
    assert set(GENERATORS) == {"unet", "spade", "diffusion"} and set(DISCRIMINATORS) == {"patchgan"}
