"""Hooks around the training loop: progress bar, TensorBoard, validation with best.pt, last.pt checkpoints."""

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


class BaseHook:
    """No-op defaults for the three hook points."""

    def before_train(self, trainer: Trainer) -> None:
        """Called once before the first step."""

    def after_step(self, trainer: Trainer) -> None:
        """Called after every step."""

    def after_train(self, trainer: Trainer) -> None:
        """Called once after the last step."""


def _due(trainer: Trainer, every: int) -> bool:
    step = trainer.state.step
    return (step + 1) % every == 0 or step + 1 == trainer.iterations


class ProgressHook(BaseHook):
    """A tqdm bar over iterations showing the total loss and the latest validation score."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.val_score: float | None = None

    def before_train(self, trainer: Trainer) -> None:
        self.bar = tqdm(total=trainer.iterations, initial=trainer.state.step + 1, desc="train",
                        disable=not self.enabled, dynamic_ncols=True)

    def after_step(self, trainer: Trainer) -> None:
        postfix = {"loss": f"{trainer.losses['total']:.4f}", "lr": f"{trainer.lr:.2e}"}
        if self.val_score is not None:
            postfix["val_dice"] = f"{self.val_score:.4f}"
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(1)

    def after_train(self, trainer: Trainer) -> None:
        self.bar.close()


class ValidationHook(BaseHook):
    """Every `every` steps, score each evaluation network on validation data; save best.pt on improvement."""

    def __init__(self, evaluate: Callable[[torch.nn.Module], dict], every: int, best_path: Path,
                 payload: Callable[[Trainer], dict[str, Any]], on_result: list[Callable[[int, str, dict], None]]):
        self.evaluate, self.every, self.best_path = evaluate, every, best_path
        self.payload, self.on_result = payload, on_result

    def after_step(self, trainer: Trainer) -> None:
        if not _due(trainer, self.every):
            return
        step = trainer.state.step
        scores = {}
        for name, model in trainer.method.eval_models().items():
            result = self.evaluate(model)
            scores[name] = selection_score(result)
            for callback in self.on_result:
                callback(step, name, result)
        default = next(iter(scores))
        score = scores[default]
        if score > trainer.state.best_score:
            trainer.state.best_score, trainer.state.best_step, trainer.state.best_model = score, step, default
            save_checkpoint(self.best_path, self.payload(trainer))


class CheckpointHook(BaseHook):
    """Write last.pt every `every` steps and at the end (atomically), so a killed run resumes from there."""

    def __init__(self, every: int, path: Path, payload: Callable[[Trainer], dict[str, Any]]):
        self.every, self.path, self.payload = every, path, payload

    def after_step(self, trainer: Trainer) -> None:
        if _due(trainer, self.every):
            save_checkpoint(self.path, self.payload(trainer))


class TensorBoardHook(BaseHook):
    """Scalars (losses, lr, synthetic share, validation metrics) and image panels (input | truth | prediction);
    at the end, the same scalars as RUN_DIR/curves.png."""

    def __init__(self, log_dir: Path, log_every: int, image_every: int, num_classes: int):
        from torch.utils.tensorboard import SummaryWriter  # imported here: tensorboard is slow to import

        self.writer, self.log_dir = SummaryWriter(str(log_dir)), Path(log_dir)
        self.log_every, self.image_every, self.num_classes = log_every, image_every, num_classes

    def after_step(self, trainer: Trainer) -> None:
        step = trainer.state.step
        if _due(trainer, self.log_every):
            for key, value in trainer.losses.items():
                self.writer.add_scalar(key if key.startswith("stat/") else f"loss/{key}", value, step)
            self.writer.add_scalar("lr", trainer.lr, step)
        if trainer.batch is not None and "n_synthetic" in trainer.batch:
            n_labeled = trainer.batch["labeled"]["image"].shape[0]
            self.writer.add_scalar("data/synthetic_ratio", trainer.batch["n_synthetic"] / n_labeled, step)
        if _due(trainer, self.image_every):
            self._panel(trainer, step)

    @torch.no_grad()
    def _panel(self, trainer: Trainer, step: int) -> None:
        batch = trainer.batch["labeled"]
        model = next(iter(trainer.method.eval_models().values()))
        model.eval()
        image, mask = batch["image"][:4].float(), batch["mask"][:4]
        pred = model(image).argmax(1)
        if image.ndim == 5:  # volumes: show the middle slice
            middle = image.shape[2] // 2
            image, mask, pred = image[:, :, middle], mask[:, middle], pred[:, middle]
        scale = max(self.num_classes - 1, 1)
        img = (image[:, :1] - image[:, :1].amin(dim=(2, 3), keepdim=True))
        img = img / img.amax(dim=(2, 3), keepdim=True).clamp(min=1e-6)
        panel = torch.cat([img, mask[:, None].float() / scale, pred[:, None].float() / scale], dim=3)
        self.writer.add_images("train/input|truth|prediction", panel.cpu(), step)

    def log_validation(self, step: int, name: str, result: dict) -> None:
        """Validation metrics of network `name` (a ValidationHook callback)."""
        for key in ("dice", "iou", "hd95", "asd"):
            if result.get(key) is not None:
                self.writer.add_scalar(f"val/{name}/{key}", result[key], step)

    def after_train(self, trainer: Trainer) -> None:
        self.writer.close()
        plot_curves(self.log_dir, self.log_dir.parent / "curves.png")  # for users without TensorBoard
