"""The one in-memory sample record every reader returns, and the SampleSource protocol every reader follows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import UserError


@dataclass
class Sample:
    """One image with its mask: image (C, H, W) float32 in [0, 1]; mask (H, W) int64 or None."""

    image: np.ndarray
    mask: np.ndarray | None
    id: str
    case: str
    roi: np.ndarray | None = None  # (H, W) bool field of view; None means the whole image


class IndexedSource:
    """Shared id bookkeeping for file-based sources: call `_index_ids()` once `ids` is set."""

    name: str
    ids: list[str]
    cases: list[str]
    predefined_split: dict[str, list[str]] | None = None
    volumetric = False  # True: a case's samples, in id order, are the slices of one volume

    def _index_ids(self) -> None:
        self._index = {sample_id: i for i, sample_id in enumerate(self.ids)}
        if len(self._index) != len(self.ids):
            dup = next(i for i in self.ids if self.ids.count(i) > 1)
            raise UserError(f"{self.name}: sample id '{dup}' appears twice; list each file or volume once")

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, id: str) -> int:
        """Position of sample `id`; UserError naming it when absent."""
        if id not in self._index:
            raise UserError(f"{self.name}: no sample '{id}'; the split file was made for another DATA source")
        return self._index[id]


class SampleSource(Protocol):
    """A fixed, indexable collection of samples (see docs/architecture.md)."""

    name: str
    num_classes: int
    in_channels: int
    class_names: list[str]
    ids: list[str]
    cases: list[str]
    predefined_split: dict[str, list[str]] | None

    def __len__(self) -> int: ...

    def load(self, index: int) -> Sample: ...

    def index_of(self, id: str) -> int: ...


def read_name_list(path: Path) -> list[str]:
    """Names in an SSL4MIS .list file, one per line, blank lines skipped; each must name a file of the folder
    (no path separator, no '..'), so a list cannot make the reader open files outside the dataset."""
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    for name in names:
        if "/" in name or "\\" in name or name in (".", ".."):
            raise UserError(f"{path}: names {name!r}, a path; list bare case names of the dataset's files (no '/' "
                            "or '..')")
    return names


PHANTOM_OPTIONS = ("n", "size", "seed")


def parse_phantom(data: str, min_size: int) -> tuple[str, dict[str, int]]:
    """`phantom:<task>?n=400&size=128&seed=0` -> (task, options), each option a checked integer (one parser for the
    2D and 3D phantoms; `min_size` is the smallest side the task's generator draws)."""
    task, _, query = data[len("phantom:"):].partition("?")
    if not task:
        raise UserError(f"DATA '{data}': name a phantom task, e.g. phantom:cardiac")
    options: dict[str, int] = {}
    for part in filter(None, query.split("&")):
        key, _, value = part.partition("=")
        if key not in PHANTOM_OPTIONS:
            raise UserError(f"DATA '{data}': unknown phantom option '{key}'; valid: {', '.join(PHANTOM_OPTIONS)}")
        try:
            options[key] = int(value)
        except ValueError:
            raise UserError(f"DATA '{data}': {key}={value!r} is not an integer; e.g. phantom:{task}?{key}=1") from None
    least = {"n": 1, "size": min_size, "seed": 0}
    for key, number in options.items():
        if number < least[key]:
            raise UserError(f"DATA '{data}': {key} must be at least {least[key]}, got {number}")
    return task, options


def nothing_to_segment(where: str | Path) -> UserError:
    """The error for data whose labels are background only: every score would be trivially 1."""
    return UserError(f"{where}: every label is background only (all 0), so there is nothing to segment and every "
                     "score would be trivially 1; check that these are the right label files")


def task_differences(expected: SampleSource | dict, found: SampleSource | dict) -> list[str]:
    """What differs between two datasets' tasks: class count, class names (in order), channels."""
    def get(obj: SampleSource | dict, key: str):
        value = obj[key] if isinstance(obj, dict) else getattr(obj, key)
        return list(value) if isinstance(value, (list, tuple)) else value

    return [f"{key} {get(found, key)} instead of {get(expected, key)}"
            for key in ("num_classes", "class_names", "in_channels") if get(found, key) != get(expected, key)]
