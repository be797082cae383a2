"""Method registry: a name on the command line -> a builder that reads MethodConfig's fields."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..config import MethodConfig
from ..errors import UserError
from .losses import LossFn
from .base import Method
from .bcp import BidirectionalCopyPaste
from .cps import CrossPseudoSupervision
from .mean_teacher import MeanTeacher
from .pseudo_label import PseudoLabel
from .supervised import Supervised
from .uncertainty_mt import UncertaintyMeanTeacher
from .unimatch import UniMatch

# builder(model, cfg, num_classes, total_iterations, loss) -> Method
Builder = Callable[[nn.Module, MethodConfig, int, int, LossFn], Method]


def _supervised(model: nn.Module, cfg: MethodConfig, num_classes: int, total: int, loss: LossFn) -> Method:
    """Labeled loss only."""
    return Supervised(model, loss)


def _mean_teacher(model: nn.Module, cfg: MethodConfig, num_classes: int, total: int, loss: LossFn) -> Method:
    """Mean Teacher; ramp-up over rampup_fraction of all iterations."""
    return MeanTeacher(
        model,
        loss,
        ema_decay=cfg.ema_decay,
        consistency=cfg.consistency,
        consistency_weight=cfg.consistency_weight,
        rampup_length=cfg.rampup_fraction * total,
        noise_std=cfg.noise_std,
    )


def _pseudo_label(model: nn.Module, cfg: MethodConfig, num_classes: int, total: int, loss: LossFn) -> Method:
    """FixMatch-style pseudo-labels; consistency_weight: the (ramped) unlabeled weight; teacher_labels: EMA."""
    return PseudoLabel(
        model,
        loss,
        threshold=cfg.threshold,
        cutmix_prob=cfg.cutmix_prob,
        unlabeled_weight=cfg.consistency_weight,
        ema_decay=cfg.ema_decay if cfg.teacher_labels else None,
        rampup_length=cfg.rampup_fraction * total,
    )


def _cps(model: nn.Module, cfg: MethodConfig, num_classes: int, total: int, loss: LossFn) -> Method:
    """Cross pseudo supervision; the second network is seeded from the trainer's seed + 1."""
    # torch.initial_seed() is the seed the trainer set: model_b differs from model_a yet is reproducible
    return CrossPseudoSupervision(
        model,
        loss,
        consistency_weight=cfg.consistency_weight,
        rampup_length=cfg.rampup_fraction * total,
        seed=torch.initial_seed() + 1,
    )


def _unimatch(model: nn.Module, cfg: MethodConfig, num_classes: int, total: int, loss: LossFn) -> Method:
    """UniMatch with its two strong views and feature-dropout branch; the unlabeled terms ramp up."""
    return UniMatch(
        model, loss, threshold=cfg.threshold, cutmix_prob=cfg.cutmix_prob, feature_dropout=cfg.feature_dropout,
        rampup_length=cfg.rampup_fraction * total,
    )


def _uncertainty_mt(model: nn.Module, cfg: MethodConfig, num_classes: int, total: int, loss: LossFn) -> Method:
    """UA-MT; the uncertainty threshold ramps up over all iterations."""
    return UncertaintyMeanTeacher(
        model,
        loss,
        ema_decay=cfg.ema_decay,
        consistency=cfg.consistency,
        consistency_weight=cfg.consistency_weight,
        rampup_length=cfg.rampup_fraction * total,
        noise_std=cfg.noise_std,
        uncertainty_threshold=cfg.uncertainty_threshold,
        threshold_rampup_length=total,
    )


def _bcp(model: nn.Module, cfg: MethodConfig, num_classes: int, total: int, loss: LossFn) -> Method:
    """BCP: pre-training on pretrain_fraction of the steps, then copy-paste self-training with a ramp-up."""
    pretrain = int(round(cfg.pretrain_fraction * total))
    return BidirectionalCopyPaste(model, loss, ema_decay=cfg.ema_decay, pretrain_steps=pretrain,
                                  unlabeled_weight=cfg.mixed_unlabeled_weight,
                                  rampup_length=cfg.rampup_fraction * (total - pretrain))


METHODS: dict[str, Builder] = {
    "supervised": _supervised,
    "mean-teacher": _mean_teacher,
    "pseudo-label": _pseudo_label,
    "cps": _cps,
    "unimatch": _unimatch,
    "uncertainty-mt": _uncertainty_mt,
    "bcp": _bcp,
}


def method_names() -> list[str]:
    """Registered method names, in registry order."""
    return list(METHODS)


def build_method(
    name: str, model: nn.Module, cfg: MethodConfig, num_classes: int, total_iterations: int, loss: LossFn
) -> Method:
    """Wrap `model` (already on its device) in the method `name`; copies (teacher, second net) are made here."""
    if name not in METHODS:
        raise UserError(f"unknown method '{name}' (--method); valid: {', '.join(METHODS)}")
    return METHODS[name](model, cfg, num_classes, total_iterations, loss)
