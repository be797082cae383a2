"""The one in-memory sample record every reader returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Sample:
    """One image with its mask: image (C, H, W) float32 in [0, 1]; mask (H, W) int64 or None."""

    image: np.ndarray
    mask: np.ndarray | None
    id: str
    case: str
    roi: np.ndarray | None = None  # (H, W) bool field of view; None means the whole image
