"""How realistic a mask source's masks are: a classifier two-sample test (Lopez-Paz & Oquab 2017) with a
leave-one-out 1-nearest-neighbour classifier on shape features. Accuracy 0.5: the classifier cannot tell
generated from real held-out masks; 1.0: it always can."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_EIGHT = np.ones((3, 3), bool)


def mask_features(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Per foreground class: area share, connected components, compactness (perimeter^2 / (4 pi area)),
    centroid (y, x) as shares of the size; (5 * (K - 1),) float."""
    h, w = mask.shape
    out = []
    for c in range(1, num_classes):
        inside = mask == c
        area = int(inside.sum())
        if area == 0:
            out += [0.0, 0.0, 0.0, 0.5, 0.5]
            continue
        components = ndimage.label(inside, structure=_EIGHT)[1]
        perimeter = int((inside & ~ndimage.binary_erosion(inside, border_value=0)).sum())
        cy, cx = np.argwhere(inside).mean(axis=0)
        out += [area / (h * w), float(components), perimeter ** 2 / (4 * np.pi * area), cy / h, cx / w]
    return np.array(out, dtype=np.float64)


def c2st_accuracy(real: np.ndarray, fake: np.ndarray) -> float:
    """Leave-one-out 1-NN accuracy of telling rows of `real` (n, F) from rows of `fake` (m, F), on features
    z-scored with the pooled mean and std; ties in distance go to the nearer index."""
    x = np.concatenate([real, fake])
    y = np.r_[np.zeros(len(real)), np.ones(len(fake))]
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return float((y[d.argmin(axis=1)] == y).mean())
