"""The training batch that `StepBatches` yields and every method's `training_step` reads.

Typed dicts: at run time a batch is a plain dict (the trainer moves it to the device key by key, DataLoader workers
pickle it), and the keys and shapes are written here once.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict

from torch import Tensor


class LabeledPart(TypedDict):
    """The labeled images of a step (synthetic pairs last, when a mix adds them)."""

    image: Tensor  # (B, C, *S) float in the network's input range
    mask: Tensor  # (B, *S) int64 class indices
    roi: NotRequired[Tensor]  # (B, *S): 1 where a pixel counts in the loss (absent: every pixel counts)


class UnlabeledPart(TypedDict):
    """The unlabeled images of a step."""

    image: Tensor  # (B', C, *S)


class Batch(TypedDict):
    """One training step's batch."""

    labeled: LabeledPart
    unlabeled: UnlabeledPart | None  # None when the method uses no unlabeled images
    n_synthetic: NotRequired[int]  # how many of the labeled images are synthetic
