"""`shape`: a statistical shape model of the labeled masks (Leventon et al. 2000; Tsai et al. 2003), a learned
mask source that draws new shapes rather than moving the labeled ones.

Shape and position are modelled apart. Each labeled mask and its three flips, centred on its foreground
centroid, becomes one truncated signed distance map per foreground class c of the region `mask >= c`
(negative inside, clipped at +-size/4): filled regions, so a ring (a wall around a cavity) is modelled as
a disk with the cavity's disk painted over it, which linear combinations keep whole; PCA of those maps keeps the modes that explain `variance` of the variation. A new mask draws
mode weights from N(0, eigenvalue), clipped at `max_sd` standard deviations (plausible shapes only),
thresholds each map at 0, paints the classes in index order, and is moved to the foreground centroid of a random crop of a labeled mask.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
from scipy import ndimage

from .data import random_crop, random_flip


def centroid(mask: np.ndarray) -> tuple[float, float]:
    """(y, x) centre of the foreground, or of the image when there is none."""
    fg = np.argwhere(mask > 0)
    return tuple(fg.mean(axis=0)) if len(fg) else ((mask.shape[0] - 1) / 2, (mask.shape[1] - 1) / 2)


def move_to(mask: np.ndarray, where: tuple[float, float]) -> np.ndarray:
    """`mask` shifted (nearest whole pixel, background brought in) so its foreground centroid lands on `where`."""
    cy, cx = centroid(mask)
    dy, dx = int(round(where[0] - cy)), int(round(where[1] - cx))
    return ndimage.shift(mask, (dy, dx), order=0, mode="constant", cval=0)


def centred(mask: np.ndarray, size: int) -> np.ndarray:
    """The (size, size) window of `mask` (background outside it) centred on its foreground centroid."""
    cy, cx = centroid(mask)
    padded = np.pad(mask, size)
    y, x = int(round(cy)) + size - size // 2, int(round(cx)) + size - size // 2
    return padded[y:y + size, x:x + size]


def signed_distance(inside: np.ndarray, clip: float) -> np.ndarray:
    """(H, W) bool -> distance to the boundary, negative inside, clipped to [-clip, clip]."""
    if not inside.any():
        return np.full(inside.shape, clip)
    if inside.all():
        return np.full(inside.shape, -clip)
    outside = ndimage.distance_transform_edt(~inside)
    depth = ndimage.distance_transform_edt(inside)
    return np.clip(outside - depth, -clip, clip)


class ShapeModelMasks:
    """PCA shape model of per-class signed distance maps of the centred labeled masks, plus their positions."""

    def __init__(self, masks: list[np.ndarray], size: int, seed: int, num_classes: int, variance: float = 0.95,
                 max_sd: float = 2.0):
        self.size, self.seed, self.num_classes, self.max_sd = size, seed, num_classes, max_sd
        self.masks, self.clip = masks, size / 4
        flips = [m[::sy, ::sx] for m in masks for sy in (1, -1) for sx in (1, -1)]
        x = np.stack([self._maps(centred(m, size)) for m in flips])  # (N, (K - 1) * size * size)
        self.mean = x.mean(axis=0)
        _, s, vt = np.linalg.svd(x - self.mean, full_matrices=False)
        eig = s ** 2 / max(len(x) - 1, 1)
        keep = int(np.searchsorted(np.cumsum(eig) / max(eig.sum(), 1e-12), variance) + 1) if eig.sum() > 0 else 0
        self.components, self.sd = vt[:keep], np.sqrt(eig[:keep])  # (k, D), (k,)

    def _maps(self, mask: np.ndarray) -> np.ndarray:
        return np.concatenate([signed_distance(mask >= c, self.clip).ravel() for c in range(1, self.num_classes)])

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        while True:
            z = np.clip(rng.standard_normal(len(self.sd)), -self.max_sd, self.max_sd) * self.sd
            shape = self.paint(self.mean + z @ self.components)
            place = random_flip(random_crop(self.masks[int(rng.integers(len(self.masks)))], self.size, rng), rng)
            yield move_to(shape, centroid(place))

    def paint(self, maps: np.ndarray) -> np.ndarray:
        """Flat per-class signed distance maps -> (size, size) int64 mask, classes painted in index order."""
        mask = np.zeros((self.size, self.size), np.int64)
        for c, sdf in enumerate(maps.reshape(self.num_classes - 1, self.size, self.size), start=1):
            mask[sdf < 0] = c
        return mask
