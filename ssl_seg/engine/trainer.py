"""The one training loop: batch -> method.training_step -> sum named losses -> backward -> after_step -> hooks.

Extension point: a method that makes its own update (several optimizers, e.g. a GAN's D step then G step)
implements `SelfUpdating.optimization_step` and is given to the Trainer with `optimizer=None`; everything
around the update (batches, device, the non-finite guard, step counting, hooks) stays the loop's.
`seed_everything` is the one seeding of every run (ssl-seg and gan-aug), called before anything random is built.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from .checkpoint import rng_state, set_rng_state
from .weight_ema import WeightEMA, averaged_network, evaluated_networks
from ..data.batch import Batch
from ..device import autocast, to_memory_format
from ..errors import UserError


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices): called once per run, before anything random is built."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class SelfUpdating(Protocol):
    """A method that updates its own networks: given to a Trainer with optimizer=None.

    `optimization_step(batch, step)` runs the whole update of 0-based `step` on the device batch (forward,
    backward and every optimizer, grad-scaler, learning-rate and EMA step, under its own autocast) and returns
    its detached named losses. The trainer still moves the batch, stops on a non-finite or diverged loss,
    counts steps, logs `lr_at(step)` (give it the schedule the method applies) and runs the hooks; checkpoints
    hold what the hooks' payload puts there.
    """

    models: dict[str, nn.Module]

    def optimization_step(self, batch: Batch, step: int) -> dict[str, Tensor]: ...
    def eval_models(self) -> dict[str, nn.Module]: ...


class Hook(Protocol):
    """Something that runs around the loop: logging, validation, checkpoints, progress."""

    def before_train(self, trainer: "Trainer") -> None: ...
    def after_step(self, trainer: "Trainer") -> None: ...
    def after_train(self, trainer: "Trainer") -> None: ...


@dataclass
class TrainState:
    """What the loop has done so far (resumable)."""

    step: int = -1  # last completed step
    best_score: float = -math.inf
    best_step: int = -1
    best_model: str = ""


def poly_lr(base_lr: float, iterations: int, power: float = 0.9) -> Callable[[int], float]:
    """Polynomial decay lr(step) = base * (1 - step / iterations) ** power (the SSL4MIS/nnU-Net schedule)."""
    return lambda step: base_lr * (1.0 - step / iterations) ** power


def constant_lr(base_lr: float) -> Callable[[int], float]:
    """lr(step) = base_lr."""
    return lambda step: base_lr


LR_SCHEDULES: dict[str, Callable[..., Callable[[int], float]]] = {
    "constant": lambda base_lr, iterations: constant_lr(base_lr),
    "poly": poly_lr,
}


def lr_schedule(name: str, base_lr: float, iterations: int) -> Callable[[int], float]:
    """step -> learning rate of the named schedule (`LR_SCHEDULES`)."""
    return LR_SCHEDULES[name](base_lr, iterations)


def loss_total(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of the named losses; keys starting with 'stat/' are diagnostics and are not summed."""
    return sum(v for k, v in losses.items() if not k.startswith("stat/"))


class Trainer:
    """Runs `iterations` optimisation steps of `method`, calling hooks after each step.

    With an `optimizer`, the method returns named losses (`training_step`) and the trainer sums them,
    backpropagates and steps (with a grad scaler under fp16). With `optimizer=None`, the method is
    `SelfUpdating`. Either way a non-finite loss, or one above `loss_limit`, stops the run with a UserError
    ending in `advice` before any hook sees the step. A `weight_ema` follows the method's first trainable network
    after every step and is the first network evaluated (`eval_models`).
    """

    def __init__(
        self,
        method: Any,
        optimizer: torch.optim.Optimizer | None,
        lr_at: Callable[[int], float],
        batches: Callable[[int], Iterable[dict]],
        iterations: int,
        device: torch.device,
        amp_dtype: torch.dtype | None = None,
        channels_last: bool = False,
        hooks: list[Hook] | None = None,
        loss_limit: float = math.inf,
        advice: str = "lower --lr, or use --amp off, then --resume from the last checkpoint",
        weight_ema: WeightEMA | None = None,
    ):
        if optimizer is None and not hasattr(method, "optimization_step"):
            raise TypeError(f"{type(method).__name__} has no optimization_step: give the Trainer an optimizer")
        self.method, self.optimizer, self.lr_at = method, optimizer, lr_at
        self.batches, self.iterations, self.device = batches, iterations, device
        self.amp_dtype, self.channels_last = amp_dtype, channels_last
        self.hooks = hooks or []
        self.loss_limit, self.advice = loss_limit, advice
        self.weight_ema = weight_ema
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.state = TrainState()
        self.history: list[dict[str, Any]] = []  # validation results, kept across resumes
        self.losses: dict[str, float] = {}
        self.lr = lr_at(0)
        self.batch: Batch | None = None

    def eval_models(self) -> dict[str, nn.Module]:
        """Networks to evaluate, the first one picking best.pt: the weight EMA if any, then the method's."""
        return evaluated_networks(self.method, self.weight_ema)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: networks, method extras, optimizer, scaler, loop state, RNG
        (and the weight EMA when there is one)."""
        d = {
            "models": {k: m.state_dict() for k, m in self.method.models.items()},
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "state": vars(self.state).copy(),
            "history": list(self.history),
            "rng": rng_state(),
        }
        if self.weight_ema is not None:
            d["weight_ema"] = self.weight_ema.state_dict()
        return d

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore a `state_dict`."""
        for k, m in self.method.models.items():
            m.load_state_dict(d["models"][k])
        self.method.load_state_dict(d["method"])
        self.optimizer.load_state_dict(d["optimizer"])
        self.scaler.load_state_dict(d["scaler"])
        self.state = TrainState(**d["state"])
        self.history = list(d.get("history", []))
        if self.weight_ema is not None:
            self.weight_ema.load_state_dict(d["weight_ema"])
        set_rng_state(d["rng"])

    def fit(self) -> TrainState:
        """Train from the step after `state.step` to the end."""
        for hook in self.hooks:
            hook.before_train(self)
        for batch in self.batches(self.state.step + 1):
            self.train_step(self.state.step + 1, batch)
            for hook in self.hooks:
                hook.after_step(self)
        for hook in self.hooks:
            hook.after_train(self)
        return self.state

    def train_step(self, step: int, batch: Batch) -> None:
        """One optimisation step on `batch` (moved to the device here)."""
        for model in self.method.models.values():
            model.train()
        self.batch = batch = self._to_device(batch)
        self.lr = self.lr_at(step)
        if self.optimizer is None:
            losses = self.method.optimization_step(batch, step)
        else:
            losses = self._gradient_step(batch, step)
        # one device sync per step (diagnostics such as a ramp-up weight may be CPU tensors)
        values = torch.stack([v.detach().float().to(self.device, non_blocking=True) for v in losses.values()])
        named = dict(zip(losses, values.cpu().tolist()))
        guarded = [v for k, v in named.items() if not k.startswith("stat/")]  # diagnostics are not losses
        if not all(math.isfinite(v) and abs(v) <= self.loss_limit for v in guarded):
            self._stop(step, batch, named)
        if self.weight_ema is not None:
            self.weight_ema.update(averaged_network(self.method), step)
        self.losses = named
        self.state.step = step

    def _gradient_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """training_step's named losses, summed, backpropagated and stepped; returns them plus 'total'."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        with autocast(self.device, self.amp_dtype):
            losses = self.method.training_step(batch, step)
        total = loss_total(losses)
        if not torch.isfinite(total):  # before the update, so the weights stay finite
            self._stop(step, batch, {k: float(v) for k, v in losses.items()})
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.method.after_step(step)
        return {**losses, "total": total}

    def _stop(self, step: int, batch: Batch, losses: dict[str, float]) -> None:
        """Raise the UserError for a non-finite or diverged loss at `step`, naming the data when its pixels are bad."""
        images = [part["image"] for part in batch.values() if isinstance(part, dict) and "image" in part]
        if not all(torch.isfinite(x).all() for x in images):
            raise UserError(f"the images of step {step} hold NaN or infinite pixels: a data problem, not the "
                            "learning rate; find and fix those pixels in the data")
        losses = {k: v for k, v in losses.items() if not k.startswith("stat/")}
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        if bad:
            raise UserError(f"non-finite loss {bad} at step {step}; {self.advice}")
        name, value = max(losses.items(), key=lambda kv: abs(kv[1]))
        raise UserError(f"the losses diverged at step {step} ({name} = {value:.2g}, above {self.loss_limit:.0e}); "
                        f"{self.advice}")

    def _to_device(self, batch: dict) -> dict:
        out: dict = {}
        for key, value in batch.items():
            if isinstance(value, dict):
                out[key] = self._to_device(value)
            elif isinstance(value, torch.Tensor):
                value = value.to(self.device, non_blocking=True)
                out[key] = to_memory_format(value, self.device, self.channels_last, on_cpu=True) if value.is_floating_point() else value
            else:
                out[key] = value
        return out
