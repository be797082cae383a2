"""Exponential moving average (EMA) teachers, written once for every method that needs one."""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from ..errors import UserError
from .base import gradient_free


def ema_decay_at(decay: float, step: int) -> float:
    """Effective decay min(decay, 1 - 1/(step + 1)): early on the teacher follows the student closely."""
    return min(decay, 1.0 - 1.0 / (step + 1))


def ramped_ema_decay(decay: float, step: int, rampup: float) -> float:
    """Decay whose half-life is at most `rampup` x the steps taken (StyleGAN2-ADA's generator EMA, Karras et al.
    2020; theirs 0.05), never above `decay`: a short run's EMA averages its recent weights, not its whole path from
    the random initialisation (which `ema_decay_at`, used when `rampup` is 0, averages uniformly for the first
    1 / (1 - decay) steps)."""
    if rampup <= 0.0:
        return ema_decay_at(decay, step)
    if decay <= 0.0:
        return 0.0
    half_life = min(math.log(0.5) / math.log(decay), rampup * (step + 1))
    return min(decay, 0.5 ** (1.0 / half_life))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """teacher <- decay * teacher + (1 - decay) * student for parameters only.

    Buffers (BatchNorm running statistics) are the teacher's own, kept up to date by its training-mode
    forward passes (as in SSL4MIS). Copying the student's statistics instead pairs them with lagging EMA
    weights, which wrecked the teacher in eval mode (measured: teacher val Dice 0.10 vs student 0.56).
    """
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.lerp_(s.detach(), 1.0 - decay)


def gradient_free_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` whose parameters need no gradient and hold none (a teacher's starting point)."""
    copied = copy.deepcopy(model)
    for p in copied.parameters():
        p.requires_grad_(False)
        p.grad = None
    return copied


class EMATeacher:
    """A gradient-free copy of a student network that tracks its EMA (Tarvainen & Valpola 2017)."""

    def __init__(self, student: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise UserError(f"method.ema_decay must be in [0, 1) (got {decay}); e.g. 0.99")
        self.decay = decay
        self.module = gradient_free_copy(student)

    def update(self, student: nn.Module, step: int) -> None:
        """Move the teacher towards `student` after optimizer step `step` (0-based) with the warm-up decay."""
        ema_update(self.module, student, ema_decay_at(self.decay, step))

    def predict(self, images: Tensor) -> Tensor:
        """Teacher logits (B, K, H, W) under inference_mode, in training mode (batch statistics, like the student)."""
        self.module.train()
        return gradient_free(self.module, images)

    def state_dict(self) -> dict[str, Tensor]:
        """The teacher's weights and buffers."""
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore weights and buffers saved by `state_dict`."""
        self.module.load_state_dict(state)
