"""Cross pseudo supervision (Chen et al., CVPR 2021), as in SSL4MIS's train_cross_pseudo_supervision_2D.py.

Two networks of the same architecture, initialised differently: the given model, and a deep copy
whose layers are re-drawn by their `reset_parameters` under `seed` (so the copy gets PyTorch's
default layer initialisation). Each is supervised on the labels and trained with cross-entropy
on the other's hard (argmax, no gradient) predictions over all images, labeled and unlabeled as
in the paper, weighted by `consistency_weight * sigmoid_rampup(step, rampup_length)`. Both
networks are in `models`, so the trainer checkpoints them; there is no extra method state. Labeled
and unlabeled images go through each network in separate passes (`forward_apart`).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import MethodConfig
from ..data.batch import Batch
from .losses import LossFn
from .base import MethodBase, forward_apart
from .rampup import sigmoid_rampup


def reinitialised_copy(model: nn.Module, seed: int) -> nn.Module:
    """A deep copy of `model` with every layer that has `reset_parameters` re-initialised under `seed`.

    The global RNG streams are left untouched (forked), so building this method draws no numbers.
    """
    clone = copy.deepcopy(model)
    cuda = sorted({p.device.index or 0 for p in clone.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        for module in clone.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return clone


class CrossPseudoSupervision(MethodBase):
    """Two networks teach each other with hard pseudo-labels."""

    relative_cost = 3.0

    def __init__(
        self, model: nn.Module, loss: LossFn, consistency_weight: float, rampup_length: float, seed: int
    ) -> None:
        super().__init__(loss)
        self.model_a = model
        self.model_b = reinitialised_copy(model, seed)
        self.models = {"model_a": self.model_a, "model_b": self.model_b}
        self.consistency_weight = consistency_weight
        self.rampup_length = rampup_length

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """{"sup", "cps", "stat/cons_weight"}; only {"sup"} (both nets) when the batch has no unlabeled part."""
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        parts = [labeled["image"]] if unlabeled is None else [labeled["image"], unlabeled["image"]]
        outs_a, outs_b = forward_apart(self.model_a, *parts), forward_apart(self.model_b, *parts)
        sup = self.supervised_loss(outs_a[0], labeled) + self.supervised_loss(outs_b[0], labeled)
        if unlabeled is None:
            return {"sup": sup}
        logits_a, logits_b = torch.cat(outs_a), torch.cat(outs_b)  # (B + B', K, H, W) each
        pseudo_a, pseudo_b = logits_a.detach().argmax(dim=1), logits_b.detach().argmax(dim=1)  # (B + B', H, W)
        cross = F.cross_entropy(logits_a.float(), pseudo_b) + F.cross_entropy(logits_b.float(), pseudo_a)
        weight = self.consistency_weight * sigmoid_rampup(step, self.rampup_length)
        return {"sup": sup, "cps": weight * cross, "stat/cons_weight": torch.tensor(weight)}


def build(model: nn.Module, cfg: MethodConfig, num_classes: int, total: int, loss: LossFn) -> CrossPseudoSupervision:
    """Cross pseudo supervision; the second network is seeded from the trainer's seed + 1."""
    # torch.initial_seed() is the seed the trainer set: model_b differs from model_a yet is reproducible
    return CrossPseudoSupervision(
        model,
        loss,
        consistency_weight=cfg.consistency_weight,
        rampup_length=cfg.rampup_fraction * total,
        seed=torch.initial_seed() + 1,
    )
