"""Torch datasets: augmented training pairs, one whole batch per training step, and evaluation samples.

Each training step's batch is a pure function of (seed, rank, step): which samples, their augmentation and
the synthetic share. A resumed run therefore sees exactly the batches the killed run would have seen,
with or without DataLoader workers.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UserError
from .batch import Batch
from .downscale import downscale_image
from .sample import SampleSource
from .transforms import JointTransform, normalize, pad_and_normalize, to_tensors


class PairDataset:
    """Samples `ids` of `source`, augmented and cropped; item (position, aug_seed) -> (image, mask, roi)."""

    def __init__(self, source: SampleSource, ids: list[str], transform: JointTransform):
        self.source = source
        self.indices = [source.index_of(i) for i in ids]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def get(self, position: int, aug_seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Load and augment one sample with its own seed, leaving the global torch RNG untouched."""
        image, mask, roi = to_tensors(self.source.load(self.indices[position]))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(aug_seed)
            return self.transform(image, mask, roi)


def synthetic_count(batch_size: int, ratio: float) -> int:
    """How many of `batch_size` labeled slots are synthetic for `ratio` (exact, rounded half up)."""
    return int(np.floor(ratio * batch_size + 0.5))


class StepBatches(Dataset):
    """Dataset over step numbers: item `step` is the whole batch dict for that training step."""

    def __init__(
        self,
        labeled: PairDataset,
        unlabeled: PairDataset | None,
        labeled_batch_size: int,
        unlabeled_batch_size: int,
        iterations: int,
        seed: int,
        rank: int = 0,
        synthetic: PairDataset | None = None,
        ratio_at: Callable[[int], float] | None = None,
    ):
        self.labeled, self.unlabeled, self.synthetic = labeled, unlabeled, synthetic
        self.labeled_batch_size, self.unlabeled_batch_size = labeled_batch_size, unlabeled_batch_size
        self.iterations, self.seed, self.rank = iterations, seed, rank
        self.ratio_at = ratio_at

    def __len__(self) -> int:
        return self.iterations

    def n_synthetic(self, step: int) -> int:
        """Synthetic pairs in this step's labeled part (0 without synthetic data)."""
        if self.synthetic is None or self.ratio_at is None:
            return 0
        return synthetic_count(self.labeled_batch_size, self.ratio_at(step))

    def __getitem__(self, step: int) -> dict:
        """The batch of `step`; a UserError (bad file) comes back as {"user_error": message} (see `raise_user_errors`)."""
        try:
            return self.batch(step)
        except UserError as e:  # crosses the DataLoader worker boundary as data, not as a re-wrapped traceback
            return {"user_error": str(e)}

    def batch(self, step: int) -> Batch:
        """The batch of `step`: labeled (+ synthetic) images, masks, rois and the unlabeled images."""
        rng = np.random.default_rng([self.seed, self.rank, step])
        n_syn = self.n_synthetic(step)
        n_real = self.labeled_batch_size - n_syn
        items = [self.labeled.get(int(p), int(s)) for p, s in _draw(rng, len(self.labeled), n_real)]
        if n_syn:
            syn_rng = np.random.default_rng([self.seed, self.rank, step, 1])
            items += [self.synthetic.get(int(p), int(s)) for p, s in _draw(syn_rng, len(self.synthetic), n_syn)]
        images, masks, rois = (torch.stack(t) for t in zip(*items))
        batch: Batch = {"labeled": {"image": images, "mask": masks, "roi": rois}, "unlabeled": None,
                        "n_synthetic": n_syn}
        if self.unlabeled is not None and self.unlabeled_batch_size > 0:
            un_rng = np.random.default_rng([self.seed, self.rank, step, 2])
            un = [self.unlabeled.get(int(p), int(s))[0]
                  for p, s in _draw(un_rng, len(self.unlabeled), self.unlabeled_batch_size)]
            batch["unlabeled"] = {"image": torch.stack(un)}
        return batch


def raise_user_errors(batches: Iterable[dict]) -> Iterator[dict]:
    """Pass batches through; raise the UserError a batch carries (one line, with or without workers)."""
    for batch in batches:
        if "user_error" in batch:
            raise UserError(batch["user_error"])
        yield batch


def _draw(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """k (position, augmentation seed) pairs; positions without replacement while k <= n."""
    positions = rng.choice(n, size=k, replace=k > n)
    seeds = rng.integers(0, 2**31 - 1, size=k)
    return np.stack([positions, seeds], axis=1) if k else np.zeros((0, 2), dtype=np.int64)


class EvalDataset(Dataset):
    """Whole, unaugmented, normalised samples: item -> dict(image (C, *S), mask (*S), roi (*S), id, case).

    With `downscale` N > 1 the image is first shrunk by N as `ssl-seg downscale` shrinks it (for a run trained on
    such a copy); mask and roi stay at full size. With `pad_to` P (2D), an image smaller than P is padded to P as
    training pads it (`pad_and_normalize`, for per-sample-norm networks): crop predictions to `size`.
    """

    def __init__(self, source: SampleSource, ids: list[str], downscale: int = 1, pad_to: int | None = None):
        self.source = source
        self.indices = [source.index_of(i) for i in ids]
        self.downscale, self.pad_to = downscale, pad_to

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        sample = self.source.load(self.indices[i])
        image, mask, roi = to_tensors(sample)
        if self.downscale > 1:
            image = torch.from_numpy(downscale_image(image.numpy(), self.downscale))
        size = tuple(image.shape[1:])
        if self.pad_to is not None and image.ndim == 3:
            image = pad_and_normalize(image, self.pad_to)
        else:
            image = normalize(image, spatial_dims=image.ndim - 1)
        return {"image": image, "size": size, "mask": mask, "roi": roi, "id": sample.id, "case": sample.case}
