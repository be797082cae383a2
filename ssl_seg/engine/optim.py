"""The optimizer and learning-rate schedule of a segmentation run, built from its TrainConfig in one place."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from ..config import TrainConfig
from ..errors import UserError
from .trainer import lr_schedule

DEFAULT_LR = {"sgd": 0.01, "adamw": 1e-3}
DEFAULT_SCHEDULE = {"sgd": "poly", "adamw": "constant"}


def schedule_name(tc: TrainConfig) -> str:
    """--lr-schedule, or the optimizer's default (poly for sgd, constant for adamw)."""
    return tc.lr_schedule or DEFAULT_SCHEDULE.get(tc.optimizer, "constant")


def build_optimizer(tc: TrainConfig, params: Iterable[torch.nn.Parameter]
                    ) -> tuple[torch.optim.Optimizer, Callable[[int], float]]:
    """(optimizer, step -> learning rate): SGD with Nesterov momentum 0.9 or AdamW, --weight-decay, the schedule."""
    if tc.optimizer not in DEFAULT_LR:
        raise UserError(f"--optimizer {tc.optimizer}: use {' or '.join(DEFAULT_LR)}")
    lr = tc.lr if tc.lr is not None else DEFAULT_LR[tc.optimizer]
    params = list(params)
    if tc.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=tc.weight_decay,
                                                           nesterov=True)
    else:
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=tc.weight_decay)
    return optimizer, lr_schedule(schedule_name(tc), lr, tc.iterations)
