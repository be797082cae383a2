"""The learned mask source (`shape`, a statistical shape model) and the mask-realism two-sample test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from gan_aug.mask_realism import c2st_accuracy, mask_features
from gan_aug.masks import MASK_SOURCES, build_mask_source
from gan_aug.shape_model import ShapeModelMasks, signed_distance


def disk(size: int, radius: float, cy: float, cx: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2


def test_signed_distance_is_negative_inside_and_clipped():
    sdf = signed_distance(disk(33, 10, 16, 16), clip=8)
    assert sdf[16, 16] == -8 and sdf[0, 0] == 8  # deep inside / far outside: clipped
    assert sdf[16, 16 + 10] == -1 and sdf[16, 16 + 11] == 1  # last inside pixel, first outside pixel
    assert np.all(signed_distance(np.zeros((4, 4), bool), 3) == 3)


def test_one_labeled_mask_gives_back_that_mask():
    # a wall (class 1) around a cavity (class 2), symmetric so flips change nothing: zero shape variance
    mask = disk(32, 9, 15.5, 15.5).astype(np.int64) + disk(32, 4, 15.5, 15.5)
    source = ShapeModelMasks([mask], size=32, seed=0, num_classes=3)
    assert len(source.sd) == 0 or source.sd.max() < 1e-6
    it = iter(source)
    for _ in range(3):
        assert np.array_equal(next(it), mask)


def test_new_shapes_lie_between_the_labeled_ones():
    masks = [disk(48, r, 24, 24).astype(np.int64) for r in (6, 8, 10, 12)]
    it = iter(build_mask_source("shape", data="x", num_classes=2, size=48, seed=1, masks=masks))
    assert "shape" in MASK_SOURCES
    areas = []
    for _ in range(20):
        m = next(it)
        assert m.shape == (48, 48) and set(np.unique(m)) <= {0, 1}
        assert ndimage.label(m > 0)[1] == 1  # one blob, as every labeled mask
        areas.append(int(m.sum()))
    # radii 6..12 (areas ~113..452); weights within 2 sd keep the area inside a margin around that range
    assert min(areas) > 0.5 * math.pi * 6 ** 2 and max(areas) < 1.5 * math.pi * 12 ** 2
    assert len(set(areas)) > 5  # new shapes, not four repeated ones


def test_mask_features_on_a_hand_made_square():
    mask = np.zeros((10, 10), np.int64)
    mask[2:6, 3:7] = 1  # 4 x 4: area 16, 12 boundary pixels, centroid (3.5, 4.5)
    f = mask_features(mask, 3)
    assert f[:5] == pytest.approx([0.16, 1, 144 / (4 * math.pi * 16), 0.35, 0.45])
    assert f[5:].tolist() == [0.0, 0.0, 0.0, 0.5, 0.5]  # class 2 absent


def test_c2st_accuracy_hand_cases_and_chance_level():
    assert c2st_accuracy(np.array([[0.0], [0.1]]), np.array([[10.0], [10.1]])) == 1.0  # separable
    assert c2st_accuracy(np.array([[0.0], [10.0]]), np.array([[0.1], [10.1]])) == 0.0  # each one's twin is fake
    rng = np.random.default_rng(0)
    acc = c2st_accuracy(rng.normal(size=(200, 4)), rng.normal(size=(200, 4)))
    assert 0.4 < acc < 0.6  # one distribution: chance
