"""Strong photometric augmentation on batched image tensors, one random draw per sample.

The jitter and blur work on images in [0, 1]; `strong_augment` takes the z-scored images the data
pipeline delivers, maps each sample's own range onto [0, 1], augments, and maps back with the same
affine, so the strong view stays on the network's input scale (clamping z-scores to [0, 1] instead
zeroes every below-mean pixel). Randomness comes from the global torch RNG (seeded and checkpointed
by the trainer) unless a `generator` is given; a generator must live on the images' device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _uniform(n: int, low: float, high: float, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """(n,) samples of U(low, high) in `like`'s dtype and device."""
    u = torch.rand(n, device=like.device, dtype=like.dtype, generator=generator)
    return low + (high - low) * u


def photometric_jitter(
    images: Tensor,
    p: float = 0.8,
    brightness: tuple[float, float] = (0.5, 1.5),
    contrast: tuple[float, float] = (0.5, 1.5),
    gamma: tuple[float, float] = (0.7, 1.5),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Scale brightness, contrast about the image mean, then apply gamma, each sample with probability `p`.

    images (B, C, *S) in [0, 1] -> (B, C, *S) in [0, 1]. Brightness and contrast ranges follow
    UniMatch's ColorJitter(0.5, 0.5); gamma follows nnU-Net's (0.7, 1.5).
    """
    b = images.shape[0]
    per_sample = (b, *(1,) * (images.ndim - 1))
    apply = (torch.rand(b, device=images.device, generator=generator) < p).view(per_sample)
    scale = _uniform(b, *brightness, images, generator).view(per_sample)
    stretch = _uniform(b, *contrast, images, generator).view(per_sample)
    power = _uniform(b, *gamma, images, generator).view(per_sample)
    x = images * scale
    mean = x.mean(dim=tuple(range(1, images.ndim)), keepdim=True)
    x = (mean + stretch * (x - mean)).clamp(0.0, 1.0).pow(power)
    return torch.where(apply, x, images)


def gaussian_blur(
    images: Tensor,
    p: float = 0.5,
    sigma: tuple[float, float] = (0.1, 2.0),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Separable Gaussian blur with a per-sample sigma in pixels (voxels), each sample with probability `p`.

    images (B, C, *S) -> (B, C, *S), S = (H, W) or (D, H, W); borders are replicated. The kernel spans 3 sigma of
    the largest sigma; samples left unblurred get a delta kernel so the whole batch is one grouped conv per axis.
    """
    b, c, *spatial = images.shape
    conv = F.conv3d if len(spatial) == 3 else F.conv2d
    radius = math.ceil(3 * sigma[1])
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)  # (k,)
    apply = torch.rand(b, device=images.device, generator=generator) < p
    sig = _uniform(b, *sigma, images, generator)
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * sig[:, None] ** 2))  # (B, k)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    delta = (offsets == 0).to(images.dtype).expand(b, -1)
    kernel = torch.where(apply[:, None], kernel, delta).repeat_interleave(c, dim=0)  # (B*C, k)
    with torch.autocast(images.device.type, enabled=False):  # keep the image in full precision under AMP
        x = F.pad(images.reshape(1, b * c, *spatial), (radius,) * 2 * len(spatial), mode="replicate")
        for axis in reversed(range(len(spatial))):  # W, then H (then D)
            shape = [b * c, 1] + [1] * len(spatial)
            shape[2 + axis] = -1
            x = conv(x, kernel.view(shape), groups=b * c)
    return x.reshape(b, c, *spatial)


def strong_augment(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """UniMatch's strong view on a batch of any intensity scale: photometric jitter (p=0.8), Gaussian blur (p=0.5).

    Each sample is mapped from its own [min, max] onto [0, 1] for the jitter and back afterwards.
    """
    dims = tuple(range(1, images.ndim))
    low = images.amin(dim=dims, keepdim=True)
    span = (images.amax(dim=dims, keepdim=True) - low).clamp_min(1e-6)
    unit = (images - low) / span
    return gaussian_blur(photometric_jitter(unit, generator=generator), generator=generator) * span + low
