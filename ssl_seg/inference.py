"""Whole-image and sliding-window prediction: softmax probabilities (B, K, H, W) in float32.

The caller sets the model's mode (eval) and, on CUDA, any autocast context; the model runs under
`torch.no_grad()` on the image's device and its logits are accumulated in float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import UserError


def _pair(patch_size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) of a patch given as an int or a pair; raise if not positive."""
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    if ph <= 0 or pw <= 0:
        raise UserError(f"patch_size {patch_size} must be positive (data.patch_size)")
    return int(ph), int(pw)


def gaussian_weight(patch_size: tuple[int, int], sigma_scale: float = 0.125) -> Tensor:
    """(Ph, Pw) float32 Gaussian centred on the patch, peak 1, sigma = size * sigma_scale, min > 0."""
    axes = []
    for size in _pair(patch_size):
        coords = torch.arange(size, dtype=torch.float64) - size // 2  # centre as in nnU-Net
        axes.append(torch.exp(-0.5 * (coords / (size * sigma_scale)) ** 2))
    weight = (axes[0][:, None] * axes[1][None, :]).float()  # (Ph, Pw)
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
    logits = model(x, feature_dropout=feature_dropout) if feature_dropout > 0 else model(x)  # (N, K, h, w)
    if logits.shape[1] != num_classes:
        raise ValueError(f"model returned {logits.shape[1]} channels, expected num_classes={num_classes}")
    return torch.softmax(logits.float(), dim=1)


@torch.no_grad()
def sliding_window_predict(
    model: nn.Module,
    image: Tensor,
    patch_size: int | tuple[int, int],
    num_classes: int,
    overlap: float = 0.5,
    batch_size: int = 4,
    feature_dropout: float = 0.0,
) -> Tensor:
    """Gaussian-weighted average of tile softmax probabilities: image (B, C, H, W) -> (B, K, H, W)."""
    if not 0.0 <= overlap < 1.0:
        raise UserError(f"overlap {overlap} must be in [0, 1) (sliding-window overlap)")
    if batch_size < 1:
        raise UserError(f"batch_size {batch_size} must be at least 1 (sliding-window batch size)")
    ph, pw = _pair(patch_size)
    b, _, h, w = image.shape
    # Zero-pad images smaller than the patch; the padding is cropped off the result.
    image = F.pad(image, (0, max(pw - w, 0), 0, max(ph - h, 0)))  # (B, C, H', W')
    hp, wp = image.shape[-2:]
    weight = gaussian_weight((ph, pw)).to(image.device)  # (ph, pw)
    probs = torch.zeros(b, num_classes, hp, wp, dtype=torch.float32, device=image.device)
    norm = torch.zeros(hp, wp, dtype=torch.float32, device=image.device)
    corners = [(y, x) for y in _tile_starts(hp, ph, overlap) for x in _tile_starts(wp, pw, overlap)]
    for i in range(0, len(corners), batch_size):
        chunk = corners[i : i + batch_size]
        tiles = torch.cat([image[:, :, y : y + ph, x : x + pw] for y, x in chunk])  # (n*B, C, ph, pw)
        tile_probs = _forward_probs(model, tiles, num_classes, feature_dropout) * weight  # (n*B, K, ph, pw)
        for j, (y, x) in enumerate(chunk):
            probs[:, :, y : y + ph, x : x + pw] += tile_probs[j * b : (j + 1) * b]
            norm[y : y + ph, x : x + pw] += weight
    return (probs / norm)[:, :, :h, :w]


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    image: Tensor,
    patch_size: int | tuple[int, int] | None = None,
    *,
    num_classes: int,
    overlap: float = 0.5,
    batch_size: int = 4,
    feature_dropout: float = 0.0,
) -> Tensor:
    """Probabilities (B, K, H, W): one whole-image forward if it fits the patch (or no patch), else tiles."""
    if patch_size is not None:
        ph, pw = _pair(patch_size)
        if image.shape[-2] > ph or image.shape[-1] > pw:
            return sliding_window_predict(
                model, image, (ph, pw), num_classes, overlap, batch_size, feature_dropout
            )
    return _forward_probs(model, image, num_classes, feature_dropout)
