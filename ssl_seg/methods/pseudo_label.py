"""Pseudo-labelling in the FixMatch style (Sohn et al., NeurIPS 2020) for segmentation.

Weak view: the unlabeled image as the data pipeline delivers it (already weakly augmented). Its
argmax prediction (no gradient) is the pseudo-label where the max probability >= `threshold`.
Strong view: photometric jitter, Gaussian blur and CutMix with the next sample of the batch; the
pseudo-labels and confidence masks are pasted with the same boxes. The unlabeled term is the
cross-entropy on the strong view over confident pixels, averaged over all pixels (FixMatch's
convention, see `masked_cross_entropy`), times `unlabeled_weight * sigmoid_rampup(step, rampup_length)`.
With `ema_decay` set, an EMA teacher makes the pseudo-labels instead of the student (and is then
evaluated first). Labeled, weak and strong images go through the network in separate passes
(`forward_apart`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..config import MethodConfig
from ..data.batch import Batch
from ..flags import opt
from .losses import LossFn
from .base import MethodBase, check_state_keys, forward_apart, gradient_free, own_options
from .confidence import masked_cross_entropy
from .cutmix import boxes_like, cutmix
from .ema import EMATeacher
from .pseudo_labeler import PseudoLabeler, build_labeler
from .rampup import sigmoid_rampup
from .strong_aug import strong_augment


@dataclass
class PseudoLabelOptions:
    """Pseudo-label's own options."""

    teacher_labels: bool = opt(False, "take the pseudo-labels from an EMA teacher (--ema-decay)")


class PseudoLabel(MethodBase):
    """Confident hard pseudo-labels from the weak view supervise the strong, CutMixed view."""

    relative_cost = 2.5
    options_class = PseudoLabelOptions

    def __init__(
        self,
        model: nn.Module,
        loss: LossFn,
        labeler: PseudoLabeler,
        cutmix_prob: float,
        unlabeled_weight: float,
        ema_decay: float | None,
        rampup_length: float = 0.0,
    ) -> None:
        super().__init__(loss)
        self.model = model
        self.models = {"model": model}
        self.labeler = labeler
        self.cutmix_prob = cutmix_prob
        self.unlabeled_weight = unlabeled_weight
        self.rampup_length = rampup_length
        self.teacher = EMATeacher(model, ema_decay) if ema_decay is not None else None

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """{"sup", "unsup", "stat/mask_ratio", "stat/confident_c*", "stat/cons_weight"}; only {"sup"} without an
        unlabeled part."""
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        if unlabeled is None:
            return {"sup": self.supervised_loss(self.model(labeled["image"]), labeled)}
        weak = unlabeled["image"]
        boxes = boxes_like(weak, self.cutmix_prob)  # (B', *S)
        strong = cutmix(strong_augment(weak), boxes)  # (B', C, *S)
        if self.teacher is None:
            probs_w = gradient_free(self.models["model"], weak).float().softmax(dim=1)  # (B', K, H, W)
        else:
            probs_w = self.teacher.predict(weak).float().softmax(dim=1)
        logits_l, logits_s = forward_apart(self.model, labeled["image"], strong)
        labels, confident = self.labeler(probs_w, labeled)  # (B', H, W) each
        unsup = masked_cross_entropy(logits_s, cutmix(labels, boxes), cutmix(confident, boxes))
        weight = self.unlabeled_weight * sigmoid_rampup(step, self.rampup_length)
        return {
            "sup": self.supervised_loss(logits_l, labeled),
            "unsup": weight * unsup,
            **self.labeler.stats(labels, confident),
            "stat/cons_weight": torch.tensor(weight),
        }

    def after_step(self, step: int) -> None:
        """EMA update of the teacher, when pseudo-labels come from one."""
        if self.teacher is not None:
            self.teacher.update(self.models["model"], step)

    def eval_models(self) -> dict[str, nn.Module]:
        """The teacher first when there is one, then the trained network."""
        if self.teacher is None:
            return {"model": self.models["model"]}
        return {"teacher": self.teacher.module, "model": self.models["model"]}

    def state_dict(self) -> dict[str, Any]:
        """The teacher's weights when there is one, the pseudo-labeler's running statistics when it keeps any."""
        state = {} if self.teacher is None else {"teacher": self.teacher.state_dict()}
        return {**state, "pseudo_labels": self.labeler.state_dict()} if self.labeler.stateful else state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved."""
        expected = ({"teacher"} if self.teacher is not None else set()) | (
            {"pseudo_labels"} if self.labeler.stateful else set())
        check_state_keys(state, expected, type(self).__name__)
        if self.teacher is not None:
            self.teacher.load_state_dict(state["teacher"])
        if self.labeler.stateful:
            self.labeler.load_state_dict(state["pseudo_labels"])


def build(model: nn.Module, cfg: MethodConfig, num_classes: int, total: int, loss: LossFn) -> PseudoLabel:
    """FixMatch-style pseudo-labels; consistency_weight: the (ramped) unlabeled weight; teacher_labels: EMA."""
    return PseudoLabel(
        model,
        loss,
        labeler=build_labeler(cfg, num_classes),
        cutmix_prob=cfg.cutmix_prob,
        unlabeled_weight=cfg.consistency_weight,
        ema_decay=cfg.ema_decay if own_options(cfg, PseudoLabelOptions).teacher_labels else None,
        rampup_length=cfg.rampup_fraction * total,
    )
