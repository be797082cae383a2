"""Real-vs-synthetic mixing schedules: the share of generated pairs in each labeled batch over training."""

from __future__ import annotations

import math
from typing import Callable

from ..errors import UserError


def _constant(r0: float, r1: float, t: float) -> float:
    return r0


def _linear(r0: float, r1: float, t: float) -> float:
    return r0 + (r1 - r0) * t


def _cosine(r0: float, r1: float, t: float) -> float:
    return r1 + (r0 - r1) * 0.5 * (1.0 + math.cos(math.pi * t))


def _step(r0: float, r1: float, t: float) -> float:
    return r0 if t < 0.5 else r1


def _warmup(r0: float, r1: float, t: float) -> float:
    """Real data only for the first 20 % of training, then linear from r0 to r1."""
    return 0.0 if t < 0.2 else _linear(r0, r1, (t - 0.2) / 0.8)


SCHEDULES: dict[str, Callable[[float, float, float], float]] = {
    "constant": _constant, "linear": _linear, "cosine": _cosine, "step": _step, "warmup": _warmup,
}


def schedule_names() -> list[str]:
    """Valid --ratio-schedule names."""
    return list(SCHEDULES)


def build_schedule(name: str, ratio: float, ratio_end: float | None, iterations: int) -> Callable[[int], float]:
    """ratio_at(step) in [0, 1]; t = step / (iterations - 1) runs from 0 at the first step to 1 at the last."""
    if name not in SCHEDULES:
        raise UserError(f"--ratio-schedule {name}: unknown; valid: {', '.join(SCHEDULES)}")
    end = ratio if ratio_end is None else ratio_end
    for flag, value in (("--synthetic-ratio", ratio), ("--ratio-end", end)):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{flag} {value}: must be between 0 and 1")
    fn = SCHEDULES[name]
    span = max(iterations - 1, 1)
    return lambda step: min(1.0, max(0.0, fn(ratio, end, min(step, span) / span)))
