"""The GAN's real data: the same split as `ssl-seg train`, labeled pairs held in memory, seeded crop/flip batches.

With `spatial_dims` 3 the samples are volumes and the pairs are their slices along D (the generator is 2D).
"""

from __future__ import annotations

import numpy as np
import torch

from ssl_seg.data.sample import SampleSource

from ssl_seg.data.sources import open_source
from ssl_seg.data.splits import Split, make_split, resolve_split_file
from ssl_seg.errors import UserError

from .config import GanConfig


def gan_source(cfg: GanConfig) -> SampleSource:
    """The GAN's DATA, opened as images (spatial_dims 2) or whole volumes (3)."""
    return open_source(cfg.data, cfg.spatial_dims)


def slices(image: np.ndarray, mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """A pair as 2D pairs: itself for image (C, H, W), else its slices (C, H, W), (H, W) along D of (C, D, H, W)."""
    if mask.ndim == 2:
        return [(image, mask)]
    return [(image[:, z], mask[z]) for z in range(mask.shape[0])]


def gan_split(cfg: GanConfig, source: SampleSource) -> Split:
    """The split `ssl-seg train` would use with the same data/split flags (split file, else seeded and grouped)."""
    if cfg.split_file:
        return resolve_split_file(cfg.split_file, source, cfg.group_by)
    return make_split(source, seed=cfg.split_seed, fractions=tuple(cfg.fractions), group_by=cfg.group_by,
                      labeled_fraction=cfg.labeled_fraction, labeled_cases=cfg.labeled_cases)


def pad_to(array: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad the last two axes (bottom/right) up to at least `size` (images: black, masks: background)."""
    h, w = array.shape[-2:]
    ph, pw = max(size - h, 0), max(size - w, 0)
    if not (ph or pw):
        return array
    return np.pad(array, [(0, 0)] * (array.ndim - 2) + [(0, ph), (0, pw)])


class PairBank:
    """Labeled pairs of `ids` in memory (labels are scarce, so this is small); images (C, H, W) in [0, 1].

    A volume sample contributes each of its slices as a pair; `ids` stay the samples' ids.
    """

    def __init__(self, source: SampleSource, ids: list[str]):
        if not ids:
            raise UserError(f"{source.name}: the split has no labeled samples; "
                            "raise --labeled-fraction or --labeled-cases")
        self.images: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.showcase: list[int] = []  # per sample one pair: itself, or the middle slice of a volume
        for sample_id in ids:
            sample = source.load(source.index_of(sample_id))
            if sample.mask is None:
                raise UserError(f"{source.name}: labeled sample '{sample_id}' has no mask; fix the split or the data")
            self._append(sample.image, sample.mask)
        self.ids = list(ids)

    def _append(self, image: np.ndarray, mask: np.ndarray) -> None:
        pairs = slices(image, mask)
        self.showcase.append(len(self.images) + len(pairs) // 2)
        for image_2d, mask_2d in pairs:
            self.images.append(image_2d.astype(np.float32))
            self.masks.append(mask_2d.astype(np.int64))

    def __len__(self) -> int:
        return len(self.images)

    def add(self, source: SampleSource, ids: list[str], masks: list[np.ndarray]) -> None:
        """Add pairs whose masks come from elsewhere (pseudo-labels): images of `ids` from `source`."""
        for sample_id, mask in zip(ids, masks, strict=True):
            self._append(source.load(source.index_of(sample_id)).image, mask)
            self.ids.append(sample_id)

    def batch(self, batch_size: int, patch: int, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Random crops with random h/v flips, a pure function of (seed, step).

        Returns masks (B, P, P) long and images (B, C, P, P) in [-1, 1].
        """
        rng = np.random.default_rng([seed, step])
        masks, images = [], []
        for _ in range(batch_size):
            i = int(rng.integers(len(self)))
            image, mask = pad_to(self.images[i], patch), pad_to(self.masks[i], patch)
            y = int(rng.integers(image.shape[-2] - patch + 1))
            x = int(rng.integers(image.shape[-1] - patch + 1))
            image, mask = image[:, y:y + patch, x:x + patch], mask[y:y + patch, x:x + patch]
            for axis in (-1, -2):
                if rng.random() < 0.5:
                    image, mask = np.flip(image, axis), np.flip(mask, axis)
            images.append(image)
            masks.append(mask)
        return _to_tensors(masks, images)

    def center_batch(self, patch: int, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Centre crops of the first `limit` samples (of volumes: their middle slices), a fixed validation/preview
        batch, same layout as `batch`."""
        return self._crops(self.showcase[:limit], patch)

    def preview_batch(self, patch: int, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Like center_batch, but samples whose crop shows foreground come first (in order), so a preview of slices
        is not a row of empty top slices."""
        empty = [not centre_crop(self.masks[i], patch).any() for i in self.showcase]
        order = sorted(range(len(self.showcase)), key=empty.__getitem__)  # stable: foreground first, then the rest
        return self._crops([self.showcase[j] for j in order[:limit]], patch)

    def _crops(self, chosen: list[int], patch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Centre crops of pairs `chosen` as (masks, images in [-1, 1])."""
        return _to_tensors([centre_crop(self.masks[i], patch) for i in chosen],
                           [centre_crop(self.images[i], patch) for i in chosen])


def centre_crop(array: np.ndarray, size: int) -> np.ndarray:
    """The central (size, size) window of the last two axes (zero-padded bottom/right first when smaller)."""
    array = pad_to(array, size)
    y, x = (array.shape[-2] - size) // 2, (array.shape[-1] - size) // 2
    return array[..., y:y + size, x:x + size]


def _to_tensors(masks: list[np.ndarray], images: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.from_numpy(np.ascontiguousarray(np.stack(masks)))
    image = torch.from_numpy(np.ascontiguousarray(np.stack(images))) * 2 - 1  # [0, 1] -> [-1, 1] (tanh range)
    return mask, image


def random_crop(mask: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random (size, size) window (background-padded first when the mask is smaller)."""
    mask = pad_to(mask, size)
    y = int(rng.integers(mask.shape[0] - size + 1))
    x = int(rng.integers(mask.shape[1] - size + 1))
    return mask[y:y + size, x:x + size]


def random_flip(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flip left-right and up-down, each with probability 1/2 (the GAN was trained with both)."""
    for axis in (1, 0):
        if rng.random() < 0.5:
            mask = np.flip(mask, axis)
    return np.ascontiguousarray(mask)
