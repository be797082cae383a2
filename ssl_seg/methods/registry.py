"""Method registry: a name on the command line -> its class (capabilities) and the `build` function of its method
file, which reads MethodConfig's fields. A new method is one file (its class and `build`) and one line here."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..config import MethodConfig
from ..errors import UserError
from .losses import LossFn
from .base import Method
from .bcp import BidirectionalCopyPaste, build as build_bcp
from .cps import CrossPseudoSupervision, build as build_cps
from .mean_teacher import MeanTeacher, build as build_mean_teacher
from .pseudo_label import PseudoLabel, build as build_pseudo_label
from .supervised import Supervised, build as build_supervised
from .uncertainty_mt import UncertaintyMeanTeacher, build as build_uncertainty_mt
from .unimatch import UniMatch, build as build_unimatch

# builder(model, cfg, num_classes, total_iterations, loss) -> Method: each method file's `build`
Builder = Callable[[nn.Module, MethodConfig, int, int, LossFn], Method]

# name -> (the method's class, whose attributes state its capabilities, and its file's `build`)
METHODS: dict[str, tuple[type, Builder]] = {
    "supervised": (Supervised, build_supervised),
    "mean-teacher": (MeanTeacher, build_mean_teacher),
    "pseudo-label": (PseudoLabel, build_pseudo_label),
    "cps": (CrossPseudoSupervision, build_cps),
    "unimatch": (UniMatch, build_unimatch),
    "uncertainty-mt": (UncertaintyMeanTeacher, build_uncertainty_mt),
    "bcp": (BidirectionalCopyPaste, build_bcp),
}


def method_names() -> list[str]:
    """Registered method names, in registry order."""
    return list(METHODS)


def method_class(name: str) -> type:
    """The class of method `name`: `uses_unlabeled`, `relative_cost` (see MethodBase) without building it."""
    if name not in METHODS:
        raise UserError(f"unknown method '{name}' (--method); valid: {', '.join(METHODS)}")
    return METHODS[name][0]


def build_method(
    name: str, model: nn.Module, cfg: MethodConfig, num_classes: int, total_iterations: int, loss: LossFn
) -> Method:
    """Wrap `model` (already on its device) in the method `name`; copies (teacher, second net) are made here."""
    method_class(name)
    return METHODS[name][1](model, cfg, num_classes, total_iterations, loss)
