"""The masked cross-entropy that trains on confident pseudo-labels (see pseudo_labeler.py for how they are made)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def masked_cross_entropy(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Cross-entropy of logits (B, K, H, W) on labels (B, H, W), averaged over ALL pixels with masked ones as 0.

    FixMatch's convention: dividing by the pixel count (not the confident count) lets the loss grow
    with the share of confident pixels instead of amplifying the few confident ones early on.
    """
    per_pixel = F.cross_entropy(logits.float(), labels, reduction="none")  # (B, H, W)
    return (per_pixel * mask).mean()
