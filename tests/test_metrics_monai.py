"""MONAI as the reference: the package's Dice, HD95, ASD and sliding-window inference against monai.metrics and
monai.inferers, equal to 1e-6 where the conventions match and the documented differences asserted where they do not:

- empty masks: MONAI's DiceMetric default (ignore_empty=True) gives NaN when the truth is empty, the package 1 (both
  empty) or 0 (prediction only), as MONAI's ignore_empty=False does; MONAI's HD95 / ASD give NaN (both empty),
  NaN / inf (one empty) where the package gives 0 / 0 and NaN / NaN;
- HD95: the package takes the 95th percentile of the pooled pred->truth and truth->pred distances (MedPy `hd95`),
  MONAI the larger of the two directed 95th percentiles (mostly larger; equal when the two directions agree);
- sliding window: the package spreads its tiles evenly (nnU-Net), MONAI steps int(patch * (1 - overlap)) and moves
  the last tile to the border; the package's Gaussian peaks at index size // 2 (nnU-Net), MONAI's at (size - 1) / 2
  with a 1e-3 floor, so they are equal for odd patch sides up to that floor.
"""

from __future__ import annotations

import warnings

import monai.metrics as monai_metrics
import numpy as np
import pytest
import torch
from monai.data.utils import compute_importance_map
from monai.inferers import sliding_window_inference
from monai.metrics.utils import get_edge_surface_distance
from scipy import ndimage

from ssl_seg.evaluation import inference
from ssl_seg.evaluation.metrics import asd, dice, hd95

# MONAI's distance functions pass themselves an argument deprecated in MONAI 1.5: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:.*always_return_as_numpy:FutureWarning")

RTOL = 1e-6  # MONAI's distances are float32: equal to a relative 1e-6 (float32 resolves 6e-8)
N_CASES = 50


def random_labels(rng: np.random.Generator, shape: tuple[int, ...], num_classes: int = 3) -> np.ndarray:
    """Smooth random blobs of classes 0..K-1 (some classes absent now and then): (*shape) int64."""
    field = ndimage.gaussian_filter(rng.normal(size=(num_classes, *shape)), sigma=[0, *[rng.uniform(1, 3)] * len(shape)])
    field[0] += rng.uniform(0.0, 0.4)  # more or less background
    return field.argmax(axis=0).astype(np.int64)


def perturbed(rng: np.random.Generator, truth: np.ndarray) -> np.ndarray:
    """A prediction near `truth`: shifted by up to 2 pixels per axis, with a few scattered wrong pixels."""
    pred = np.roll(truth, tuple(rng.integers(-2, 3, truth.ndim)), axis=tuple(range(truth.ndim)))
    flips = rng.random(truth.shape) < 0.01
    pred[flips] = rng.integers(0, truth.max() + 1, int(flips.sum()))
    return pred


def one_hot(labels: np.ndarray, cls: int) -> torch.Tensor:
    """Class `cls` of (*S) labels as MONAI's (B=1, C=2, *S) one-hot with background first."""
    mask = torch.as_tensor(labels == cls)
    return torch.stack([~mask, mask])[None].float()


def monai_scores(pred: np.ndarray, truth: np.ndarray, cls: int, spacing: tuple[float, ...]) -> dict[str, float]:
    """MONAI's Dice (ignore_empty=False), HD95 and symmetric ASD of class `cls`, background excluded."""
    p, t = one_hot(pred, cls), one_hot(truth, cls)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI warns on empty masks
        return {"dice": monai_metrics.compute_dice(p, t, include_background=False, ignore_empty=False).item(),
                "hd95": monai_metrics.compute_hausdorff_distance(p, t, percentile=95, spacing=list(spacing)).item(),
                "asd": monai_metrics.compute_average_surface_distance(p, t, symmetric=True,
                                                                       spacing=list(spacing)).item()}


def monai_directed(pred: np.ndarray, truth: np.ndarray, cls: int, spacing: tuple[float, ...]) -> list[np.ndarray]:
    """MONAI's surface distances pred->truth and truth->pred of class `cls`."""
    _, distances, _ = get_edge_surface_distance(torch.as_tensor(pred == cls), torch.as_tensor(truth == cls),
                                                spacing=spacing, symmetric=True)
    return [d.double().numpy() for d in distances]


def cases(spatial_dims: int) -> list[tuple[np.ndarray, np.ndarray, tuple[float, ...]]]:
    """N_CASES seeded (prediction, truth, anisotropic spacing) triples."""
    rng = np.random.default_rng(spatial_dims)
    shape = (40, 48) if spatial_dims == 2 else (12, 24, 20)
    out = []
    for _ in range(N_CASES):
        truth = random_labels(rng, shape)
        spacing = tuple(float(s) for s in rng.uniform(0.4, 3.0, spatial_dims))
        out.append((perturbed(rng, truth), truth, spacing))
    return out


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_random_cases_against_monai(spatial_dims: int) -> None:
    compared = {"dice": 0, "asd": 0, "hd95_pooled": 0}
    for pred, truth, spacing in cases(spatial_dims):
        for cls in (1, 2):
            ours = {"dice": dice(pred, truth, cls), "hd95": hd95(pred, truth, cls, spacing),
                    "asd": asd(pred, truth, cls, spacing)}
            ref = monai_scores(pred, truth, cls, spacing)
            assert ours["dice"] == pytest.approx(ref["dice"], rel=RTOL, abs=RTOL)
            compared["dice"] += 1
            if not ((pred == cls).any() and (truth == cls).any()):
                continue  # empty masks: test_empty_mask_conventions
            assert ours["asd"] == pytest.approx(ref["asd"], rel=RTOL)
            # same surfaces and distances: the pooled percentile of MONAI's two directed sets is ours ...
            directed = monai_directed(pred, truth, cls, spacing)
            assert ours["hd95"] == pytest.approx(np.percentile(np.concatenate(directed), 95), rel=RTOL)
            # ... while MONAI's HD95 is the larger of the two directed percentiles
            larger = max(torch.quantile(torch.as_tensor(d, dtype=torch.float32), 0.95).item() for d in directed)
            assert ref["hd95"] == pytest.approx(larger, rel=RTOL)  # as MONAI computes it, in float32
            compared["asd"] += 1
            compared["hd95_pooled"] += 1
    assert min(compared.values()) >= N_CASES  # at least 50 non-empty comparisons per metric


def test_hd95_definitions_differ_on_unequal_directions() -> None:
    truth = np.zeros((32, 32), np.int64)
    truth[8:24, 8:24] = 1
    pred = truth.copy()
    pred[14:18, 24:30] = 1  # a spur: far from the truth's surface one way only
    ours, ref = hd95(pred, truth, 1), monai_scores(pred, truth, 1, (1.0, 1.0))["hd95"]
    assert ours == 4.0 and ref == pytest.approx(5.55, rel=RTOL)  # pooled P95 vs the larger directed P95


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.5, 2.0)])
def test_hand_made_cases_equal(spacing: tuple[float, float]) -> None:
    dot_a, dot_b = np.zeros((9, 9), np.int64), np.zeros((9, 9), np.int64)
    dot_a[1, 1], dot_b[4, 5] = 1, 1
    full, border = np.ones((6, 7), np.int64), np.zeros((6, 7), np.int64)
    border[:, :3] = 1  # touches three image borders: outside the image counts as background in both
    for pred, truth in ((dot_a, dot_b), (dot_a, dot_a), (full, border), (border, full)):
        ref = monai_scores(pred, truth, 1, spacing)
        assert dice(pred, truth, 1) == pytest.approx(ref["dice"], rel=RTOL)
        assert asd(pred, truth, 1, spacing) == pytest.approx(ref["asd"], rel=RTOL)
    expected = np.hypot(3 * spacing[0], 4 * spacing[1])  # one pixel to one pixel: their distance
    assert hd95(dot_a, dot_b, 1, spacing) == pytest.approx(expected) == monai_scores(dot_a, dot_b, 1, spacing)["hd95"]


def test_empty_mask_conventions() -> None:
    empty, some = np.zeros((8, 8), np.int64), np.zeros((8, 8), np.int64)
    some[2:5, 3:6] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        default_dice = monai_metrics.compute_dice  # MONAI's default: ignore_empty=True
        for pred, truth, ours, monai_default in ((empty, empty, 1.0, np.nan), (some, empty, 0.0, np.nan),
                                                 (empty, some, 0.0, 0.0)):
            got = default_dice(one_hot(pred, 1), one_hot(truth, 1), include_background=False).item()
            assert dice(pred, truth, 1) == ours == monai_scores(pred, truth, 1, (1.0, 1.0))["dice"]
            assert got == monai_default or (np.isnan(got) and np.isnan(monai_default))
    both, only_pred, only_truth = (monai_scores(p, t, 1, (1.0, 1.0)) for p, t in
                                   ((empty, empty), (some, empty), (empty, some)))
    assert (hd95(empty, empty, 1), asd(empty, empty, 1)) == (0.0, 0.0)  # a correct "absent": distance 0
    assert np.isnan(both["hd95"]) and np.isnan(both["asd"])
    for pred, truth, ref in ((some, empty, only_pred), (empty, some, only_truth)):
        assert np.isnan(hd95(pred, truth, 1)) and np.isnan(asd(pred, truth, 1))  # undefined: skipped by the means
        assert np.isnan(ref["hd95"]) and ref["asd"] == np.inf


# ---- sliding-window inference -----------------------------------------------------------------------------------


def toy_network(spatial_dims: int) -> torch.nn.Module:
    """A seeded two-layer conv net, 1 -> 3 channels; its zero padding makes every output depend on the tile."""
    conv = torch.nn.Conv2d if spatial_dims == 2 else torch.nn.Conv3d
    torch.manual_seed(0)
    return torch.nn.Sequential(conv(1, 4, 3, padding=1), torch.nn.Tanh(), conv(4, 3, 3, padding=1)).eval()


def monai_window(net: torch.nn.Module, image: torch.Tensor, patch: tuple[int, ...], **kw) -> torch.Tensor:
    """MONAI's sliding window over the softmax of `net`, overlap 0.5."""
    with torch.no_grad():
        return sliding_window_inference(image, patch, 4, lambda x: torch.softmax(net(x), dim=1), overlap=0.5, **kw)


def monai_starts(size: int, patch: int, overlap: float) -> list[int]:
    """MONAI's tile starts: steps of int(patch * (1 - overlap)), the last tile moved to the border."""
    if size <= patch:
        return [0]
    step = max(int(patch * (1 - overlap)), 1)
    n = -(-(size - patch) // step) + 1
    return [min(i * step, size - patch) for i in range(n)]


@pytest.mark.parametrize(("size", "patch"), [((64, 96), (32, 32)), ((48, 64, 40), (32, 32, 16))])
def test_sliding_window_equals_monai_with_the_same_tiles_and_weight(size: tuple, patch: tuple) -> None:
    net, image = toy_network(len(size)), torch.rand(2, 1, *size, generator=torch.Generator().manual_seed(0))
    ours = inference.sliding_window_predict(net, image, patch, num_classes=3, overlap=0.5)
    ref = monai_window(net, image, patch, roi_weight_map=inference.gaussian_weight(patch))
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)


def test_sliding_window_tiles_differ_from_monai(monkeypatch) -> None:
    net, image, patch = toy_network(2), torch.rand(1, 1, 70, 45, generator=torch.Generator().manual_seed(1)), (32, 32)
    weight = inference.gaussian_weight(patch)
    assert inference._tile_starts(70, 32, 0.5) == [0, 13, 25, 38] and monai_starts(70, 32, 0.5) == [0, 16, 32, 38]
    ours = inference.sliding_window_predict(net, image, patch, num_classes=3, overlap=0.5)
    ref = monai_window(net, image, patch, roi_weight_map=weight)
    assert (ours - ref).abs().max() > 1e-4  # even spread vs fixed step: 1e-3 here, 0 with the same tiles
    monkeypatch.setattr(inference, "_tile_starts", monai_starts)
    same_tiles = inference.sliding_window_predict(net, image, patch, num_classes=3, overlap=0.5)
    torch.testing.assert_close(same_tiles, ref, rtol=0, atol=1e-6)  # the tiles are the only difference


def test_gaussian_weight_differs_from_monai_only_in_centre_and_floor() -> None:
    odd, even = (31, 33), (32, 32)
    theirs_odd = compute_importance_map(odd, mode="gaussian", sigma_scale=0.125, device="cpu")
    torch.testing.assert_close(inference.gaussian_weight(odd).clamp_min(1e-3), theirs_odd, rtol=0, atol=1e-6)
    ours, theirs = inference.gaussian_weight(even), compute_importance_map(even, mode="gaussian", sigma_scale=0.125,
                                                                           device="cpu")
    assert ours[16, 16] == ours.max() == 1.0  # nnU-Net: peak at index size // 2
    assert theirs[15, 15] == theirs[16, 16] == theirs.max() < 1.0  # MONAI: peak between 15 and 16
