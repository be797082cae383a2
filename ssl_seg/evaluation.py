"""Whole-image prediction and scoring of a model on a list of samples."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

import numpy as np
import torch
from tqdm import tqdm

from .data.datasets import EvalDataset
from .data.readers import SampleSource
from .device import autocast
from .inference import predict_probs
from .metrics import aggregate, evaluate_case


@torch.no_grad()
def predict_image(model: torch.nn.Module, image: torch.Tensor, patch_size: int | None, num_classes: int,
                  device: torch.device, amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Normalised image (C,H,W) -> class probabilities (K,H,W) on the CPU (sliding window when larger than patch)."""
    model.eval()
    with autocast(device, amp_dtype):
        probs = predict_probs(model, image[None].to(device), patch_size=patch_size, num_classes=num_classes)
    return probs[0].float().cpu()


def evaluate_model(model: torch.nn.Module, source: SampleSource, ids: list[str], patch_size: int | None,
                   device: torch.device, amp_dtype: torch.dtype | None = None,
                   spacing: tuple[float, float] = (1.0, 1.0), progress: bool = False) -> dict:
    """Score `model` on samples `ids`: top-level means over cases, plus `per_class`, `per_case`, `per_sample`.

    Metrics are computed per 2-D sample; a case's value is the mean over its samples (nanmean), and the
    top-level value is the mean over cases, so a patient with many slices does not weigh more.
    """
    data = EvalDataset(source, ids)
    per_sample: dict[str, dict] = {}
    case_of: dict[str, str] = {}
    items: Iterable = tqdm(range(len(data)), desc="evaluate", leave=False, disable=not progress)
    for i in items:
        item = data[i]
        probs = predict_image(model, item["image"], patch_size, source.num_classes, device, amp_dtype)
        pred = probs.argmax(0).numpy()
        truth = item["mask"].numpy()
        per_sample[item["id"]] = evaluate_case(pred, truth, source.num_classes, spacing=spacing,
                                               roi=item["roi"].numpy())
        case_of[item["id"]] = item["case"]
    by_case: dict[str, list[dict]] = defaultdict(list)
    for sid, metrics in per_sample.items():
        by_case[case_of[sid]].append(metrics)
    per_case = {case: _strip(aggregate(ms)) for case, ms in by_case.items()}
    result = aggregate(list(per_case.values()))
    result["per_case"] = per_case
    result["per_sample"] = per_sample
    result["n_samples"] = len(per_sample)
    return _jsonable(result)


def _strip(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("n_cases", "n_undefined_hd95")}


def _jsonable(obj):
    """Convert numpy scalars / NaN to JSON-safe values (NaN -> None)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if np.isnan(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
