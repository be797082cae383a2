"""Supervised baseline: the loss on the labeled part of the batch; unlabeled images are ignored."""

from __future__ import annotations


from torch import Tensor, nn

from ..config import MethodConfig
from ..data.batch import Batch
from .losses import LossFn
from .base import MethodBase


class Supervised(MethodBase):
    """Train one network on labeled images only."""

    uses_unlabeled = False

    def __init__(self, model: nn.Module, loss: LossFn) -> None:
        super().__init__(loss)
        self.model = model
        self.models = {"model": model}

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """{"sup": loss on the labeled images}."""
        labeled = batch["labeled"]
        return {"sup": self.supervised_loss(self.model(labeled["image"]), labeled)}


def build(model: nn.Module, cfg: MethodConfig, num_classes: int, total: int, loss: LossFn) -> Supervised:
    """Labeled loss only."""
    return Supervised(model, loss)
