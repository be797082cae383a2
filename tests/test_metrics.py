"""Metrics against hand-computed answers, brute-force distances, and the empty-mask conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist, directed_hausdorff

from ssl_seg.errors import UserError
from ssl_seg.evaluation.metrics import aggregate, asd, dice, evaluate_case, hd95, iou


def _square(size: int, top: int, left: int, side: int, label: int = 1) -> np.ndarray:
    """(size, size) int64 array with a side x side square of `label` at (top, left)."""
    a = np.zeros((size, size), dtype=np.int64)
    a[top : top + side, left : left + side] = label
    return a


def _blob(seed: int, size: int = 40) -> np.ndarray:
    """A smooth random binary blob (int64) for cross-checks."""
    noise = np.random.default_rng(seed).normal(size=(size, size))
    return (ndimage.gaussian_filter(noise, 3) > 0.05).astype(np.int64)


def test_dice_iou_shifted_square() -> None:
    # 2x2 squares shifted by one column overlap in 2 pixels: Dice = 2*2/(4+4) = 0.5, IoU = 2/(4+4-2) = 1/3.
    truth, pred = _square(6, 1, 1, 2), _square(6, 1, 2, 2)
    assert dice(pred, truth, 1) == pytest.approx(0.5)
    assert iou(pred, truth, 1) == pytest.approx(1 / 3)
    assert dice(truth, truth, 1) == 1.0 and iou(truth, truth, 1) == 1.0


def test_dice_iou_random_blobs_match_formula() -> None:
    pred, truth = _blob(0), _blob(1)
    p, t = pred == 1, truth == 1
    expected = 2 * np.sum(p & t) / (np.sum(p) + np.sum(t))
    assert dice(pred, truth, 1) == pytest.approx(expected)
    d, j = dice(pred, truth, 1), iou(pred, truth, 1)
    assert 0 < d < 1
    assert d == pytest.approx(2 * j / (1 + j))  # Dice and IoU are tied by D = 2J / (1 + J)


def test_single_pixels_at_distance_three() -> None:
    pred, truth = np.zeros((8, 8), np.int64), np.zeros((8, 8), np.int64)
    pred[2, 2], truth[2, 5] = 1, 1  # a single pixel is its own surface; they lie 3 columns apart
    assert hd95(pred, truth, 1) == pytest.approx(3.0)
    assert asd(pred, truth, 1) == pytest.approx(3.0)


def test_anisotropic_spacing_doubles_distance_along_one_axis() -> None:
    pred, truth = np.zeros((8, 8), np.int64), np.zeros((8, 8), np.int64)
    pred[2, 2], truth[2, 5] = 1, 1  # 3 pixels apart along the column axis (axis 1)
    assert hd95(pred, truth, 1, spacing=(1.0, 2.0)) == pytest.approx(6.0)
    assert hd95(pred, truth, 1, spacing=(2.0, 1.0)) == pytest.approx(3.0)  # the row spacing does not matter
    assert asd(pred, truth, 1, spacing=(1.0, 2.0)) == pytest.approx(6.0)


def test_squares_offset_by_two() -> None:
    # 4x4 squares (12 boundary pixels each), pred shifted right by k = 2.
    # pred -> truth: top and bottom rows give 0,0,1,2 each; the left column's two middle pixels 1,1;
    # the right column's two middle pixels 2,2. Total: eight each of 0 and 1 and 2 when pooled with the
    # mirror-image truth -> pred set. ASD = (8*0 + 8*1 + 8*2) / 24 = 1; HD95 = HD100 = 2 = k.
    truth, pred = _square(10, 2, 2, 4), _square(10, 2, 4, 4)
    assert asd(pred, truth, 1) == pytest.approx(1.0)
    assert hd95(pred, truth, 1) == pytest.approx(2.0)


def test_asd_pools_both_directions() -> None:
    # pred: the centre pixel of truth's 3x3 square. pred -> truth surface: [1]. truth surface -> pred:
    # four edge pixels at 1, four corners at sqrt(2). Pooled ASD = (5 + 4*sqrt(2)) / 9 (MedPy's assd,
    # the mean of the two directed means, would give (1 + (4 + 4*sqrt(2)) / 8) / 2 instead).
    # HD95 of the sorted 9 values [1]*5 + [sqrt2]*4: position 0.95 * 8 = 7.6 lies among the sqrt(2)s.
    truth = _square(7, 2, 2, 3)
    pred = np.zeros_like(truth)
    pred[3, 3] = 1
    assert asd(pred, truth, 1) == pytest.approx((5 + 4 * math.sqrt(2)) / 9)
    assert hd95(pred, truth, 1) == pytest.approx(math.sqrt(2))


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 1.5)])
def test_hd95_matches_brute_force_and_hausdorff(spacing: tuple[float, float]) -> None:
    pred, truth = _blob(2), _blob(3)

    def surface_points(mask: np.ndarray) -> np.ndarray:
        m = mask == 1
        edge = m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(2, 1))
        return np.argwhere(edge) * np.asarray(spacing)

    sp, st = surface_points(pred), surface_points(truth)
    pair = cdist(sp, st)
    pooled = np.concatenate([pair.min(axis=1), pair.min(axis=0)])
    assert hd95(pred, truth, 1, spacing) == pytest.approx(np.percentile(pooled, 95))
    assert asd(pred, truth, 1, spacing) == pytest.approx(pooled.mean())
    hd100 = max(directed_hausdorff(sp, st)[0], directed_hausdorff(st, sp)[0])
    assert pooled.max() == pytest.approx(hd100)
    assert hd95(pred, truth, 1, spacing) <= hd100 + 1e-9


def test_3d_volume_with_spacing() -> None:
    pred, truth = np.zeros((5, 6, 6), np.int64), np.zeros((5, 6, 6), np.int64)
    pred[1, 3, 3], truth[3, 3, 3] = 1, 1  # two slices apart, slice thickness 3 -> 6
    assert hd95(pred, truth, 1, spacing=(3.0, 1.0, 1.0)) == pytest.approx(6.0)
    assert hd95(pred, truth, 1) == pytest.approx(2.0)
    assert dice(pred, truth, 1) == 0.0


def test_3d_anisotropic_spacing_changes_the_nearest_voxel() -> None:
    # Thick slices (5 mm) and fine in-plane columns (0.5 mm): truth voxel T = (2, 2, 2); prediction voxels
    # A = (3, 2, 2), one slice away, and B = (2, 2, 6), four columns away. Hand computed:
    # pred -> truth: A 5 mm, B 4 * 0.5 = 2 mm; truth -> pred: min(5, 2) = 2 mm (B, whereas in voxels A is nearer).
    # Pooled [5, 2, 2]: ASD 3; HD95 = numpy's linear percentile: 2 + 0.9 * (5 - 2) = 4.7.
    pred, truth = np.zeros((5, 4, 8), np.int64), np.zeros((5, 4, 8), np.int64)
    truth[2, 2, 2] = 1
    pred[3, 2, 2] = pred[2, 2, 6] = 1
    spacing = (5.0, 1.0, 0.5)
    assert hd95(pred, truth, 1, spacing) == pytest.approx(4.7)
    assert asd(pred, truth, 1, spacing) == pytest.approx(3.0)
    # In voxels: pooled [1, 4, 1] -> ASD 2, HD95 1 + 0.9 * 3 = 3.7. Axis order matters: (0.5, 1, 5) -> [0.5, 20, 0.5].
    assert (hd95(pred, truth, 1), asd(pred, truth, 1)) == (pytest.approx(3.7), pytest.approx(2.0))
    assert asd(pred, truth, 1, (0.5, 1.0, 5.0)) == pytest.approx(7.0)
    case = evaluate_case(pred, truth, 2, spacing=spacing)
    assert (case["hd95"], case["asd"], case["dice"]) == (pytest.approx(4.7), pytest.approx(3.0), 0.0)


def test_3d_anisotropic_matches_brute_force() -> None:
    truth = np.zeros((6, 12, 12), np.int64)
    pred = np.zeros_like(truth)
    truth[1:4, 2:9, 3:10] = 1  # a box
    pred[2:6, 4:11, 2:8] = 1  # another box, shifted on every axis
    spacing = (4.0, 0.7, 0.9)

    def surface_points(mask: np.ndarray) -> np.ndarray:
        m = mask == 1
        edge = m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(3, 1))
        return np.argwhere(edge) * np.asarray(spacing)  # (N, 3) in mm

    pair = cdist(surface_points(pred), surface_points(truth))
    pooled = np.concatenate([pair.min(axis=1), pair.min(axis=0)])
    assert hd95(pred, truth, 1, spacing) == pytest.approx(np.percentile(pooled, 95))
    assert asd(pred, truth, 1, spacing) == pytest.approx(pooled.mean())
    assert hd95(pred, truth, 1, spacing) != pytest.approx(hd95(pred, truth, 1))


def test_empty_conventions() -> None:
    empty, obj = np.zeros((6, 6), np.int64), _square(6, 1, 1, 2)
    assert (dice(empty, empty, 1), iou(empty, empty, 1)) == (1.0, 1.0)
    assert (hd95(empty, empty, 1), asd(empty, empty, 1)) == (0.0, 0.0)
    for pred, truth in [(empty, obj), (obj, empty)]:
        assert (dice(pred, truth, 1), iou(pred, truth, 1)) == (0.0, 0.0)
        assert math.isnan(hd95(pred, truth, 1)) and math.isnan(asd(pred, truth, 1))


def test_bad_inputs() -> None:
    a = np.zeros((6, 6), np.int64)
    with pytest.raises(UserError, match="spacing"):
        hd95(a, a, 1, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(UserError, match="spacing"):
        asd(a, a, 1, spacing=(1.0, 0.0))
    with pytest.raises(ValueError, match="shape"):
        dice(a, np.zeros((6, 7), np.int64), 1)


def test_evaluate_case_per_class_and_nanmean() -> None:
    truth = _square(10, 1, 1, 2, label=1) + _square(10, 6, 6, 3, label=2)
    pred = _square(10, 1, 2, 2, label=1)  # class 1 half right, class 2 missed entirely
    result = evaluate_case(pred, truth, num_classes=4)
    assert set(result["per_class"]) == {1, 2, 3}
    c1, c2, c3 = (result["per_class"][c] for c in (1, 2, 3))
    assert c1["dice"] == pytest.approx(0.5) and c2["dice"] == 0.0
    assert c3["dice"] == 1.0  # class 3 is absent from both
    assert math.isnan(c2["hd95"]) and c3["hd95"] == 0.0
    assert result["dice"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert result["hd95"] == pytest.approx((c1["hd95"] + 0.0) / 2)  # nanmean skips class 2


def test_evaluate_case_roi_clears_outside() -> None:
    truth = _square(12, 2, 2, 3)
    pred = truth.copy()
    pred[9:11, 9:11] = 1  # a false positive in the corner
    roi = np.zeros((12, 12), bool)
    roi[:8, :8] = True
    assert evaluate_case(pred, truth, 2)["dice"] < 1.0
    inside = evaluate_case(pred, truth, 2, roi=roi)
    assert inside["dice"] == 1.0 and inside["hd95"] == 0.0 and inside["asd"] == 0.0


def test_aggregate_nanmeans_and_counts() -> None:
    truth = _square(8, 1, 1, 2)
    perfect = evaluate_case(truth, truth, 2)
    missed = evaluate_case(np.zeros_like(truth), truth, 2)
    half = evaluate_case(_square(8, 1, 2, 2), truth, 2)
    agg = aggregate([perfect, missed, half])
    assert agg["n_cases"] == 3 and agg["n_undefined_hd95"] == 1
    assert agg["dice"] == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    assert agg["hd95"] == pytest.approx((0.0 + half["hd95"]) / 2)
    assert agg["per_class"][1]["n_undefined_hd95"] == 1
    assert agg["per_class"][1]["iou"] == pytest.approx((1.0 + 0.0 + 1 / 3) / 3)
    with pytest.raises(ValueError):
        aggregate([])
