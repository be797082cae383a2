"""Hooks around the training loop: progress bar, TensorBoard, validation with best.pt, checkpoints.

Segmentation and the GAN use the same hooks; what differs is handed in (evaluation, image panels, payload).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from .checkpoint import save_checkpoint
from .curves import plot_curves
from ..evaluation.scoring import selection_score
from .trainer import Trainer

# A hook is any object with before_train / after_step / after_train; this base gives no-op defaults.
# Validation callbacks: (trainer, step, network name, result) -> None.
ResultCallback = Callable[[Trainer, int, str, dict], None]


class BaseHook:
    """No-op defaults for the three hook points."""

    def before_train(self, trainer: Trainer) -> None:
        """Called once before the first step."""

    def after_step(self, trainer: Trainer) -> None:
        """Called after every step."""

    def after_train(self, trainer: Trainer) -> None:
        """Called once after the last step."""


def due(trainer: Trainer, every: int) -> bool:
    """Whether the step just done is an `every`-th one or the last; never when `every` is 0 (switched off)."""
    step = trainer.state.step
    return every > 0 and ((step + 1) % every == 0 or step + 1 == trainer.iterations)


class ProgressHook(BaseHook):
    """A tqdm bar over iterations showing the losses named in `shown` (label -> loss key), lr and validation score."""

    def __init__(self, enabled: bool = True, desc: str = "train", shown: dict[str, str] | None = None):
        self.enabled, self.desc = enabled, desc
        self.shown = shown or {"loss": "total"}
        self.bar: tqdm | None = None
        self.val_score: float | None = None

    def before_train(self, trainer: Trainer) -> None:
        self.bar = tqdm(total=trainer.iterations, initial=trainer.state.step + 1, desc=self.desc,
                        disable=not self.enabled, dynamic_ncols=True)

    def after_step(self, trainer: Trainer) -> None:
        postfix = {label: f"{trainer.losses[key]:.4f}" for label, key in self.shown.items()}
        postfix["lr"] = f"{trainer.lr:.2e}"
        if self.val_score is not None:
            postfix["val_dice"] = f"{self.val_score:.4f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def after_train(self, trainer: Trainer) -> None:
        self.bar.close()


class ValidationHook(BaseHook):
    """Every `every` steps, evaluate each evaluation network and pass each result to the `on_result` callbacks.

    With `best_path`, also save `payload(trainer)` there whenever the first network's selection score improves.
    With `at_start`, the networks are also evaluated before the first step (as step -1), so a warm-started run's
    best.pt can stay its start.
    """

    def __init__(self, evaluate: Callable[[torch.nn.Module], dict], every: int, best_path: Path | None,
                 payload: Callable[[Trainer], dict[str, Any]] | None, on_result: list[ResultCallback],
                 at_start: bool = False):
        self.evaluate, self.every, self.best_path = evaluate, every, best_path
        self.payload, self.on_result, self.at_start = payload, on_result, at_start

    def before_train(self, trainer: Trainer) -> None:
        if self.at_start and trainer.state.step == -1:
            self.validate(trainer)

    def after_step(self, trainer: Trainer) -> None:
        if due(trainer, self.every):
            self.validate(trainer)

    def validate(self, trainer: Trainer) -> None:
        """Evaluate every evaluation network at the trainer's current step; save best.pt on an improvement."""
        step = trainer.state.step
        results = {}
        for name, model in trainer.eval_models().items():
            results[name] = self.evaluate(model)
            for callback in self.on_result:
                callback(trainer, step, name, results[name])
        if self.best_path is None:
            return
        default = next(iter(results))
        score = selection_score(results[default])
        if score > trainer.state.best_score:
            trainer.state.best_score, trainer.state.best_step, trainer.state.best_model = score, step, default
            save_checkpoint(self.best_path, self.payload(trainer))


class CheckpointHook(BaseHook):
    """Write `payload(trainer)` to `path` every `every` steps and at the end (atomically), so a killed run resumes."""

    def __init__(self, every: int, path: Path, payload: Callable[[Trainer], dict[str, Any]]):
        self.every, self.path, self.payload = every, path, payload

    def after_step(self, trainer: Trainer) -> None:
        if due(trainer, self.every):
            save_checkpoint(self.path, self.payload(trainer))


# Image panels of a training step: trainer -> {tag: images (N, C, H, W) in [0, 1]}.
Panels = Callable[[Trainer], dict[str, torch.Tensor]]


def segmentation_panels(num_classes: int) -> Panels:
    """input | truth | prediction of the first evaluation network on up to 4 labeled images of the step
    (the middle slice of volumes)."""

    @torch.no_grad()
    def panels(trainer: Trainer) -> dict[str, torch.Tensor]:
        batch = trainer.batch["labeled"]
        model = next(iter(trainer.eval_models().values()))
        model.eval()
        image, mask = batch["image"][:4].float(), batch["mask"][:4]
        pred = model(image).argmax(1)
        if image.ndim == 5:  # volumes: show the middle slice
            middle = image.shape[2] // 2
            image, mask, pred = image[:, :, middle], mask[:, middle], pred[:, middle]
        scale = max(num_classes - 1, 1)
        img = (image[:, :1] - image[:, :1].amin(dim=(2, 3), keepdim=True))
        img = img / img.amax(dim=(2, 3), keepdim=True).clamp(min=1e-6)
        panel = torch.cat([img, mask[:, None].float() / scale, pred[:, None].float() / scale], dim=3)
        return {"train/input|truth|prediction": panel.cpu()}

    return panels


class TensorBoardHook(BaseHook):
    """Scalars (losses, lr, synthetic share) every `log_every` steps and `panels` every `image_every` steps;
    at the end, the same scalars as RUN_DIR/curves.png. `writer` is open for validation callbacks."""

    def __init__(self, log_dir: Path, log_every: int, image_every: int, panels: Panels):
        from torch.utils.tensorboard import SummaryWriter  # imported here: tensorboard is slow to import

        self.writer, self.log_dir = SummaryWriter(str(log_dir)), Path(log_dir)
        self.log_every, self.image_every, self.panels = log_every, image_every, panels

    def after_step(self, trainer: Trainer) -> None:
        step = trainer.state.step
        if due(trainer, self.log_every):
            for key, value in trainer.losses.items():
                self.writer.add_scalar(key if key.startswith("stat/") else f"loss/{key}", value, step)
            self.writer.add_scalar("lr", trainer.lr, step)
        if trainer.batch is not None and "n_synthetic" in trainer.batch:
            n_labeled = trainer.batch["labeled"]["image"].shape[0]
            self.writer.add_scalar("data/synthetic_ratio", trainer.batch["n_synthetic"] / n_labeled, step)
        if due(trainer, self.image_every):
            for tag, images in self.panels(trainer).items():
                self.writer.add_images(tag, images, step)

    def log_validation(self, trainer: Trainer, step: int, name: str, result: dict) -> None:
        """Segmentation metrics of network `name` (a ValidationHook callback)."""
        for key in ("dice", "iou", "hd95", "asd"):
            if result.get(key) is not None:
                self.writer.add_scalar(f"val/{name}/{key}", result[key], step)

    def after_train(self, trainer: Trainer) -> None:
        self.writer.close()
        plot_curves(self.log_dir, self.log_dir.parent / "curves.png")  # for users without TensorBoard
