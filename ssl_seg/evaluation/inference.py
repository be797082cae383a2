"""Whole-image and sliding-window prediction: softmax probabilities (B, K, *S) in float32.

S is (H, W) for images and (D, H, W) for volumes; tiles, padding and the Gaussian weight follow the
image's number of spatial axes. The caller sets the model's mode (eval) and, on CUDA, any autocast
context; the model runs under `torch.no_grad()` on the image's device and its logits are accumulated
in float32.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError


def _patch_shape(patch_size: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    """One patch size per spatial axis from an int (the same on every axis) or a sequence; raise if invalid."""
    sizes = (patch_size,) * spatial_dims if isinstance(patch_size, int) else tuple(patch_size)
    if len(sizes) != spatial_dims:
        raise UserError(f"patch_size {patch_size} needs {spatial_dims} sizes, one per spatial axis (data.patch_size)")
    if any(p <= 0 for p in sizes):
        raise UserError(f"patch_size {patch_size} must be positive (data.patch_size)")
    return tuple(int(p) for p in sizes)


def gaussian_weight(patch_size: Sequence[int], sigma_scale: float = 0.125) -> Tensor:
    """(*patch_size) float32 Gaussian centred on the patch, peak 1, sigma = size * sigma_scale per axis, min > 0."""
    weight = torch.ones((), dtype=torch.float64)
    for size in _patch_shape(patch_size, len(patch_size)):
        coords = torch.arange(size, dtype=torch.float64) - size // 2  # centre as in nnU-Net
        weight = weight[..., None] * torch.exp(-0.5 * (coords / (size * sigma_scale)) ** 2)  # outer product
    weight = weight.float()
    weight = weight / weight.max()
    # Underflowed corners would divide by zero where only one tile covers a pixel.
    return weight.clamp_min(weight[weight > 0].min())


def _tile_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets covering [0, size) with tiles of `patch`, about `overlap` apart, last at the border."""
    if size <= patch:
        return [0]
    target_step = patch * (1.0 - overlap)
    n = math.ceil((size - patch) / target_step) + 1
    step = (size - patch) / (n - 1)
    return [round(step * i) for i in range(n)]


def _forward_probs(model: nn.Module, x: Tensor, num_classes: int, feature_dropout: float) -> Tensor:
    """Softmax of the model's logits in float32, checking the class count."""
    # Pass feature_dropout only when used, so any plain nn.Module (e.g. a teacher copy) also works.
    logits = model(x, feature_dropout=feature_dropout) if feature_dropout > 0 else model(x)  # (N, K, *s)
    if logits.shape[1] != num_classes:
        raise ValueError(f"model returned {logits.shape[1]} channels, expected num_classes={num_classes}")
    return torch.softmax(logits.float(), dim=1)


@torch.no_grad()
def sliding_window_predict(
    model: nn.Module,
    image: Tensor,
    patch_size: int | Sequence[int],
    num_classes: int,
    overlap: float = 0.5,
    batch_size: int = 4,
    feature_dropout: float = 0.0,
) -> Tensor:
    """Gaussian-weighted average of tile softmax probabilities: image (B, C, *S) -> (B, K, *S)."""
    if not 0.0 <= overlap < 1.0:
        raise UserError(f"overlap {overlap} must be in [0, 1) (sliding-window overlap)")
    if batch_size < 1:
        raise UserError(f"batch_size {batch_size} must be at least 1 (sliding-window batch size)")
    patch = _patch_shape(patch_size, image.ndim - 2)
    b, size = image.shape[0], image.shape[2:]
    # Zero-pad images smaller than the patch at the high end of each axis; the padding is cropped off the result.
    pad = [amount for p, s in zip(reversed(patch), reversed(size)) for amount in (0, max(p - s, 0))]
    image = F.pad(image, pad)  # (B, C, *S')
    padded = image.shape[2:]
    weight = gaussian_weight(patch).to(image.device)  # (*patch)
    probs = torch.zeros(b, num_classes, *padded, dtype=torch.float32, device=image.device)
    norm = torch.zeros(padded, dtype=torch.float32, device=image.device)
    starts = itertools.product(*(_tile_starts(s, p, overlap) for s, p in zip(padded, patch)))
    windows = [tuple(slice(o, o + p) for o, p in zip(corner, patch)) for corner in starts]
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        tiles = torch.cat([image[(..., *window)] for window in chunk])  # (n*B, C, *patch)
        tile_probs = _forward_probs(model, tiles, num_classes, feature_dropout) * weight  # (n*B, K, *patch)
        for j, window in enumerate(chunk):
            probs[(..., *window)] += tile_probs[j * b : (j + 1) * b]
            norm[window] += weight
    return (probs / norm)[(..., *(slice(0, s) for s in size))]


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    image: Tensor,
    patch_size: int | Sequence[int] | None = None,
    *,
    num_classes: int,
    overlap: float = 0.5,
    batch_size: int = 4,
    feature_dropout: float = 0.0,
) -> Tensor:
    """Probabilities (B, K, *S): one whole-image forward if it fits the patch (or no patch), else tiles."""
    if patch_size is not None:
        patch = _patch_shape(patch_size, image.ndim - 2)
        if any(s > p for s, p in zip(image.shape[2:], patch)):
            return sliding_window_predict(model, image, patch, num_classes, overlap, batch_size, feature_dropout)
    return _forward_probs(model, image, num_classes, feature_dropout)


def upsample_probs(probs: Tensor, size: Sequence[int]) -> Tensor:
    """(K, h, w) probabilities -> (K, *size), bilinear over the whole extent (the inverse of `downscale_image`)."""
    if tuple(probs.shape[1:]) == tuple(size):
        return probs
    return F.interpolate(probs[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
