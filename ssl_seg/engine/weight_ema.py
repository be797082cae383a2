"""An exponential moving average of the trained network's weights, for evaluation only (Polyak averaging).

With `--weight-ema DECAY` the Trainer keeps one, updates it after every optimizer step, and evaluates it first:
validation picks best.pt on it, and `evaluate` / `predict` load it. It never feeds back into training, so the
trained network, its batches and the RNG are the same as without it.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from ..methods.ema import ema_decay_at, ema_update

NAME = "weight_ema"  # its name among the evaluated networks (validation logs, result.json's best_model)


@torch.no_grad()
def average_buffers(average: nn.Module, model: nn.Module, decay: float) -> None:
    """Floating buffers (BatchNorm running statistics) <- EMA with `decay`; integer ones (counters) copied.

    Averaged, not copied: the statistics then cover the same window of steps as the averaged weights. The live
    network's statistics belong to its current weights; paired with lagging averaged weights they mismatch (the
    mean teacher's measurement in methods/ema.py: 0.10 against 0.56 validation Dice). Unlike a teacher, this
    copy runs no training-mode passes that could keep statistics of its own.
    """
    for a, b in zip(average.buffers(), model.buffers(), strict=True):
        if a.is_floating_point():
            a.lerp_(b.detach(), 1.0 - decay)
        else:
            a.copy_(b)


class WeightEMA:
    """A gradient-free copy of `model` that follows it by EMA (weights and BatchNorm statistics), in eval mode."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
            p.grad = None

    def update(self, model: nn.Module, step: int) -> None:
        """Move towards `model` after optimizer step `step` (0-based), with the mean teacher's warm-up of the decay
        (min(decay, 1 - 1/(step + 1)): the plain mean of the weights so far until that reaches `decay`)."""
        decay = ema_decay_at(self.decay, step)
        ema_update(self.module, model, decay)
        average_buffers(self.module, model, decay)

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged weights and buffers."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore what `state_dict` saved."""
        self.module.load_state_dict(state)


def averaged_network(method: Any) -> nn.Module:
    """The network a weight EMA follows: the method's first trainable one (a mean teacher's student, not its
    teacher, which is an EMA already and the target of the consistency loss)."""
    return next(iter(method.models.values()))


def evaluated_networks(method: Any, weight_ema: WeightEMA | None) -> dict[str, nn.Module]:
    """Networks to evaluate, the first chosen for best.pt and loaded by `evaluate` / `predict`: the weight EMA
    when there is one, then the method's own (`eval_models`)."""
    own = method.eval_models()
    return own if weight_ema is None else {NAME: weight_ema.module, **own}
