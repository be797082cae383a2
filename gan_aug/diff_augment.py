"""DiffAugment for a conditional discriminator (Zhao et al., NeurIPS 2020, "Differentiable Augmentation for
Data-Efficient GAN Training"): random colour, translation and cutout on D's inputs, real and fake alike.

With a few labeled pairs the PatchGAN separates real from generated within ~100 steps (D loss ~0.004 on 2 ISBI
EM slices) and its gradient to G carries little; augmenting both sides of D, differentiably, is the paper's fix.
The mask is moved and cut with its images (labels follow pixels); colour changes touch the images only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

POLICY = ("color", "translation", "cutout")


def _color(images: list[Tensor]) -> list[Tensor]:
    """The paper's brightness (+U(-0.5, 0.5)) and contrast (x U(0.5, 1.5) about the image mean), per sample."""
    b = images[0].shape[0]
    like = images[0]
    shift = torch.rand(b, 1, 1, 1, device=like.device, dtype=like.dtype) - 0.5
    scale = torch.rand(b, 1, 1, 1, device=like.device, dtype=like.dtype) + 0.5
    out = []
    for x in images:
        x = x + shift
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        out.append((x - mean) * scale + mean)
    return out


def _translation(tensors: list[Tensor], ratio: float = 0.125) -> list[Tensor]:
    """Shift every tensor by the same per-sample integer offset (up to `ratio` of the size), zero-filled."""
    b, _, h, w = tensors[0].shape
    dev = tensors[0].device
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    tx = torch.randint(-sh, sh + 1, (b, 1, 1), device=dev)
    ty = torch.randint(-sw, sw + 1, (b, 1, 1), device=dev)
    gb, gx, gy = torch.meshgrid(torch.arange(b, device=dev), torch.arange(h, device=dev),
                                torch.arange(w, device=dev), indexing="ij")
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    return [F.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)[gb, gx, gy].permute(0, 3, 1, 2) for x in tensors]


def _cutout(tensors: list[Tensor], ratio: float = 0.5) -> list[Tensor]:
    """Zero the same random square (`ratio` of each side) of every tensor, per sample."""
    b, _, h, w = tensors[0].shape
    dev = tensors[0].device
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ox = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=dev)
    oy = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=dev)
    gb, gx, gy = torch.meshgrid(torch.arange(b, device=dev), torch.arange(ch, device=dev),
                                torch.arange(cw, device=dev), indexing="ij")
    gx = torch.clamp(gx + ox - ch // 2, 0, h - 1)
    gy = torch.clamp(gy + oy - cw // 2, 0, w - 1)
    keep = torch.ones(b, h, w, device=dev, dtype=tensors[0].dtype)
    keep[gb, gx, gy] = 0
    return [x * keep.unsqueeze(1).to(x.dtype) for x in tensors]


def diff_augment(mask: Tensor, *images: Tensor, policy: tuple[str, ...] = POLICY) -> tuple[Tensor, ...]:
    """(mask, *images) after the same random transforms: colour on the images, translation and cutout on all.

    mask: one-hot (B, K, H, W); images: (B, C, H, W). Differentiable in the images; returns (mask, *images).
    """
    unknown = sorted(set(policy) - set(POLICY))
    if unknown:
        raise ValueError(f"unknown DiffAugment transform(s) {unknown}; valid: {POLICY}")
    imgs = list(images)
    if "color" in policy:
        imgs = _color(imgs)
    tensors = [mask, *imgs]
    if "translation" in policy:
        tensors = _translation(tensors)
    if "cutout" in policy:
        tensors = _cutout(tensors)
    return tuple(tensors)
