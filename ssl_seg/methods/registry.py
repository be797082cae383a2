"""Method registry: a name on the command line -> its class (capabilities, own options) and the `build` function of
its method file, which reads MethodConfig. A new method is one file (its class, its options dataclass and `build`) and
one line here; its options become flags grouped under its name."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from torch import nn

from ..config import MethodConfig
from ..errors import UserError
from ..flags import Flag, config_flags, flag_name
from .losses import LossFn
from .base import Method, own_options
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


def own_option_owners() -> dict[str, list[str]]:
    """{option field: the registered methods that declare it as their own}."""
    owners: dict[str, list[str]] = {}
    for name, (cls, _) in METHODS.items():
        for option in sorted(_declared(cls.options_class)):
            owners.setdefault(option, []).append(name)
    return owners


def method_option_flags() -> list[Flag]:
    """A flag per own option of the registered methods (path method.options.<field>), grouped under its methods."""
    flags: dict[str, Flag] = {}
    for name, (cls, _) in METHODS.items():
        for flag in config_flags(cls.options_class, "method.options.", ("method", "")) if cls.options_class else ():
            known = flags.get(flag.path)
            flags[flag.path] = dataclasses.replace(flag, used_by=(*(known.used_by if known else ()), name))
    return list(flags.values())


def _declared(cls: type | None) -> set[str]:
    """The option names an options dataclass declares (none without one)."""
    return {f.name for f in dataclasses.fields(cls)} if cls else set()


def completed_options(cfg: MethodConfig) -> dict[str, object]:
    """The chosen method's own options, every one (defaults for those not set), each checked against its type and
    range; an option the method does not declare is one line naming the methods that do."""
    cls = method_class(cfg.name).options_class
    declared = _declared(cls)
    for key in cfg.options:
        if key not in declared:
            owners = own_option_owners().get(key)
            where = f"an option of {', '.join(owners)}" if owners else "not an option of any method"
            raise UserError(f"{flag_name(key)}: {where}, not of --method {cfg.name}; drop it or choose "
                            f"{'that method' if owners else 'a valid option (see --help)'}")
    return dataclasses.asdict(own_options(cfg, cls)) if cls else {}


def for_method(cfg: MethodConfig, name: str) -> MethodConfig:
    """A copy of `cfg` for method `name`, keeping only the own options that method declares (a grid's flags may set
    the options of each of its methods); an unknown name is left for the run's checks to report."""
    if name not in METHODS:
        return dataclasses.replace(cfg, name=name)
    declared = _declared(METHODS[name][0].options_class)
    return dataclasses.replace(cfg, name=name, options={k: v for k, v in cfg.options.items() if k in declared})
