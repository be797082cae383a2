"""How a folder's mask values map to classes: binary {0, 255}, or class indices 0..K-1, decided strictly.

Values that fit neither (near-binary anti-aliased masks, class codes with gaps, JPEG artefacts that add
classes made of isolated pixels) are refused with one line saying what was found and how to fix it.
A dataset may state its classes in DIR/classes.json: {"classes": ["background", "lesion", ...]}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError

CLASSES_FILE = "classes.json"
MAX_IMPLICIT_CLASSES = 32  # more consecutive values than this without classes.json: probably not a mask
SPECKLE_INTERIOR = 0.02  # a class with under 2 % of its pixels inside a 3x3-cross region ...
SPECKLE_SHARE = 0.01  # ... and under 1 % of all pixels is compression noise, not a class


@dataclass
class MaskStats:
    """Pixel counts per value (0..255) over all masks, how many of them lie inside a region, first file per value."""

    pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    interior: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    first_file: dict[int, Path] = field(default_factory=dict)

    def add(self, mask: np.ndarray, path: Path) -> None:
        """Count one (H, W) mask with values in 0..255."""
        self.pixels += np.bincount(mask.ravel(), minlength=256)
        if mask.shape[0] > 2 and mask.shape[1] > 2:
            c = mask[1:-1, 1:-1]
            inside = (c == mask[:-2, 1:-1]) & (c == mask[2:, 1:-1]) & (c == mask[1:-1, :-2]) & (c == mask[1:-1, 2:])
            self.interior += np.bincount(c[inside].ravel(), minlength=256)
        for v in np.unique(mask).tolist():
            self.first_file.setdefault(int(v), path)

    @property
    def values(self) -> list[int]:
        return np.flatnonzero(self.pixels).tolist()


def stated_classes(root: Path) -> list[str] | None:
    """Class names from DIR/classes.json, or None when the file is absent."""
    path = root / CLASSES_FILE
    if not path.is_file():
        return None
    try:
        names = json.loads(path.read_text()).get("classes")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
        raise UserError(f"{path}: not a JSON object ({e}); write {{\"classes\": [\"background\", ...]}}") from None
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names) \
            or len(set(names)) != len(names):
        raise UserError(f"{path}: 'classes' must list at least 2 distinct names, background first, "
                        "e.g. {\"classes\": [\"background\", \"lesion\"]}")
    return names


def _show(values: list[int]) -> str:
    return str(values) if len(values) <= 8 else f"[{', '.join(map(str, values[:4]))}, ..., {values[-1]}] ({len(values)} values)"


def decide(stats: MaskStats, masks_dir: Path, stated: list[str] | None) -> tuple[list[str], bool]:
    """(class names, binary) for masks with these values; binary means 255 -> class 1."""
    values = stats.values
    where = masks_dir.parent / CLASSES_FILE
    if set(values) <= {0, 255} and 255 in values and (stated is None or len(stated) == 2):
        return (stated or ["background", "foreground"]), True
    if stated is not None:
        outside = [v for v in values if v >= len(stated)]
        if outside:
            raise UserError(f"{masks_dir}: mask values {_show(outside)} (e.g. in {stats.first_file[outside[0]]}) "
                            f"are not among the {len(stated)} classes of {where}; fix the masks or the class list")
        return stated, False
    if 255 in values:
        others = [v for v in values if v not in (0, 255)]
        raise UserError(f"{masks_dir}: masks hold values {_show(values)}, not only 0 and 255 (e.g. "
                        f"{stats.first_file[others[0]]}): near-binary (anti-aliased or lossy) masks; threshold "
                        "them (value >= 128 -> 255, else 0) and save as PNG")
    k = max(values) + 1 if values else 2
    missing = sorted(set(range(k)) - set(values))
    if missing:
        raise UserError(f"{masks_dir}: mask values {_show(values)} are neither binary {{0, 255}} nor consecutive class "
                        f"indices 0..K-1 (no pixel has {_show(missing)}); threshold near-binary masks (>= 128 -> 255) "
                        f"and save as PNG, map class codes to 0..K-1, or name the classes in {where}")
    if k > MAX_IMPLICIT_CLASSES:
        raise UserError(f"{masks_dir}: masks use {k} values 0..{k - 1}: more than {MAX_IMPLICIT_CLASSES} classes, "
                        f"so these look like images, not masks; check the folder, or name the classes in {where}")
    total = stats.pixels.sum()
    speckle = [v for v in values if v > 0 and stats.interior[v] < SPECKLE_INTERIOR * stats.pixels[v]
               and stats.pixels[v] < SPECKLE_SHARE * total]
    if speckle:
        raise UserError(f"{masks_dir}: class value(s) {_show(speckle)} occur only as scattered pixels (e.g. in "
                        f"{stats.first_file[speckle[0]]}): lossy compression (JPEG) artefacts; re-export the masks "
                        f"losslessly as PNG, or name the classes in {where} if they are real")
    return ["background"] + [f"class_{i}" for i in range(1, max(k, 2))], False
