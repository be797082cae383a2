"""Whole-image prediction and scoring of a model on a list of samples."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..data.datasets import EvalDataset
from ..data.sample import SampleSource
from ..device import autocast
from ..errors import UserError
from ..io_utils import jsonable
from .inference import predict_probs, upsample_probs
from .metrics import aggregate, evaluate_case
from .postprocess import largest_component


@torch.no_grad()
def predict_image(model: torch.nn.Module, image: torch.Tensor, patch_size: int | Sequence[int] | None,
                  num_classes: int, device: torch.device, amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Normalised image (C, *S) -> class probabilities (K, *S) on the CPU (sliding window when larger than patch)."""
    model.eval()
    with autocast(device, amp_dtype):
        probs = predict_probs(model, image[None].to(device), patch_size=patch_size, num_classes=num_classes)
    return probs[0].float().cpu()


def evaluate_model(model: torch.nn.Module, source: SampleSource, ids: list[str], patch_size: int | Sequence[int] | None,
                   device: torch.device, amp_dtype: torch.dtype | None = None,
                   spacing: tuple[float, float] = (1.0, 1.0), progress: bool = False,
                   lcc_classes: Sequence[int] | None = None, downscale: int = 1) -> dict:
    """Score `model` on samples `ids`: top-level means over cases, plus `per_class`, `per_case`, `per_sample`.

    Metrics are computed per 2-D sample; a case's value is the mean over its samples (nanmean), and the
    top-level value is the mean over cases, so a patient with many slices does not weigh more. For a
    volumetric source (slices of 3D volumes, e.g. MSD) `volume` also holds scores of each case's slices
    stacked back into its volume (3D Dice and HD95 with the volume's spacing), as SSL4MIS and UniMatch
    score ACDC; `selection_score` prefers it. With `lcc_classes` (a list, possibly empty), `postprocessed`
    holds the same scores after keeping the largest connected component of those classes (per 2D sample
    for the sample scores, per stacked 3D volume for the volume scores). Samples of a volume source
    (`spatial_dims` 3) are whole volumes, scored in mm with their own case's spacing. With `downscale` N, a
    model trained on an `ssl-seg downscale --factor N` copy sees each image shrunk by N and its probabilities are
    upsampled to full size: scores are at full size, in full-size pixels.
    """
    data = EvalDataset(source, ids, downscale, pad_to=training_pad(model, patch_size))
    predictions: list[Prediction] = []
    items: Iterable = tqdm(range(len(data)), desc="evaluate", leave=False, disable=not progress)
    for i in items:
        item = data[i]
        probs = predict_image(model, item["image"], patch_size, source.num_classes, device, amp_dtype)
        probs = upsample_probs(probs[(slice(None), *(slice(0, s) for s in item["size"]))], item["mask"].shape)
        roi = item["roi"].numpy()
        pred = np.where(roi, probs.argmax(0).numpy(), 0).astype(np.uint8)
        truth = np.where(roi, item["mask"].numpy(), 0).astype(np.uint8)
        predictions.append(Prediction(data.indices[i], item["id"], item["case"], pred, truth))
    volume_spacing = getattr(source, "spacing", {}) if getattr(source, "volumetric", False) else None
    case_spacing = getattr(source, "spacing", {}) if getattr(source, "spatial_dims", 2) == 3 else {}
    result = score_predictions(predictions, source.num_classes, spacing, volume_spacing, case_spacing=case_spacing)
    if lcc_classes is not None:
        result["postprocessed"] = score_predictions(predictions, source.num_classes, spacing, volume_spacing,
                                                    lcc_classes, case_spacing)
        result["postprocessed"]["lcc_classes"] = sorted(int(c) for c in lcc_classes)
    return jsonable(result)


def training_pad(model: torch.nn.Module, patch_size: int | Sequence[int] | None) -> int | None:
    """The side to pad smaller 2D images to before a per-sample-norm network (as training padded them), else None."""
    if getattr(model, "per_sample_norm", False) and isinstance(patch_size, int):
        return patch_size
    return None


@dataclass
class Prediction:
    """One scored sample: its index in the source, id, case, predicted and true labels (H, W) uint8 (roi applied)."""

    index: int
    id: str
    case: str
    pred: np.ndarray
    truth: np.ndarray


def score_predictions(predictions: list[Prediction], num_classes: int, spacing: tuple[float, float],
                      volume_spacing: dict[str, tuple[float, float, float]] | None,
                      lcc_classes: Sequence[int] = (),
                      case_spacing: Mapping[str, tuple[float, float, float]] | None = None) -> dict:
    """Sample, case and (when `volume_spacing` is given) per-volume scores, after the optional LCC filter.

    `case_spacing` gives a case's own voxel size, used instead of `spacing` for its samples (3D samples).
    """
    per_sample: dict[str, dict] = {}
    by_case: dict[str, list[dict]] = defaultdict(list)
    for p in predictions:
        pred = largest_component(p.pred, lcc_classes) if lcc_classes else p.pred
        per_sample[p.id] = evaluate_case(pred, p.truth, num_classes, spacing=(case_spacing or {}).get(p.case, spacing))
        by_case[p.case].append(per_sample[p.id])
    per_case = {case: _strip(aggregate(ms)) for case, ms in by_case.items()}
    result = aggregate(list(per_case.values()))
    result["per_case"] = per_case
    result["per_sample"] = per_sample
    result["n_samples"] = len(per_sample)
    if volume_spacing is not None:
        stacks: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = defaultdict(list)
        for p in predictions:
            stacks[p.case].append((p.index, p.pred, p.truth))
        result["volume"] = score_volumes(stacks, num_classes, volume_spacing, lcc_classes)
    return result


def score_volumes(stacks: dict[str, list[tuple[int, np.ndarray, np.ndarray]]], num_classes: int,
                  spacing: dict[str, tuple[float, float, float]], lcc_classes: Sequence[int] = ()) -> dict:
    """Per-volume scores: each case's (slice index, pred, truth) slices stacked in index order -> 3D metrics.

    Returns `aggregate` over cases (means of per-volume Dice, HD95, ...) plus `per_case`. Spacing per case
    is (slice axis, H, W); missing cases use 1. `lcc_classes` are cut to their largest 3D component first.
    """
    per_case = {}
    for case, slices in stacks.items():
        slices = sorted(slices, key=lambda s: s[0])
        shapes = sorted({s[1].shape for s in slices})
        if len(shapes) > 1:
            raise UserError(f"volume '{case}': its slices differ in size {shapes}; they cannot be stacked and scored "
                            "in 3D (check --volume-by: each volume's slices must have one size)")
        pred, truth = np.stack([s[1] for s in slices]), np.stack([s[2] for s in slices])
        if lcc_classes:
            pred = largest_component(pred, lcc_classes)
        per_case[case] = evaluate_case(pred, truth, num_classes, spacing=spacing.get(case, (1.0, 1.0, 1.0)))
    result = aggregate(list(per_case.values()))
    result["per_case"] = {case: _strip(m) for case, m in per_case.items()}
    return result


def selection_score(result: dict) -> float:
    """The validation score that picks checkpoints: per-volume Dice when scored, else the case-mean Dice."""
    value = result.get("volume", {}).get("dice", result["dice"])
    return float("nan") if value is None else float(value)


def _strip(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("n_cases", "n_undefined_hd95")}
