"""Procedural 3D phantom: an organ with lesions in an anisotropic volume, deterministic in (seed, index).

Shapes are drawn in millimetres and sampled on the voxel grid, so the anatomy is the same whatever the
spacing (thick slices only make it coarser along that axis). The mask is read exactly from the geometry;
the image is rendered from it with tissue texture, partial-volume blur (a fixed width in mm), a smooth
bias field and noise. Pure numpy/scipy, no torch, no I/O.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import UserError

VOLUME_TASK = "lesion_volume"  # the task name of `ssl-seg make-phantoms --task`
LESION_CLASSES = ("background", "organ", "lesion")
MIN_VOXELS = 8  # per axis


@dataclass(frozen=True)
class PhantomVolume:
    """One generated case."""

    image: np.ndarray  # (1, D, H, W) float32 in [0, 1]
    mask: np.ndarray  # (D, H, W) int64 class indices into LESION_CLASSES
    spacing: tuple[float, float, float]  # mm per voxel along (D, H, W)
    id: str


Points = list[np.ndarray]  # 3 arrays of one shape: z, y, x in units of half the largest field-of-view extent


def _physical_grid(shape: tuple[int, ...], spacing: tuple[float, ...]) -> Points:
    """Voxel-centre coordinates (each (D, H, W)), centred on 0, in units of half the largest extent in mm."""
    half = 0.5 * max(n * s for n, s in zip(shape, spacing))
    axes = [((np.arange(n) + 0.5) * s - 0.5 * n * s) / half for n, s in zip(shape, spacing)]
    return list(np.meshgrid(*axes, indexing="ij"))


class _SmoothField:
    """Smooth random field over [-1, 1]^3: cubic interpolation of a (cells + 1)^3 lattice of N(0, 1) values."""

    def __init__(self, rng: np.random.Generator, cells: int) -> None:
        self.lattice, self.cells = rng.standard_normal((cells + 1,) * 3), cells

    def __call__(self, points: Points) -> np.ndarray:
        """Field values at the points (any shape); the same wherever the points come from (no grid statistics)."""
        index = [(np.clip(p, -1.0, 1.0) + 1.0) * (self.cells / 2.0) for p in points]
        return ndimage.map_coordinates(self.lattice, index, order=3, mode="nearest")


class _Organ:
    """A rotated, bumpy ellipsoid; level(points) < 1 inside."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.angle = rng.uniform(0.0, np.pi)
        self.radii = (rng.uniform(0.45, 0.7), rng.uniform(0.5, 0.75), rng.uniform(0.35, 0.6))
        self.bumps = _SmoothField(rng, cells=4)

    def level(self, points: Points) -> np.ndarray:
        """Ellipsoid radius (1 on the surface) scaled by the bumps, same shape as each point array."""
        z, y, x = points
        c, s = np.cos(self.angle), np.sin(self.angle)
        u, v = c * y + s * x, -s * y + c * x  # in-plane rotation
        rz, ru, rv = self.radii
        return np.sqrt((z / rz) ** 2 + (u / ru) ** 2 + (v / rv) ** 2) * (1.0 + 0.1 * self.bumps(points))


def _lesions(rng: np.random.Generator, organ: _Organ, extent: np.ndarray, grid: Points) -> np.ndarray:
    """Bool (D, H, W): 1 to 3 bumpy spheres centred well inside the organ (drawn in mm, not on the grid)."""
    candidates = [rng.uniform(-e, e, 256) for e in extent]  # points in the field of view
    inside = np.flatnonzero(organ.level(candidates) < 0.6)
    lesion = np.zeros(grid[0].shape, bool)
    bumps = 1.0 + 0.2 * _SmoothField(rng, cells=6)(grid)
    for _ in range(rng.integers(1, 4)):
        if len(inside) == 0:
            break
        k = inside[rng.integers(len(inside))]
        distance = np.sqrt(sum((g - c[k]) ** 2 for g, c in zip(grid, candidates)))
        lesion |= distance * bumps < rng.uniform(0.08, 0.2)
    return lesion


def lesion_volume(
    shape: tuple[int, int, int] = (24, 64, 64),
    spacing: tuple[float, float, float] = (3.0, 1.0, 1.0),
    seed: int = 0,
    index: int = 0,
) -> PhantomVolume:
    """Organ (class 1) with brighter lesions (class 2) in a (D, H, W) volume of `spacing` mm per voxel.

    Lesion radii are 4-10 % of the largest extent; on a coarse grid one may cover no voxel centre, so a
    few cases are lesion-free (2 of 40 at (12, 32, 32) voxels of 3 x 1 x 1 mm, seed 1).
    """
    if len(shape) != 3 or any(int(n) < MIN_VOXELS for n in shape):
        raise UserError(f"phantom volume shape {tuple(shape)} needs 3 sizes of at least {MIN_VOXELS} voxels")
    if len(spacing) != 3 or any(not s > 0 for s in spacing):
        raise UserError(f"phantom volume spacing {tuple(spacing)} needs 3 positive sizes in mm (D, H, W)")
    shape = tuple(int(n) for n in shape)
    spacing = tuple(float(s) for s in spacing)
    rng = np.random.default_rng([seed, index, zlib.crc32(VOLUME_TASK.encode())])
    grid = _physical_grid(shape, spacing)
    extent = np.array([n * s for n, s in zip(shape, spacing)]) / max(n * s for n, s in zip(shape, spacing))
    organ = _Organ(rng)
    inside = organ.level(grid) < 1.0
    lesion = _lesions(rng, organ, extent, grid) & inside
    mask = np.where(lesion, 2, np.where(inside, 1, 0)).astype(np.int64)  # (D, H, W)

    organ_value = rng.uniform(0.4, 0.55)
    lesion_value = organ_value + rng.uniform(0.15, 0.3)
    clean = np.choose(mask, [rng.uniform(0.05, 0.15), organ_value, lesion_value])
    clean = clean + 0.04 * _SmoothField(rng, cells=12)(grid) * (mask > 0)  # tissue texture
    sigma_mm = rng.uniform(0.6, 1.2)  # partial-volume blur of a fixed physical width
    image = ndimage.gaussian_filter(clean, [sigma_mm / s for s in spacing])
    image = image * (1.0 + 0.1 * _SmoothField(rng, cells=2)(grid))  # bias field
    image = image + rng.normal(0.0, rng.uniform(0.02, 0.05), shape)
    image = np.clip(image, 0.0, 1.0).astype(np.float32)[None]  # (1, D, H, W)
    return PhantomVolume(image, mask, spacing, f"{VOLUME_TASK}_{seed}_{index:05d}")
