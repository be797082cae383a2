"""The run-config flags: one per RunConfig field and per own option of a registered method, with the registries' names
as choices.

Above config and the registries (methods, models, losses, ratio and learning-rate schedules), so config never imports them.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .config import RunConfig
from .data.mixing import schedule_names
from .engine.trainer import LR_SCHEDULES
from .flags import Flag, add_config_flags
from .methods.losses import LOSSES
from .methods.registry import method_names, method_option_flags
from .models.registry import model_names


def registry_choices() -> dict[str, list[str]]:
    """Valid names of the RunConfig fields chosen from a registry, by path (--help lists them, parsing checks them)."""
    return {"method.name": method_names(), "model.backbone": model_names(), "method.loss": list(LOSSES),
            "data.ratio_schedule": schedule_names(), "train.lr_schedule": list(LR_SCHEDULES)}


def add_run_flags(parser: argparse.ArgumentParser, skip: Sequence[str] = (),
                  notes: dict[str, str] | None = None) -> list[Flag]:
    """A flag for every RunConfig field but the paths in `skip` (a grid sets those per run); `notes` replace the
    shown defaults by path; each registered method's own options follow, grouped under it. Returns the flags."""
    return add_config_flags(parser, RunConfig, choices=registry_choices(), skip=skip, notes=notes,
                            extra=method_option_flags())
