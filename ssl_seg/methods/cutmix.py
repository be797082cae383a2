"""CutMix (Yun et al. 2019) for segmentation: random boxes, pasted from another sample of the batch.

Images, pseudo-labels and confidence masks are mixed with the same boxes so they stay aligned.
Randomness comes from the global torch RNG unless a `generator` (on `device`) is given.
"""

from __future__ import annotations

import torch
from torch import Tensor


def cutmix_boxes(
    batch: int,
    height: int,
    width: int,
    device: torch.device | str,
    p: float = 0.5,
    area: tuple[float, float] = (0.02, 0.4),
    aspect: tuple[float, float] = (0.3, 1 / 0.3),
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B, H, W) bool masks, each one axis-aligned box with probability `p`, else empty.

    Box area is a uniform fraction `area` of the image and its height/width ratio uniform in `aspect`
    (UniMatch's ranges); sides are clipped to the image instead of UniMatch's rejection loop.
    """
    u = torch.rand(5, batch, device=device, generator=generator)  # (5, B): one row per random quantity
    size = (area[0] + (area[1] - area[0]) * u[0]) * height * width
    ratio = aspect[0] + (aspect[1] - aspect[0]) * u[1]
    box_h = torch.sqrt(size * ratio).floor().clamp(1, height)
    box_w = torch.sqrt(size / ratio).floor().clamp(1, width)
    top = (u[2] * (height - box_h + 1)).floor()
    left = (u[3] * (width - box_w + 1)).floor()
    rows = torch.arange(height, device=device)[None, :, None]  # (1, H, 1)
    cols = torch.arange(width, device=device)[None, None, :]  # (1, 1, W)
    inside_rows = (rows >= top[:, None, None]) & (rows < (top + box_h)[:, None, None])
    inside_cols = (cols >= left[:, None, None]) & (cols < (left + box_w)[:, None, None])
    return inside_rows & inside_cols & (u[4] < p)[:, None, None]


def paste(target: Tensor, source: Tensor, boxes: Tensor) -> Tensor:
    """`target` with `source` pasted inside `boxes` (B, H, W); works for (B, H, W) and (B, C, H, W) tensors."""
    mask = boxes if target.dim() == 3 else boxes[:, None]
    return torch.where(mask, source, target)


def cutmix(target: Tensor, boxes: Tensor) -> Tensor:
    """Paste, inside each sample's box, the next sample of the batch (source = batch rolled by one)."""
    return paste(target, target.roll(1, dims=0), boxes)
