"""Post-processing of predicted label maps, chosen on validation as nnU-Net does.

`largest_component(labels, classes)` keeps, for each listed class, only its largest connected component
(full connectivity: 8 neighbours in 2D, 26 in 3D); the other components become background. Ties keep the
component met first in raster order. `choose_lcc_classes` keeps the filter for a class when it raises that class's
validation Dice at all, as nnU-Net's `determine_postprocessing` does: the rule has no parameter, so nothing in it
was tuned on test scores (benchmarks/PROTOCOL.md). An earlier half-point margin had been chosen on test outcomes
and was dropped for that reason.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
from scipy import ndimage


def largest_component(labels: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """(H, W) or (D, H, W) integer labels -> a copy where each class in `classes` keeps its largest component."""
    out = np.array(labels, copy=True)
    structure = ndimage.generate_binary_structure(out.ndim, out.ndim)
    for cls in classes:
        components, n = ndimage.label(out == cls, structure=structure)
        if n <= 1:  # absent or already one piece
            continue
        sizes = np.bincount(components.ravel())[1:]  # (n,) pixels per component 1..n
        keep = int(np.argmax(sizes)) + 1  # argmax returns the first of equal sizes: raster order
        out[(components > 0) & (components != keep)] = 0
    return out


LCC_MIN_GAIN = 0.0  # validation Dice (0-1) the filter must add to a class to be kept: any rise


def choose_lcc_classes(dice_without: Mapping[int, float | None], dice_with: Mapping[int, float | None],
                       min_gain: float = LCC_MIN_GAIN) -> list[int]:
    """Classes whose validation Dice is higher by more than `min_gain` (default: any rise) with the largest-component
    filter."""
    chosen = []
    for cls, without in dice_without.items():
        with_ = dice_with.get(cls)
        if without is not None and with_ is not None and with_ - without > min_gain:
            chosen.append(int(cls))
    return sorted(chosen)
