"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017), as in SSL4MIS's train_mean_teacher_2D.py.

The student sees the batch as given; the EMA teacher sees the unlabeled images with clamped Gaussian
noise (clamp(N(0, std), -2 std, 2 std)). Consistency between their softmax outputs covers the unlabeled
images only (SSL4MIS's `outputs_soft[labeled_bs:]`), weighted by `consistency_weight * sigmoid_rampup(step,
rampup_length)`; the teacher therefore runs on the unlabeled images only, under torch.inference_mode.
'mse' is the mean squared difference of probabilities over pixels and classes (SSL4MIS); 'kl' is
KL(teacher || student) summed over classes and averaged over pixels. The teacher runs in training
mode (batch statistics) like SSL4MIS's and keeps its own BN buffers. The student sees the labeled
and the unlabeled images in separate passes (`forward_apart`), unlike SSL4MIS's single pass.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import MethodConfig
from ..data.batch import Batch
from ..errors import UserError
from .losses import LossFn
from .base import MethodBase, check_state_keys, forward_apart
from .ema import EMATeacher
from .rampup import sigmoid_rampup

CONSISTENCIES = ("mse", "kl")


def pixel_consistency(student_logits: Tensor, teacher_logits: Tensor, kind: str) -> Tensor:
    """Per-pixel distance (B, H, W) between softmax outputs of (B, K, H, W) logits; `kind` is 'mse' or 'kl'."""
    log_p = F.log_softmax(student_logits.float(), dim=1)
    q = F.softmax(teacher_logits.float(), dim=1)
    if kind == "mse":
        return (log_p.exp() - q).pow(2).mean(dim=1)
    return F.kl_div(log_p, q, reduction="none").sum(dim=1)


def softmax_consistency(student_logits: Tensor, teacher_logits: Tensor, kind: str) -> Tensor:
    """Scalar: `pixel_consistency` averaged over all pixels."""
    return pixel_consistency(student_logits, teacher_logits, kind).mean()


def noisy(images: Tensor, std: float) -> Tensor:
    """images plus Gaussian noise of `std`, clamped to +-2 std."""
    return images + (torch.randn_like(images) * std).clamp(-2 * std, 2 * std)


class MeanTeacher(MethodBase):
    """Student trained on labels plus consistency with its EMA teacher on noisy inputs."""

    relative_cost = 2.5

    def __init__(
        self,
        model: nn.Module,
        loss: LossFn,
        ema_decay: float,
        consistency: str,
        consistency_weight: float,
        rampup_length: float,
        noise_std: float,
    ) -> None:
        super().__init__(loss)
        if consistency not in CONSISTENCIES:
            raise UserError(f"method.consistency '{consistency}' is unknown; valid: {', '.join(CONSISTENCIES)}")
        self.student = model
        self.teacher = EMATeacher(model, ema_decay)
        self.models = {"student": model}
        self.consistency = consistency
        self.consistency_weight = consistency_weight
        self.rampup_length = rampup_length
        self.noise_std = noise_std

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """{"sup", "cons", "stat/cons_weight"}; only {"sup"} when the batch has no unlabeled part."""
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        if unlabeled is None:
            return {"sup": self.supervised_loss(self.student(labeled["image"]), labeled)}
        logits_l, logits_u = forward_apart(self.student, labeled["image"], unlabeled["image"])
        cons, stats = self.consistency_term(unlabeled["image"], logits_u, step)  # unlabeled only, as SSL4MIS
        weight = self.consistency_weight * sigmoid_rampup(step, self.rampup_length)
        return {
            "sup": self.supervised_loss(logits_l, labeled),
            "cons": weight * cons,
            "stat/cons_weight": torch.tensor(weight),
            **stats,
        }

    def consistency_term(self, images: Tensor, logits: Tensor, step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """Unweighted consistency of student logits with the teacher on noisy `images`, and diagnostics."""
        teacher_logits = self.teacher.predict(noisy(images, self.noise_std))
        return softmax_consistency(logits, teacher_logits, self.consistency), {}

    def after_step(self, step: int) -> None:
        """EMA update of the teacher."""
        self.teacher.update(self.models["student"], step)

    def eval_models(self) -> dict[str, nn.Module]:
        """Teacher first (the usual one to report), then the student."""
        return {"teacher": self.teacher.module, "student": self.models["student"]}

    def state_dict(self) -> dict[str, Any]:
        """The teacher's weights and buffers."""
        return {"teacher": self.teacher.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the teacher saved by `state_dict`."""
        check_state_keys(state, {"teacher"}, type(self).__name__)
        self.teacher.load_state_dict(state["teacher"])


def teacher_options(cfg: MethodConfig, total: int) -> dict[str, Any]:
    """MeanTeacher's keyword arguments from MethodConfig (also those of its uncertainty-aware variant)."""
    return {"ema_decay": cfg.ema_decay, "consistency": cfg.consistency, "consistency_weight": cfg.consistency_weight,
            "rampup_length": cfg.rampup_fraction * total, "noise_std": cfg.noise_std}


def build(model: nn.Module, cfg: MethodConfig, num_classes: int, total: int, loss: LossFn) -> MeanTeacher:
    """Mean Teacher; ramp-up over rampup_fraction of all iterations."""
    return MeanTeacher(model, loss, **teacher_options(cfg, total))
