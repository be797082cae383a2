"""UniMatch (Yang et al., CVPR 2023), following LiheYoung/UniMatch more-scenarios/medical/unimatch.py.

Per batch: the weak view (the unlabeled image as delivered) gives hard pseudo-labels and a confidence
mask (max prob >= `threshold`, their medical default 0.95) from a gradient-free pass. Two strong views,
each with independent photometric jitter, blur and CutMix, and a feature-perturbed weak view
`model(weak, feature_dropout=p)` are trained towards those pseudo-labels: loss = sup + 0.25 s1 + 0.25 s2
+ 0.5 fp, where sup is the configured loss (theirs is (CE + Dice) / 2). As in their medical code the
unlabeled terms are soft Dice only, background included, over the confident pixels (their
`DiceLoss(ignore=conf < thresh)`; here `soft_dice_loss(roi=confident, include_background=True)`, whose
denominators are plain rather than squared sums; an empty mask gives 0 in both).

Deliberate differences: the unlabeled terms are weighted by `sigmoid_rampup(step, rampup_length)` like
every other method here (theirs start at full weight; set `rampup_fraction` to 0 for that); their
overall `/ 2` is left out (it only rescales the learning rate, and this keeps `sup` on the scale of the
other methods); the CutMix source is the next sample of the same batch instead of a second unlabeled
loader, so its pseudo-labels come from this step's weak prediction instead of a separate eval-mode pass;
the feature-perturbed view is its own forward pass instead of sharing the weak view's encoder pass; the
labeled and weak images are not one batch (see `forward_apart`).

With `frozen_teacher` (a diagnostic, not UniMatch's method) the pseudo-labels come from a copy of the network as
built, i.e. the `--init-from` start, in eval mode and never updated: the pseudo-labels cannot follow the student, so
a late drift that remains is not confirmation bias but the unlabeled loss on the perturbed views itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..config import MethodConfig
from ..data.batch import Batch
from ..flags import opt
from .losses import LossFn, soft_dice_loss
from .base import MethodBase, check_state_keys, gradient_free, own_options
from .cutmix import boxes_like, cutmix
from .ema import gradient_free_copy
from .pseudo_labeler import PseudoLabeler, build_labeler
from .rampup import sigmoid_rampup
from .strong_aug import strong_augment


@dataclass
class UniMatchOptions:
    """UniMatch's own options."""

    feature_dropout: float = opt(0.5, "dropout rate of the feature-perturbation branch",
                                 check=(lambda v: 0 <= v < 1, "in [0, 1)"))
    frozen_teacher: bool = opt(False, "take the pseudo-labels from the --init-from start, frozen (eval mode, never "
                                      "updated): separates confirmation bias from the perturbations")


class UniMatch(MethodBase):
    """Weak-to-strong consistency on two strong image views and one feature-perturbed view."""

    relative_cost = 4.0
    options_class = UniMatchOptions

    def __init__(
        self,
        model: nn.Module,
        loss: LossFn,
        labeler: PseudoLabeler,
        cutmix_prob: float,
        feature_dropout: float,
        rampup_length: float = 0.0,
        frozen_teacher: bool = False,
    ) -> None:
        super().__init__(loss)
        self.model = model
        self.models = {"model": model}
        self.teacher = gradient_free_copy(model).eval() if frozen_teacher else None  # BatchNorm running statistics
        self.labeler = labeler
        self.cutmix_prob = cutmix_prob
        self.feature_dropout = feature_dropout
        self.rampup_length = rampup_length

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """{"sup", "strong", "fp", "stat/mask_ratio", "stat/confident_c*", "stat/cons_weight"}; only {"sup"} without
        an unlabeled part."""
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        if unlabeled is None:
            return {"sup": self.supervised_loss(self.model(labeled["image"]), labeled)}
        weak = unlabeled["image"]
        boxes1 = boxes_like(weak, self.cutmix_prob)  # (B', *S)
        boxes2 = boxes_like(weak, self.cutmix_prob)
        strong1 = cutmix(strong_augment(weak), boxes1)  # (B', C, *S)
        strong2 = cutmix(strong_augment(weak), boxes2)

        logits_l = self.model(labeled["image"])  # its own pass: see forward_apart
        teacher = self.teacher if self.teacher is not None else self.models["model"]  # bare net: no DDP here
        logits_w = gradient_free(teacher, weak)
        logits_fp = self.model(weak, feature_dropout=self.feature_dropout)  # (B', K, H, W)
        logits_s1, logits_s2 = self.model(torch.cat([strong1, strong2])).chunk(2)

        labels, confident = self.labeler(logits_w.detach().float().softmax(dim=1), labeled)
        loss_s1 = self.dice(logits_s1, cutmix(labels, boxes1), cutmix(confident, boxes1))
        loss_s2 = self.dice(logits_s2, cutmix(labels, boxes2), cutmix(confident, boxes2))
        loss_fp = self.dice(logits_fp, labels, confident)
        weight = sigmoid_rampup(step, self.rampup_length)
        return {
            "sup": self.supervised_loss(logits_l, labeled),
            "strong": weight * (0.25 * loss_s1 + 0.25 * loss_s2),
            "fp": weight * 0.5 * loss_fp,
            **self.labeler.stats(labels, confident),
            "stat/cons_weight": torch.tensor(weight),
        }

    def state_dict(self) -> dict[str, Any]:
        """The frozen teacher's weights when there is one, the pseudo-labeler's running class statistics when its
        rule keeps any."""
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

    @staticmethod
    def dice(logits: Tensor, labels: Tensor, confident: Tensor) -> Tensor:
        """Soft Dice of logits (B, K, H, W) on pseudo-labels (B, H, W) over confident pixels, background included."""
        return soft_dice_loss(logits, labels, confident, include_background=True)


def build(model: nn.Module, cfg: MethodConfig, num_classes: int, total: int, loss: LossFn) -> UniMatch:
    """UniMatch with its two strong views and feature-dropout branch; the unlabeled terms ramp up."""
    options = own_options(cfg, UniMatchOptions)
    return UniMatch(
        model, loss, labeler=build_labeler(cfg, num_classes), cutmix_prob=cfg.cutmix_prob,
        feature_dropout=options.feature_dropout, rampup_length=cfg.rampup_fraction * total,
        frozen_teacher=options.frozen_teacher,
    )
