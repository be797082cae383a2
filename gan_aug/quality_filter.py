"""A quality filter for synthetic pairs: keep a pair only when a segmenter trained on the real labeled images recovers
its mask from its image (the filtering of DiffBoost / MedDiff-FT-style diffusion augmentation, as a plug-in for any
generator).

A pair's score is the Dice of the segmenter's prediction against the pair's mask (mean over the foreground classes in
either; 1 when both are empty). The threshold is chosen on validation, never on test: the `quantile` of the same
segmenter's per-image Dice on its own run's validation images, so a kept synthetic pair is at least as recognisable
as that share of real images are; `--filter-dice` sets it by hand instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ssl_seg.data.sources import open_source
from ssl_seg.data.splits import Split
from ssl_seg.data.transforms import normalize, pad_and_normalize
from ssl_seg.engine.run_models import load_run
from ssl_seg.engine.runner import patch_for
from ssl_seg.errors import UserError
from ssl_seg.evaluation.metrics import dice
from ssl_seg.evaluation.inference import predict_probs
from ssl_seg.evaluation.scoring import evaluate_model, training_pad


@dataclass
class FilterReport:
    """What the filter did: its threshold and where it came from, pairs scored and kept (passed; the last batch's
    passing pairs beyond --n are not written)."""

    threshold: float
    chosen_by: str
    scored: int = 0
    kept: int = 0

    def as_dict(self) -> dict:
        """For the synthetic set's manifest."""
        return {"threshold": self.threshold, "chosen_by": self.chosen_by, "scored": self.scored, "kept": self.kept,
                "acceptance_rate": self.kept / self.scored if self.scored else None}


class MaskRecoveryFilter:
    """Scores (images, masks) batches with a trained segmenter; `keep` says which pairs pass the threshold."""

    def __init__(self, run_dir: str | Path, num_classes: int, device: torch.device, threshold: float | None = None,
                 quantile: float = 0.1) -> None:
        if threshold is not None and not 0 <= threshold <= 1:
            raise UserError(f"--filter-dice {threshold}: a Dice in [0, 1]")
        if not 0 <= quantile <= 1:
            raise UserError(f"--filter-quantile {quantile}: in [0, 1]")
        self.model, cfg, info = load_run(run_dir, "best", device)
        if info["num_classes"] != num_classes:
            raise UserError(f"--filter-run {run_dir}: its segmenter has {info['num_classes']} classes, the generator "
                            f"{num_classes}; train the filter's segmenter on the generator's data")
        if cfg.data.spatial_dims != 2:
            raise UserError(f"--filter-run {run_dir}: a 3D segmenter; the filter scores 2D pairs (train it on slices)")
        self.device, self.num_classes = device, num_classes
        source = open_source(cfg.data.data, 2, cfg.data.volume_by)
        self.patch = patch_for(cfg, source)
        self.pad = training_pad(self.model, self.patch)
        if threshold is None:
            per_image = self._validation_dice(Path(run_dir), source)
            threshold = float(np.quantile(per_image, quantile))
            chosen_by = f"quantile {quantile:g} of the segmenter's Dice on its {len(per_image)} validation images"
        else:
            chosen_by = "--filter-dice"
        self.report = FilterReport(threshold, chosen_by)

    def _validation_dice(self, run_dir: Path, source) -> np.ndarray:
        split = Split.load(run_dir / "split.json")
        if not split.val:
            raise UserError(f"--filter-run {run_dir}: its split has no validation images to choose the threshold on; "
                            "give --filter-dice")
        result = evaluate_model(self.model, source, split.val, self.patch, self.device)
        per_image = np.array([s["dice"] for s in result["per_sample"].values()], dtype=float)
        return per_image[np.isfinite(per_image)]

    @torch.no_grad()
    def scores(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Dice per pair of images (b, C, S, S) in [0, 1] and masks (b, S, S)."""
        prepare = (lambda x: pad_and_normalize(x, self.pad)) if self.pad else normalize  # as evaluation does
        x = torch.stack([prepare(torch.from_numpy(image).float()) for image in images]).to(self.device)
        self.model.eval()
        probs = predict_probs(self.model, x, self.patch, num_classes=self.num_classes)  # one pass for the batch
        preds = probs[..., : masks.shape[1], : masks.shape[2]].argmax(1).cpu().numpy()
        out = []
        for p, m in zip(preds, masks):
            classes = [c for c in range(1, self.num_classes) if (p == c).any() or (m == c).any()]
            out.append(float(np.mean([dice(p, m, c) for c in classes])) if classes else 1.0)
        return np.array(out)

    def keep(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """Boolean (b,): the pairs whose mask the segmenter recovers with Dice >= the threshold (counted)."""
        kept = self.scores(images, masks) >= self.report.threshold
        self.report.scored += len(kept)
        self.report.kept += int(kept.sum())
        return kept
