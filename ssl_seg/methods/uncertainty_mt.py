"""Uncertainty-aware Mean Teacher (Yu et al., MICCAI 2019), as in SSL4MIS's train_uncertainty_aware_mean_teacher_2D.py.

Mean Teacher whose consistency only counts pixels where the teacher is certain: the teacher's
softmax is averaged over `passes` noisy forward passes (run as one batch; the first also serves as the
consistency target, where SSL4MIS runs one more pass), its entropy is the uncertainty, and a
pixel counts when the entropy is below (start + (1 - start) * sigmoid_rampup(step, total)) * ln K,
with `start` = `uncertainty_threshold` (0.75 in the paper; SSL4MIS writes ln 2 for two classes).
The consistency is averaged over the certain pixels only (SSL4MIS: sum(mask * dist) / (K sum(mask))).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import MethodConfig
from ..flags import opt
from .base import own_options
from .losses import LossFn
from .mean_teacher import MeanTeacher, noisy, pixel_consistency, teacher_options
from .rampup import sigmoid_rampup


@dataclass
class UncertaintyMTOptions:
    """UA-MT's own options."""

    uncertainty_threshold: float = opt(0.75, "starting entropy threshold, as a share of ln K",
                                       check=(lambda v: 0 <= v <= 1, "in [0, 1], e.g. 0.75"))


class UncertaintyMeanTeacher(MeanTeacher):
    """Mean Teacher with the consistency masked by the teacher's Monte-Carlo uncertainty."""

    relative_cost = 3.0
    options_class = UncertaintyMTOptions

    def __init__(
        self,
        model: nn.Module,
        loss: LossFn,
        ema_decay: float,
        consistency: str,
        consistency_weight: float,
        rampup_length: float,
        noise_std: float,
        uncertainty_threshold: float,
        threshold_rampup_length: float,
        passes: int = 8,
    ) -> None:
        super().__init__(model, loss, ema_decay, consistency, consistency_weight, rampup_length, noise_std)
        self.uncertainty_threshold = uncertainty_threshold
        self.threshold_rampup_length = threshold_rampup_length
        self.passes = passes

    def consistency_term(self, images: Tensor, logits: Tensor, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Consistency averaged over pixels whose teacher entropy is below the ramped threshold."""
        repeated = noisy(images.repeat(self.passes, *(1,) * (images.ndim - 1)), self.noise_std)  # (T * N, C, *S)
        all_logits = self.teacher.predict(repeated)  # (T * N, K, H, W)
        teacher_logits = all_logits[: images.shape[0]]  # the first noisy pass doubles as the consistency target
        probs = all_logits.float().softmax(dim=1)
        probs = probs.unflatten(0, (self.passes, images.shape[0])).mean(dim=0)  # (N, K, H, W)
        entropy = -(probs * torch.log(probs + 1e-6)).sum(dim=1)  # (N, H, W)
        start = self.uncertainty_threshold
        limit = (start + (1 - start) * sigmoid_rampup(step, self.threshold_rampup_length)) * math.log(probs.shape[1])
        certain = (entropy < limit).float()  # (N, H, W)
        distance = pixel_consistency(logits, teacher_logits, self.consistency)  # (N, H, W)
        cons = (distance * certain).sum() / certain.sum().clamp_min(1.0)
        return cons, {"stat/certain_ratio": certain.mean()}


def build(model: nn.Module, cfg: MethodConfig, num_classes: int, total: int, loss: LossFn) -> UncertaintyMeanTeacher:
    """UA-MT; the uncertainty threshold ramps up over all iterations."""
    start = own_options(cfg, UncertaintyMTOptions).uncertainty_threshold
    return UncertaintyMeanTeacher(model, loss, **teacher_options(cfg, total), uncertainty_threshold=start,
                                  threshold_rampup_length=total)
