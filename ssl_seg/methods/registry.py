"""Method registry: a name on the command line -> the `build` function of its method file, which reads
MethodConfig's fields. A new method is one file (its class and `build`) and one line here."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..config import MethodConfig
from ..errors import UserError
from .losses import LossFn
from .base import Method
from .bcp import build as build_bcp
from .cps import build as build_cps
from .mean_teacher import build as build_mean_teacher
from .pseudo_label import build as build_pseudo_label
from .supervised import build as build_supervised
from .uncertainty_mt import build as build_uncertainty_mt
from .unimatch import build as build_unimatch

# builder(model, cfg, num_classes, total_iterations, loss) -> Method: each method file's `build`
Builder = Callable[[nn.Module, MethodConfig, int, int, LossFn], Method]

METHODS: dict[str, Builder] = {
    "supervised": build_supervised,
    "mean-teacher": build_mean_teacher,
    "pseudo-label": build_pseudo_label,
    "cps": build_cps,
    "unimatch": build_unimatch,
    "uncertainty-mt": build_uncertainty_mt,
    "bcp": build_bcp,
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
