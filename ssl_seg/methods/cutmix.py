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
    depth: int | None = None,
) -> Tensor:
    """(B, H, W) bool masks, or (B, D, H, W) with `depth`: each one axis-aligned box with probability `p`, else empty.

    Box size is a uniform fraction `area` of the image (of the volume with `depth`) and its height/width ratio
    uniform in `aspect` (UniMatch's ranges); sides are clipped to the image instead of UniMatch's rejection loop.
    In a volume the fraction f is split as f^(2/3) of the slice area (drawn as in 2D) times f^(1/3) of the depth.
    """
    sizes = (height, width) if depth is None else (depth, height, width)
    u = torch.rand(3 + len(sizes), batch, device=device, generator=generator)  # one row per random quantity
    fraction = area[0] + (area[1] - area[0]) * u[0]
    in_plane = fraction if depth is None else fraction ** (2 / 3)
    size = in_plane * height * width
    ratio = aspect[0] + (aspect[1] - aspect[0]) * u[1]
    sides = [torch.sqrt(size * ratio).floor().clamp(1, height), torch.sqrt(size / ratio).floor().clamp(1, width)]
    if depth is not None:
        sides.insert(0, (fraction ** (1 / 3) * depth).floor().clamp(1, depth))
    inside = (u[2 + len(sizes)] < p).view(batch, *(1,) * len(sizes))  # (B, 1, ...)
    for axis, (n, side) in enumerate(zip(sizes, sides)):
        start = (u[2 + axis] * (n - side + 1)).floor()  # (B,)
        shape = [batch] + [1] * len(sizes)
        shape[1 + axis] = n
        coords = torch.arange(n, device=device).view(1, *shape[1:])  # (1, ..., n, ...)
        view = (batch, *(1,) * len(sizes))
        inside = inside & (coords >= start.view(view)) & (coords < (start + side).view(view))
    return inside


def paste(target: Tensor, source: Tensor, boxes: Tensor) -> Tensor:
    """`target` with `source` pasted inside `boxes` (B, *S); for label maps (B, *S) and images (B, C, *S)."""
    mask = boxes if target.dim() == boxes.dim() else boxes[:, None]
    return torch.where(mask, source, target)


def boxes_like(images: Tensor, p: float) -> Tensor:
    """`cutmix_boxes` for a batch of images (B, C, H, W) or volumes (B, C, D, H, W): (B, *S) bool."""
    *depth, h, w = images.shape[2:]
    return cutmix_boxes(images.shape[0], h, w, images.device, p=p, depth=depth[0] if depth else None)


def cutmix(target: Tensor, boxes: Tensor) -> Tensor:
    """Paste, inside each sample's box, the next sample of the batch (source = batch rolled by one)."""
    return paste(target, target.roll(1, dims=0), boxes)
