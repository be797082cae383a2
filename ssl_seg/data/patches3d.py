"""3D patch geometry: the patch shape for a dataset's spacing, and where to cut a patch (foreground oversampling).

Pure functions of tensors and numbers; randomness from the global torch RNG (seeded per sample by PairDataset).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

THICK_RATIO = 3.0  # slices this many times thicker than the in-plane voxel: in-plane augmentation only (nnU-Net's 3)
PATCH_MULTIPLE = 8  # patch sides are multiples of this (a depth-3 U-Net's stride; deeper nets pad inside)


def is_thick(spacing: Sequence[float]) -> bool:
    """True when the slice spacing (axis D of (D, H, W) mm) is at least THICK_RATIO x the finest in-plane one."""
    return spacing[0] >= THICK_RATIO * min(spacing[1], spacing[2])


def patch_shape(patch_size: int, spacing: Sequence[float], median_shape: Sequence[int]) -> tuple[int, int, int]:
    """(D, H, W) patch covering about `patch_size` voxels of the finest spacing on every axis (the same extent in mm).

    Each side is rounded to a multiple of PATCH_MULTIPLE (at least that) and kept no larger than the median volume
    side rounded up to one, so thick-slice data gets fewer slices and small volumes are not mostly padding.
    """
    finest = min(spacing)
    sides = []
    for s, extent in zip(spacing, median_shape):
        side = max(PATCH_MULTIPLE, PATCH_MULTIPLE * round(patch_size * finest / s / PATCH_MULTIPLE))
        sides.append(min(side, PATCH_MULTIPLE * math.ceil(extent / PATCH_MULTIPLE)))
    return tuple(sides)  # type: ignore[return-value]


def crop_padded(t: Tensor, starts: Sequence[int], sizes: Sequence[int]) -> Tensor:
    """The window [start, start + size) of t's last len(sizes) axes, zero where it leaves t: (..., *sizes)."""
    spatial = t.shape[t.ndim - len(sizes):]
    out = t.new_zeros(*t.shape[: t.ndim - len(sizes)], *sizes)
    src, dst = [], []
    for start, size, extent in zip(starts, sizes, spatial):
        lo, hi = max(start, 0), min(start + size, extent)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[(..., *dst)] = t[(..., *src)]
    return out


def _randint(low: int, high: int) -> int:
    """Uniform integer in [low, high] from the global torch RNG."""
    return low + int(torch.randint(0, high - low + 1, ()))


def window_starts(mask: Tensor, region: Sequence[int], foreground: bool) -> list[int]:
    """Corner of a window of `region` voxels in a volume `mask` (D, H, W) of class indices.

    Without `foreground`, uniform over the corners that keep the window inside the volume (or the volume inside the
    window, along axes where the volume is smaller). With it, a random foreground voxel (label > 0) is drawn and
    the window placed uniformly among those positions that contain it (nnU-Net's forced-foreground patches); a
    volume without foreground falls back to the uniform draw.
    """
    extents = mask.shape[-len(region):]
    ranges = [(min(0, e - r), max(0, e - r)) for e, r in zip(extents, region)]
    if foreground:
        voxels = torch.nonzero(mask > 0)  # (N, 3)
        if len(voxels):
            centre = voxels[_randint(0, len(voxels) - 1)].tolist()
            starts = []
            for c, r, (lo, hi) in zip(centre, region, ranges):
                a, b = max(c - r + 1, lo), min(c, hi)
                starts.append(_randint(a, b) if a <= b else c - r // 2)
            return starts
    return [_randint(lo, hi) for lo, hi in ranges]
