"""Mask-to-image generators (pix2pix U-Net, SPADE; diffusion.py's denoising model) and the PatchGAN discriminator,
chosen by name.

Generators take a one-hot mask (B, K, H, W) and return an image (B, C, H, W) in [-1, 1] for any H, W
(padded to the network stride, cropped back). Discriminators take (one-hot mask, image) and return,
per scale, the list of intermediate feature maps whose last entry is the patch logits.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_seg.errors import UserError

NORMS = ("instance", "batch", "none")


def auto_n_down(size: int) -> int:
    """Down-samplings that leave a 2x2 bottleneck at crop `size`, within pix2pix's 3..8 (256 px -> 7)."""
    return max(3, min(8, int(math.log2(max(size, 8))) - 1))


def one_hot(mask: Tensor, num_classes: int) -> Tensor:
    """Class indices (B, H, W) -> float one-hot (B, K, H, W)."""
    return F.one_hot(mask.long(), num_classes).permute(0, 3, 1, 2).float()


def _norm(kind: str, channels: int, affine: bool = True) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=affine)
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=affine)
    if kind == "none":
        return nn.Identity()
    raise UserError(f"--norm {kind}: unknown normalisation; valid: {', '.join(NORMS)}")


def pad_to_stride(x: Tensor, stride: int) -> Tensor:
    """Replicate-pad bottom/right so H and W divide `stride` (a padded one-hot mask stays one-hot)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % stride, (-w) % stride
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


class AlwaysDropout(nn.Dropout):
    """Dropout that stays on in eval mode: pix2pix's source of stochasticity when sampling.

    Within `shared_noise(..., share, seed)` each unit uses, with probability `share`, the keep/drop decision that
    is common to the whole batch (drawn from the seeded generator), else its own.
    """

    noise_sharing: tuple[float, torch.Generator] | None = None

    def forward(self, x: Tensor) -> Tensor:
        if self.noise_sharing is None:
            return F.dropout(x, self.p, training=True)
        share, rng = self.noise_sharing
        keep = torch.empty(x[:1].shape, device=x.device, dtype=x.dtype).bernoulli_(1 - self.p, generator=rng)
        if share < 1:
            own = torch.empty_like(x).bernoulli_(1 - self.p)
            keep = torch.where(torch.rand(x.shape, device=x.device) < share, keep.expand_as(x), own)
        return x * keep / (1 - self.p)


def _shared_normal(like: Tensor, shape: tuple[int, ...], shared: tuple[float, torch.Generator] | None) -> Tensor:
    """N(0, 1) of `shape` (batch first) on `like`'s device and dtype; with `shared` (share, generator), its
    correlation between batch elements is `share`."""
    noise = torch.randn(shape, device=like.device, dtype=like.dtype)
    if shared is not None:
        share, rng = shared
        common = torch.randn((1, *shape[1:]), generator=rng, device=like.device, dtype=like.dtype)
        noise = share**0.5 * common + (1 - share) ** 0.5 * noise
    return noise


def _generator_input(mask: Tensor, noise_channel: bool, shared: tuple[float, torch.Generator] | None = None,
                latent_dim: int = 0, latent: Tensor | None = None) -> Tensor:
    """The one-hot mask with, when the generator has them, one N(0, 1) channel and `latent_dim` channels that hold
    the latent code (B, latent_dim) at every pixel (drawn from N(0, 1) when `latent` is None); with `shared`
    (share, generator), the drawn noise's correlation between batch elements is `share`."""
    parts = [mask]
    if noise_channel:
        parts.append(_shared_normal(mask, (mask.shape[0], 1, *mask.shape[2:]), shared))
    if latent_dim:
        z = _shared_normal(mask, (mask.shape[0], latent_dim), shared) if latent is None else latent.to(mask.dtype)
        parts.append(z[:, :, None, None].expand(-1, -1, *mask.shape[2:]))
    elif latent is not None:
        raise ValueError("a latent code was given to a generator built without --latent-dim")
    return torch.cat(parts, dim=1) if len(parts) > 1 else mask


@contextlib.contextmanager
def shared_noise(generator: nn.Module, share: float, seed: int) -> Iterator[nn.Module]:
    """Within the block, a `share` in [0, 1] of `generator`'s noise (dropout decisions, noise channel, latent code) is
    common to all batch elements and drawn from a generator seeded with `seed`: the slices of one volume, generated
    with one seed (in any chunks), share that part of their noise (through-plane consistency). 0 = independent."""
    if not 0 <= share <= 1:
        raise UserError(f"--slice-noise-share {share}: must be in [0, 1]")
    device = next(generator.parameters()).device
    rng = torch.Generator(device=device).manual_seed(seed)
    modules = [m for m in generator.modules() if hasattr(m, "noise_sharing")]
    for m in modules:
        m.noise_sharing = (share, rng)
    try:
        yield generator
    finally:
        for m in modules:
            m.noise_sharing = None


def _dropout_levels(n_down: int) -> set[int]:
    """Decoder levels that get dropout: the three below the bottleneck (pix2pix's ngf*8 blocks), never the output."""
    return {i for i in range(n_down - 4, n_down - 1) if i >= 1}


class UnetGenerator(nn.Module):
    """pix2pix U-Net: `n_down` stride-2 4x4 convs, mirrored transposed convs with skips, tanh output.

    >>> g = UnetGenerator(num_classes=4, out_channels=1, ngf=8, n_down=4)
    >>> g(one_hot(torch.zeros(2, 48, 80, dtype=torch.long), 4)).shape
    torch.Size([2, 1, 48, 80])
    """

    def __init__(self, num_classes: int, out_channels: int, ngf: int = 64, n_down: int = 7,
                 noise_channel: bool = False, dropout: float = 0.5, norm: str = "instance", latent_dim: int = 0):
        super().__init__()
        if n_down < 2:
            raise UserError(f"--n-down {n_down}: the U-Net needs at least 2 down-samplings")
        self.num_classes, self.noise_channel, self.latent_dim = num_classes, noise_channel, latent_dim
        self.noise_sharing: tuple[float, torch.Generator] | None = None  # set by shared_noise
        self.stride = 2**n_down
        width = [ngf * min(2**i, 8) for i in range(n_down)]
        in_ch = num_classes + int(noise_channel) + latent_dim
        self.down = nn.ModuleList([nn.Conv2d(in_ch, width[0], 4, 2, 1)])
        for i in range(1, n_down):
            innermost = i == n_down - 1
            self.down.append(nn.Sequential(
                nn.LeakyReLU(0.2), nn.Conv2d(width[i - 1], width[i], 4, 2, 1),
                nn.Identity() if innermost else _norm(norm, width[i])))
        drop = _dropout_levels(n_down)
        self.up = nn.ModuleList()
        for i in range(n_down):  # up[i] produces the resolution of level i (input / 2**i)
            cin = width[i] if i == n_down - 1 else 2 * width[i]
            if i == 0:
                self.up.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(cin, out_channels, 4, 2, 1), nn.Tanh()))
            else:
                layers = [nn.ReLU(), nn.ConvTranspose2d(cin, width[i - 1], 4, 2, 1), _norm(norm, width[i - 1])]
                if i in drop and dropout > 0:
                    layers.append(AlwaysDropout(dropout))
                self.up.append(nn.Sequential(*layers))

    def forward(self, mask: Tensor, latent: Tensor | None = None) -> Tensor:
        """One-hot mask (B, K, H, W) (and latent code (B, latent_dim), else drawn) -> image (B, C, H, W) in [-1, 1]."""
        h, w = mask.shape[-2:]
        x = _generator_input(mask, self.noise_channel, self.noise_sharing, self.latent_dim, latent)
        x = pad_to_stride(x, self.stride)  # (B, K[+1][+latent_dim], H', W')
        skips = []
        for block in self.down:
            x = block(x)  # level i: (B, width[i], H' / 2**(i+1), W' / 2**(i+1))
            skips.append(x)
        y = self.up[-1](skips[-1])
        for i in range(len(self.up) - 2, -1, -1):
            y = self.up[i](torch.cat([y, skips[i]], dim=1))  # (B, width[i-1] or C, H' / 2**i, W' / 2**i)
        return y[..., :h, :w]


class SPADE(nn.Module):
    """Spatially-adaptive normalisation (Park et al. 2019): param-free norm, then mask-predicted scale and shift."""

    def __init__(self, channels: int, num_classes: int, hidden: int, norm: str = "instance"):
        super().__init__()
        self.norm = _norm(norm, channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(num_classes, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, C, h, w), one-hot mask (B, K, H, W) -> (B, C, h, w)."""
        # area resizing keeps thin structures as soft fractions where nearest would drop them
        m = self.shared(F.interpolate(mask, size=x.shape[-2:], mode="area"))  # (B, hidden, h, w)
        return self.norm(x) * (1 + self.gamma(m)) + self.beta(m)


class SPADEResBlock(nn.Module):
    """SPADE residual block: (SPADE, LeakyReLU, 3x3 conv) twice, learned 1x1 shortcut when widths differ."""

    def __init__(self, cin: int, cout: int, num_classes: int, hidden: int, norm: str):
        super().__init__()
        mid = min(cin, cout)
        self.norm0, self.conv0 = SPADE(cin, num_classes, hidden, norm), nn.Conv2d(cin, mid, 3, padding=1)
        self.norm1, self.conv1 = SPADE(mid, num_classes, hidden, norm), nn.Conv2d(mid, cout, 3, padding=1)
        self.shortcut = None
        if cin != cout:
            self.norm_s, self.shortcut = SPADE(cin, num_classes, hidden, norm), nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, cin, h, w) -> (B, cout, h, w), modulated by the one-hot mask."""
        skip = x if self.shortcut is None else self.shortcut(self.norm_s(x, mask))
        y = self.conv0(F.leaky_relu(self.norm0(x, mask), 0.2))
        y = self.conv1(F.leaky_relu(self.norm1(y, mask), 0.2))
        return skip + y


class SpadeGenerator(nn.Module):
    """SPADE generator: the mask (and optional noise) at stride 2**n_down, then SPADE res-blocks and x2 upsampling.

    >>> g = SpadeGenerator(num_classes=2, out_channels=3, ngf=8, n_down=3)
    >>> g(one_hot(torch.zeros(1, 32, 32, dtype=torch.long), 2)).shape
    torch.Size([1, 3, 32, 32])
    """

    def __init__(self, num_classes: int, out_channels: int, ngf: int = 64, n_down: int = 5,
                 noise_channel: bool = False, dropout: float = 0.5, norm: str = "instance", latent_dim: int = 0):
        super().__init__()
        if n_down < 1:
            raise UserError(f"--n-down {n_down}: the SPADE generator needs at least 1 up-sampling")
        self.num_classes, self.noise_channel, self.latent_dim = num_classes, noise_channel, latent_dim
        self.noise_sharing: tuple[float, torch.Generator] | None = None  # set by shared_noise
        self.stride = 2**n_down
        width = [ngf * min(2**i, 8) for i in range(n_down + 1)]
        hidden = 2 * ngf
        self.head = nn.Conv2d(num_classes + int(noise_channel) + latent_dim, width[n_down], 3, padding=1)
        # blocks[j] runs at level n_down - j and maps width[level] -> width[level - 1]; the last runs at full size
        self.blocks = nn.ModuleList(
            [SPADEResBlock(width[lv], width[max(lv - 1, 0)], num_classes, hidden, norm)
             for lv in range(n_down, -1, -1)])
        drop = _dropout_levels(n_down + 1)
        self.drops = nn.ModuleList(
            [AlwaysDropout(dropout) if lv in drop and dropout > 0 else nn.Identity() for lv in range(n_down, -1, -1)])
        self.out = nn.Conv2d(width[0], out_channels, 3, padding=1)

    def forward(self, mask: Tensor, latent: Tensor | None = None) -> Tensor:
        """One-hot mask (B, K, H, W) (and latent code (B, latent_dim), else drawn) -> image (B, C, H, W) in [-1, 1]."""
        h, w = mask.shape[-2:]
        mask = pad_to_stride(mask, self.stride)  # (B, K, H', W')
        small = F.interpolate(mask, scale_factor=1 / self.stride, mode="area")  # (B, K, H'/s, W'/s)
        x = self.head(_generator_input(small, self.noise_channel, self.noise_sharing, self.latent_dim, latent))
        for j, (block, drop) in enumerate(zip(self.blocks, self.drops)):
            x = drop(block(x, mask))
            if j < len(self.blocks) - 1:
                x = F.interpolate(x, scale_factor=2, mode="nearest")  # one level up
        y = torch.tanh(self.out(F.leaky_relu(x, 0.2)))  # (B, C, H', W')
        return y[..., :h, :w]


class LatentEncoder(nn.Module):
    """BicycleGAN's E (Zhu et al., NeurIPS 2017, E_NLayers): image (B, C, H, W) -> (mu, logvar) of a Gaussian latent
    code (B, latent_dim) each, from `n_layers` stride-2 4x4 convs, a global average pool and two linear heads.

    >>> mu, logvar = LatentEncoder(1, latent_dim=8, nef=8)(torch.zeros(2, 1, 32, 32))
    >>> mu.shape, logvar.shape
    (torch.Size([2, 8]), torch.Size([2, 8]))
    """

    def __init__(self, in_channels: int, latent_dim: int, nef: int = 64, n_layers: int = 3, norm: str = "instance"):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, nef, 4, 2, 1), nn.LeakyReLU(0.2)]
        cout = nef
        for n in range(1, n_layers):
            cin, cout = cout, nef * min(2**n, 4)
            layers += [nn.Conv2d(cin, cout, 4, 2, 1), _norm(norm, cout), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.mu, self.logvar = nn.Linear(cout, latent_dim), nn.Linear(cout, latent_dim)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """image (B, C, H, W) -> (mu, logvar), each (B, latent_dim)."""
        h = self.features(image)
        return self.mu(h), self.logvar(h)


def kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over the latent dimensions, mean over the batch."""
    return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()


class PatchDiscriminator(nn.Module):
    """pix2pix PatchGAN: `n_layers` stride-2 4x4 convs, then two stride-1 (70x70 receptive field at n_layers=3)."""

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm: str = "instance"):
        super().__init__()
        blocks = [nn.Sequential(nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2))]
        cout = ndf
        for n in range(1, n_layers + 1):
            cin, cout = cout, ndf * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            blocks.append(nn.Sequential(nn.Conv2d(cin, cout, 4, stride, 1), _norm(norm, cout), nn.LeakyReLU(0.2)))
        blocks.append(nn.Sequential(nn.Conv2d(cout, 1, 4, 1, 1)))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> list[Tensor]:
        """x (B, K + C, H, W) -> feature maps of every block; the last is the logits (B, 1, h, w)."""
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats


class MultiscaleDiscriminator(nn.Module):
    """`num_D` PatchGANs on the (mask, image) pair at scales 1, 1/2, 1/4, ... (pix2pixHD); num_D=1 is plain pix2pix."""

    def __init__(self, num_classes: int, image_channels: int, ndf: int = 64, n_layers: int = 3,
                 num_D: int = 1, norm: str = "instance"):
        super().__init__()
        if num_D < 1 or n_layers < 1:
            raise UserError(f"--num-d {num_D} / --n-layers {n_layers}: both must be at least 1")
        self.nets = nn.ModuleList(
            [PatchDiscriminator(num_classes + image_channels, ndf, n_layers, norm) for _ in range(num_D)])

    def forward(self, mask: Tensor, image: Tensor) -> list[list[Tensor]]:
        """One-hot mask (B, K, H, W), image (B, C, H, W) -> per scale, the feature maps (logits last)."""
        x = torch.cat([mask, image], dim=1)  # (B, K + C, H, W)
        out = []
        for i, net in enumerate(self.nets):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            out.append(net(x))
        return out


def _diffusion_generator(**kwargs: Any) -> nn.Module:
    """diffusion.DiffusionGenerator, imported when chosen (it loads MONAI's generative parts)."""
    from .diffusion import DiffusionGenerator

    return DiffusionGenerator(**kwargs)


GENERATORS: dict[str, Callable[..., nn.Module]] = {"unet": UnetGenerator, "spade": SpadeGenerator,
                                                   "diffusion": _diffusion_generator}
DISCRIMINATORS: dict[str, Callable[..., nn.Module]] = {"patchgan": MultiscaleDiscriminator}


def build_generator(name: str, num_classes: int, out_channels: int, ngf: int = 64, n_down: int = 7,
                    noise_channel: bool = False, dropout: float = 0.5, norm: str = "instance",
                    latent_dim: int = 0) -> nn.Module:
    """Generator by registry name; an unknown name raises UserError listing the valid ones."""
    if name not in GENERATORS:
        raise UserError(f"--generator {name}: unknown generator; valid: {', '.join(GENERATORS)}")
    return GENERATORS[name](num_classes=num_classes, out_channels=out_channels, ngf=ngf, n_down=n_down,
                            noise_channel=noise_channel, dropout=dropout, norm=norm, latent_dim=latent_dim)


def build_discriminator(name: str, num_classes: int, image_channels: int, ndf: int = 64, n_layers: int = 3,
                        num_D: int = 1, norm: str = "instance") -> nn.Module:
    """Discriminator by registry name; an unknown name raises UserError listing the valid ones."""
    if name not in DISCRIMINATORS:
        raise UserError(f"--discriminator {name}: unknown discriminator; valid: {', '.join(DISCRIMINATORS)}")
    return DISCRIMINATORS[name](num_classes=num_classes, image_channels=image_channels, ndf=ndf,
                                n_layers=n_layers, num_D=num_D, norm=norm)
