"""Segmentation losses on logits (B, K, *S) and hard labels (B, *S), masked by an optional roi; S = (H, W) or (D, H, W).

All losses compute in float32 (safe under autocast) and return a scalar that is 0, never NaN,
when the roi is empty.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError

LossFn = Callable[[Tensor, Tensor, Tensor | None], Tensor]


def cross_entropy(logits: Tensor, target: Tensor, roi: Tensor | None = None) -> Tensor:
    """Pixel-wise cross-entropy averaged over the pixels inside `roi` (all pixels if None)."""
    ce = F.cross_entropy(logits.float(), target, reduction="none")  # (B, *S)
    if roi is None:
        return ce.mean()
    weight = roi.to(ce.dtype)
    # Multiply rather than index so an empty roi keeps the graph and yields exactly 0.
    return (ce * weight).sum() / weight.sum().clamp_min(1.0)


def soft_dice_loss(
    logits: Tensor,
    target: Tensor,
    roi: Tensor | None = None,
    include_background: bool = False,
    smooth: float = 1e-5,
) -> Tensor:
    """1 - mean soft Dice, pooled over the whole batch per class (nnU-Net's batch Dice)."""
    num_classes = logits.shape[1]
    probs = torch.softmax(logits.float(), dim=1)  # (B, K, *S)
    onehot = F.one_hot(target, num_classes).movedim(-1, 1).to(probs.dtype)  # (B, K, *S)
    if roi is not None:
        weight = roi.unsqueeze(1).to(probs.dtype)  # (B, 1, *S)
        probs = probs * weight
        onehot = onehot * weight
    dims = (0, *range(2, probs.ndim))
    intersection = (probs * onehot).sum(dims)  # (K,)
    denominator = probs.sum(dims) + onehot.sum(dims)  # (K,)
    dice = (2.0 * intersection + smooth) / (denominator + smooth)  # (K,)
    if not include_background and num_classes > 1:
        dice = dice[1:]
    return 1.0 - dice.mean()


def dice_ce_loss(logits: Tensor, target: Tensor, roi: Tensor | None = None) -> Tensor:
    """Cross-entropy plus soft Dice (the field's default segmentation loss)."""
    return cross_entropy(logits, target, roi) + soft_dice_loss(logits, target, roi)


LOSSES: dict[str, LossFn] = {
    "ce": cross_entropy,
    "dice": soft_dice_loss,
    "dice_ce": dice_ce_loss,
}


def build_loss(name: str) -> LossFn:
    """The loss called `name`, as a function (logits, target, roi) -> scalar."""
    if name not in LOSSES:
        raise UserError(f"unknown loss '{name}' (method.loss); choose one of: {', '.join(LOSSES)}")
    return LOSSES[name]
