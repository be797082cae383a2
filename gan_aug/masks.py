"""Mask sources for synthesis, chosen by name: `deform` and `mix` reuse labeled masks, `shape` (a statistical
shape model fitted on them, shape_model.py) draws new ones, `phantom` draws from the phantom generator.

`phantom` is an oracle: it draws from the generator that made the phantom test set, which no user has for
real data. It exists only for an explicitly labelled upper-bound row; every default is DEFAULT_MASK_SOURCE.

Each source is an endless iterator of (size, size) int64 masks with values < num_classes, deterministic
from its seed. Deformations resample with nearest neighbour, so every output pixel is a valid label.
"""

from __future__ import annotations

import warnings
from typing import Iterable, Iterator

import numpy as np
from scipy import ndimage

from ssl_seg.data.sample import SampleSource

from ssl_seg.data.sources import open_source
from ssl_seg.data.phantoms import phantom_mask
from ssl_seg.errors import UserError

from .data import random_crop, random_flip
from .shape_model import ShapeModelMasks

MASK_SOURCES = ("deform", "mix", "shape", "phantom")
DEFAULT_MASK_SOURCE = "deform"  # new masks only from the labeled ones
_EIGHT = np.ones((3, 3), bool)  # 8-connectivity


def load_masks(source: SampleSource, ids: list[str]) -> list[np.ndarray]:
    """Masks (H, W) int64 of samples `ids`; a sample without a mask is a UserError."""
    masks = []
    for sample_id in ids:
        mask = source.load(source.index_of(sample_id)).mask
        if mask is None:
            raise UserError(f"{source.name}: sample '{sample_id}' has no mask; mask sources need labeled samples")
        masks.append(mask.astype(np.int64))
    if not masks:
        raise UserError(f"{source.name}: no labeled masks to build synthetic masks from")
    return masks


def smooth_displacement(rng: np.random.Generator, size: int, amplitude: float, control: int) -> np.ndarray:
    """(2, size, size) displacement in px: N(0, 1) on a control x control grid, cubic-upsampled, max |d| = amplitude."""
    coarse = rng.standard_normal((2, control, control))
    field = np.stack([ndimage.zoom(c, size / control, order=3, mode="nearest") for c in coarse])[:, :size, :size]
    return field * (amplitude / max(np.abs(field).max(), 1e-8))


def min_jacobian(matrix: np.ndarray, displacement: np.ndarray) -> float:
    """Smallest det of d(source)/d(output) for source = matrix @ p + displacement(p); > 0 means no folding."""
    dy_dy, dy_dx = np.gradient(displacement[0])
    dx_dy, dx_dx = np.gradient(displacement[1])
    a, b = matrix[0, 0] + dy_dy, matrix[0, 1] + dy_dx
    c, d = matrix[1, 0] + dx_dy, matrix[1, 1] + dx_dx
    return float((a * d - b * c).min())


class DeformMasks:
    """Labeled masks, randomly cropped and flipped, then warped by a random affine + smooth elastic field.

    Topology is kept by construction: the displacement is smooth (cubic spline through `control`^2
    points), modest (at most `amplitude` x size px) and halved until the warp's Jacobian stays
    positive (no folding). A warp that loses one of the crop's classes is redrawn, and after `tries`
    the unwarped crop is used.
    """

    def __init__(self, masks: list[np.ndarray], size: int, seed: int, amplitude: float = 0.04, control: int = 5,
                 max_rotation: float = 15.0, scale: tuple[float, float] = (0.9, 1.1), max_shift: float = 0.05,
                 tries: int = 5):
        self.masks, self.size, self.seed = masks, size, seed
        self.amplitude, self.control, self.tries = amplitude, control, tries
        self.max_rotation, self.scale, self.max_shift = max_rotation, scale, max_shift

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        while True:
            mask = self.masks[int(rng.integers(len(self.masks)))]
            yield self.deform(random_flip(random_crop(mask, self.size, rng), rng), rng)

    def deform(self, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One warp of a (size, size) mask that keeps its class set (or the mask itself after `tries`)."""
        classes = np.unique(mask)
        for _ in range(self.tries):
            warped = self.warp(mask, rng)
            if np.array_equal(np.unique(warped), classes):
                return warped
        return mask

    def warp(self, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Nearest-neighbour resampling of `mask` through a random fold-free affine + elastic map."""
        return _resample(mask, self.coordinates(mask.shape, rng))

    def coordinates(self, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
        """Source coordinates (2, h, w) of each output pixel under a random fold-free affine + elastic map."""
        h, w = shape
        size = max(h, w)
        angle = np.deg2rad(rng.uniform(-self.max_rotation, self.max_rotation))
        s = rng.uniform(*self.scale)
        # output -> source: rotate by angle and shrink by s about the centre (so the content grows by s)
        matrix = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / s
        shift = rng.uniform(-self.max_shift, self.max_shift, 2) * size
        disp = smooth_displacement(rng, size, self.amplitude * size, self.control)[:, :h, :w]
        while min_jacobian(matrix, disp) <= 0.2 * np.linalg.det(matrix):
            disp = disp / 2
        centre = (np.array([h, w], np.float64)[:, None, None] - 1) / 2
        grid = np.mgrid[0:h, 0:w].astype(np.float64) - centre  # (2, h, w) output coords
        return np.einsum("ij,jhw->ihw", matrix, grid) + centre + shift[:, None, None] + disp


def _resample(mask: np.ndarray, coordinates: np.ndarray) -> np.ndarray:
    """Nearest-neighbour `mask` (h, w) at `coordinates` (2, h', w'); outside is background."""
    return ndimage.map_coordinates(mask, coordinates, order=0, mode="constant", cval=0).astype(np.int64)


class DeformVolumes:
    """Labeled volume masks (D, H, W), flipped in-plane and warped by one random in-plane map (DeformMasks'
    affine + elastic warp) applied to every slice alike, so the through-plane structure of the labeled mask is
    kept (slice-consistent). Yields (index into `masks`, new mask of that mask's shape); a warp that loses a
    class is redrawn, and after `tries` the flipped mask itself is used.
    """

    def __init__(self, masks: list[np.ndarray], seed: int, tries: int = 5):
        self.masks, self.seed, self.tries = masks, seed, tries
        self._warps = DeformMasks(masks, size=0, seed=seed)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        rng = np.random.default_rng(self.seed)
        while True:
            k = int(rng.integers(len(self.masks)))
            mask = self.masks[k]
            for axis in (2, 1):
                if rng.random() < 0.5:
                    mask = np.flip(mask, axis)
            yield k, self.deform(np.ascontiguousarray(mask), rng)

    def deform(self, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One slice-consistent warp of a (D, H, W) mask that keeps its class set (or the mask after `tries`)."""
        classes = np.unique(mask)
        for _ in range(self.tries):
            coordinates = self._warps.coordinates(mask.shape[1:], rng)
            warped = np.stack([_resample(s, coordinates) for s in mask])
            if np.array_equal(np.unique(warped), classes):
                return warped
        return mask


class MixMasks:
    """Recombine labeled masks: a connected foreground object of mask B (all its classes, so nested
    structures stay whole) replaces an object of mask A or is pasted onto free background of A.

    The task decides what is allowed: a result never has more separate objects than the most any
    labeled mask has (one heart per image stays one heart; several lesions may gain one). Placements
    must not touch A's other objects (1 px margin). When nothing fits in `tries` attempts the mask
    falls back to `deform`; the first fallback warns and `fallbacks` counts them.
    """

    def __init__(self, masks: list[np.ndarray], size: int, seed: int, tries: int = 20):
        self.masks, self.size, self.seed, self.tries = masks, size, seed, tries
        self.max_objects = max(ndimage.label(m > 0, structure=_EIGHT)[1] for m in masks)
        self.fallbacks = 0
        self._deform = DeformMasks(masks, size, seed)

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        while True:
            a = random_flip(random_crop(self.masks[int(rng.integers(len(self.masks)))], self.size, rng), rng)
            b = random_flip(random_crop(self.masks[int(rng.integers(len(self.masks)))], self.size, rng), rng)
            mixed = self.mix(a, b, rng)
            if mixed is None:
                if self.fallbacks == 0:
                    warnings.warn("--mask-source mix: found no room to paste an object of one mask into another "
                                  "(objects too large for this task?); using 'deform' for such masks, see "
                                  "manifest 'mask_fallbacks'", stacklevel=2)
                self.fallbacks += 1
                mixed = self._deform.deform(a, rng)
            yield mixed

    def mix(self, a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
        """A with one object of B placed into it, or None when B has no object or none fits."""
        labels_b, n_b = ndimage.label(b > 0, structure=_EIGHT)
        if n_b == 0:
            return None
        donor = labels_b == int(rng.integers(1, n_b + 1))
        ys, xs = np.nonzero(donor)
        y0, x0, h, w = ys.min(), xs.min(), ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        patch_mask = donor[y0:y0 + h, x0:x0 + w]
        patch = np.where(patch_mask, b[y0:y0 + h, x0:x0 + w], 0)
        base = a.copy()
        labels_a, n_a = ndimage.label(a > 0, structure=_EIGHT)
        candidates: list[tuple[int, int]] = []
        if n_a and (n_a >= self.max_objects or rng.random() < 0.5):  # replace one object of A, at its place
            removed = labels_a == int(rng.integers(1, n_a + 1))
            base[removed] = 0
            cy, cx = np.argwhere(removed).mean(axis=0)
            candidates.append((int(round(cy - h / 2)), int(round(cx - w / 2))))
        candidates.append((int(y0), int(x0)))
        size = a.shape[0]
        candidates += [(int(rng.integers(size - h + 1)), int(rng.integers(size - w + 1))) for _ in range(self.tries)]
        occupied = ndimage.binary_dilation(base > 0, structure=_EIGHT)
        for y, x in candidates:
            if 0 <= y <= size - h and 0 <= x <= size - w and not (occupied[y:y + h, x:x + w] & patch_mask).any():
                window = base[y:y + h, x:x + w]
                window[patch_mask] = patch[patch_mask]
                return base
        return None


class PhantomMasks:
    """Fresh masks of phantom task `task` from ssl_seg.data.phantoms (no labeled data used)."""

    def __init__(self, task: str, size: int, seed: int):
        self.task, self.size, self.seed = task, size, seed

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self.seed)
        while True:
            yield phantom_mask(self.task, self.size, rng).astype(np.int64)


def build_mask_source(name: str, *, data: str, num_classes: int, size: int, seed: int,
                      masks: list[np.ndarray] | None = None) -> Iterable[np.ndarray]:
    """The mask source `name` for a generator with `num_classes` classes at `size` px.

    `data` names where masks come from (for `phantom`, a phantom:<task> DATA string); `masks` are the
    labeled masks that `deform`, `mix` and `shape` learn from. Class counts that do not match raise UserError.
    """
    if name not in MASK_SOURCES:
        raise UserError(f"--mask-source {name}: unknown mask source; valid: {', '.join(MASK_SOURCES)}")
    if name == "phantom":
        if not data.startswith("phantom:"):
            raise UserError(f"--mask-source phantom needs phantom:<task> masks but they come from '{data}'; "
                            "use --mask-source deform or mix, or --mask-data phantom:<task>")
        source = open_source(data)
        _check_classes(data, source.num_classes, num_classes)
        return PhantomMasks(source.task, size, seed)
    if not masks:
        raise UserError(f"--mask-source {name}: no labeled masks from '{data}' to build masks from")
    highest = max(int(m.max()) for m in masks)
    _check_classes(data, max(highest + 1, 2), num_classes, exact=False)
    if name == "shape":
        return ShapeModelMasks(masks, size, seed, num_classes)
    return DeformMasks(masks, size, seed) if name == "deform" else MixMasks(masks, size, seed)


def _check_classes(data: str, found: int, expected: int, exact: bool = True) -> None:
    if found > expected or (exact and found != expected):
        raise UserError(f"masks from '{data}' have {found} classes but the generator was trained with {expected}; "
                        "use masks of the GAN's own task (drop --mask-data) or train a GAN on matching data")
