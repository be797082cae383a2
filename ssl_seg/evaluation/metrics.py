"""Per-class segmentation metrics on integer label arrays (H, W) or (D, H, W): Dice, IoU, HD95, ASD.

Surface distances follow MedPy and MONAI: the surface of a mask is the mask minus its binary
erosion (cross-shaped structuring element, outside the image counts as background); distances
are Euclidean in physical units via `distance_transform_edt(sampling=spacing)`.

- HD95: the 95th percentile of the *pooled* symmetric surface distances (pred->truth and
  truth->pred concatenated, then percentile), as in MedPy `hd95`. MONAI's
  `compute_hausdorff_distance(percentile=95)` takes the larger of the two directed 95th percentiles
  instead (tests/test_metrics_monai.py checks both against MONAI).
- ASD: the average symmetric surface distance, the mean of the same pooled distances (MONAI
  `compute_average_surface_distance(symmetric=True)`). MedPy's `assd` instead averages the two
  directed means; the two agree when both surfaces have the same number of pixels.

Empty masks (per class):
- both pred and truth empty: Dice 1, IoU 1, HD95 0, ASD 0 (a correct "absent" prediction);
- exactly one empty: Dice 0, IoU 0, HD95 and ASD NaN (distance to nothing is undefined).
Means over classes and cases use `nanmean`; `aggregate` reports how many HD95 values were NaN.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..errors import UserError

METRICS = ("dice", "iou", "hd95", "asd")


def _check(pred: np.ndarray, truth: np.ndarray) -> None:
    """Raise if the two label arrays cannot be compared."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground-truth shape {truth.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"label arrays must be (H, W) or (D, H, W), got shape {pred.shape}")


def _spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    """Validated per-axis spacing; None means 1.0 along every axis."""
    if spacing is None:
        return (1.0,) * ndim
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != ndim or any(not s > 0 for s in spacing):
        raise UserError(f"spacing {spacing} must be {ndim} positive numbers, one per image axis")
    return spacing


def _overlap(pred: np.ndarray, truth: np.ndarray, cls: int) -> tuple[int, int, int]:
    """(|pred ∩ truth|, |pred|, |truth|) for class `cls`."""
    _check(pred, truth)
    p, t = pred == cls, truth == cls
    return int(np.count_nonzero(p & t)), int(np.count_nonzero(p)), int(np.count_nonzero(t))


def dice(pred: np.ndarray, truth: np.ndarray, cls: int) -> float:
    """Dice 2|P∩T| / (|P|+|T|) for class `cls`; 1 if both are empty."""
    inter, n_pred, n_truth = _overlap(pred, truth, cls)
    if n_pred + n_truth == 0:
        return 1.0
    return 2.0 * inter / (n_pred + n_truth)


def iou(pred: np.ndarray, truth: np.ndarray, cls: int) -> float:
    """Intersection over union |P∩T| / |P∪T| for class `cls`; 1 if both are empty."""
    inter, n_pred, n_truth = _overlap(pred, truth, cls)
    union = n_pred + n_truth - inter
    if union == 0:
        return 1.0
    return inter / union


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a bool mask: the mask minus its erosion."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure)


def _surface_distances(
    pred: np.ndarray, truth: np.ndarray, cls: int, spacing: Sequence[float] | None
) -> np.ndarray | None:
    """Pooled symmetric surface distances for class `cls`: empty if both masks are empty, None if one is."""
    _check(pred, truth)
    sampling = _spacing(spacing, pred.ndim)
    p, t = pred == cls, truth == cls
    has_p, has_t = bool(p.any()), bool(t.any())
    if not has_p and not has_t:
        return np.zeros(0)
    if has_p != has_t:
        return None
    sp, st = _surface(p), _surface(t)
    dist_to_t = ndimage.distance_transform_edt(~st, sampling=sampling)
    dist_to_p = ndimage.distance_transform_edt(~sp, sampling=sampling)
    return np.concatenate([dist_to_t[sp], dist_to_p[st]])


def _hd95_of(d: np.ndarray | None) -> float:
    """HD95 from pooled surface distances (see `_surface_distances` for None / empty)."""
    if d is None:
        return float("nan")
    return float(np.percentile(d, 95)) if d.size else 0.0


def _asd_of(d: np.ndarray | None) -> float:
    """ASD from pooled surface distances (see `_surface_distances` for None / empty)."""
    if d is None:
        return float("nan")
    return float(d.mean()) if d.size else 0.0


def hd95(pred: np.ndarray, truth: np.ndarray, cls: int, spacing: Sequence[float] | None = None) -> float:
    """95th percentile of the pooled symmetric surface distances (spacing units; None = 1 per axis)."""
    return _hd95_of(_surface_distances(pred, truth, cls, spacing))


def asd(pred: np.ndarray, truth: np.ndarray, cls: int, spacing: Sequence[float] | None = None) -> float:
    """Average symmetric surface distance: mean of the pooled surface distances (spacing units)."""
    return _asd_of(_surface_distances(pred, truth, cls, spacing))


def _class_scores(pred: np.ndarray, truth: np.ndarray, cls: int, spacing: Sequence[float] | None) -> dict:
    """{dice, iou, hd95, asd} for one class, computing the distance transforms once."""
    d = _surface_distances(pred, truth, cls, spacing)
    overlap = {"dice": dice(pred, truth, cls), "iou": iou(pred, truth, cls)}
    return {**overlap, "hd95": _hd95_of(d), "asd": _asd_of(d)}


def _nanmean(values: Sequence[float]) -> float:
    """Mean ignoring NaN; NaN (without a warning) if every value is NaN or there are none."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0 or np.isnan(arr).all():
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(np.nanmean(arr))


def evaluate_case(
    pred: np.ndarray,
    truth: np.ndarray,
    num_classes: int,
    spacing: Sequence[float] | None = None,
    roi: np.ndarray | None = None,
) -> dict:
    """Scores of one case: {dice, iou, hd95, asd} averaged over classes 1..K-1, plus `per_class`.

    `spacing` has one entry per array axis (None: 1.0 each). Pixels outside `roi` are set to
    background in both arrays before scoring.
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    _check(pred, truth)
    if roi is not None:
        roi = np.asarray(roi, dtype=bool)
        pred, truth = np.where(roi, pred, 0), np.where(roi, truth, 0)
    per_class = {c: _class_scores(pred, truth, c, spacing) for c in range(1, num_classes)}
    result: dict = {m: _nanmean([s[m] for s in per_class.values()]) for m in METRICS}
    result["per_class"] = per_class
    return result


def aggregate(cases: list[dict]) -> dict:
    """Nan-means of `evaluate_case` results, overall and per class, plus `n_cases`, `n_undefined_hd95`.

    `n_undefined_hd95` counts (case, class) pairs whose HD95 is NaN (exactly one mask empty);
    each per-class entry carries its own `n_undefined_hd95`.
    """
    if not cases:
        raise ValueError("aggregate() needs at least one evaluated case")
    classes = sorted({c for case in cases for c in case["per_class"]})
    per_class = {}
    for c in classes:
        scores = [case["per_class"][c] for case in cases if c in case["per_class"]]
        entry = {m: _nanmean([s[m] for s in scores]) for m in METRICS}
        entry["n_undefined_hd95"] = int(sum(np.isnan(s["hd95"]) for s in scores))
        per_class[c] = entry
    result: dict = {m: _nanmean([case[m] for case in cases]) for m in METRICS}
    result["n_cases"] = len(cases)
    result["n_undefined_hd95"] = sum(entry["n_undefined_hd95"] for entry in per_class.values())
    result["per_class"] = per_class
    return result
