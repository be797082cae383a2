"""Whole 3D volumes as samples: the VolumeSource base, the lesion_volume phantom, and any volume source served as 2D
slices (the readers of each format are in its module: msd.py, h5format.py, ssl4mis.py).

A volume sample has image (C, D, H, W) float32 in [0, 1] and mask (D, H, W) int64; one sample per case.
Axis convention (shared with ssl_seg/data/nifti_writer.py): a file's (X, Y, Z) array becomes (D, H, W) =
(Z, X, Y), the last file axis being the slice axis. Each source keeps, per case, `spacing` in mm along
(D, H, W) and `affine`, the file's own (4, 4) voxel (X, Y, Z) -> mm map, so predictions can be written back on
the input's grid (`to_file_axes`).
"""

from __future__ import annotations

import statistics

import numpy as np

from .nifti_writer import volume_affine
from .phantom_volumes import LESION_CLASSES, MIN_VOXELS, VOLUME_TASK, lesion_volume
from .sample import IndexedSource, Sample


def to_volume_axes(array: np.ndarray) -> np.ndarray:
    """A file's (..., X, Y, Z) array -> (..., D, H, W) = (..., Z, X, Y)."""
    return np.ascontiguousarray(np.moveaxis(array, -1, -3))


def to_file_axes(array: np.ndarray) -> np.ndarray:
    """(..., D, H, W) -> the file's (..., X, Y, Z); the inverse of `to_volume_axes`."""
    return np.ascontiguousarray(np.moveaxis(array, -3, -1))


class VolumeSource(IndexedSource):
    """Shared bookkeeping of volume sources: one sample per case, spacing (D, H, W) mm and affine per case."""

    spatial_dims = 3
    spacing: dict[str, tuple[float, float, float]]
    affine: dict[str, np.ndarray]
    shapes: dict[str, tuple[int, int, int]]  # (D, H, W) voxels

    def median_spacing(self) -> tuple[float, float, float]:
        """Median voxel size over the cases, per axis (D, H, W), in mm."""
        return tuple(statistics.median(s[a] for s in self.spacing.values()) for a in range(3))  # type: ignore

    def median_shape(self) -> tuple[int, int, int]:
        """Median volume size over the cases, per axis (D, H, W), in voxels."""
        return tuple(int(statistics.median(s[a] for s in self.shapes.values())) for a in range(3))  # type: ignore


class LesionVolumeSource(VolumeSource):
    """`n` lesion_volume phantoms of (depth, size, size) voxels at 3 x 1 x 1 mm, made on demand (zero downloads).

    depth = 3/8 of size (at least 8), the proportions of make-phantoms' default 24 x 64 x 64.
    """

    def __init__(self, n: int = 20, size: int = 32, seed: int = 0):
        spacing = (3.0, 1.0, 1.0)
        depth = max(MIN_VOXELS, round(size * 3 / 8))
        self.name = f"phantom:{VOLUME_TASK}?n={n}&size={size}&seed={seed}"
        self.shape, self.seed = (depth, size, size), seed
        self.ids = [f"{VOLUME_TASK}_{seed}_{i:05d}" for i in range(n)]
        self.cases = list(self.ids)
        self._index_ids()
        self.in_channels, self.num_classes, self.class_names = 1, len(LESION_CLASSES), list(LESION_CLASSES)
        self.spacing = {case: spacing for case in self.ids}
        self.affine = {case: volume_affine(spacing) for case in self.ids}
        self.shapes = {case: self.shape for case in self.ids}

    def load(self, index: int) -> Sample:
        """Phantom `index`: image (1, D, H, W) in [0, 1], mask (D, H, W) over LESION_CLASSES."""
        volume = lesion_volume(self.shape, self.spacing[self.ids[index]], self.seed, index)
        return Sample(image=volume.image, mask=volume.mask, id=volume.id, case=volume.id)


class VolumeSlices(IndexedSource):
    """A volume source served as 2D slices along D, `<case>_slice_<k>`, scored per volume like the MSD slice reader.

    `spacing[case]` is (D, H, W) = (slice axis, H, W) mm, as `volumetric` sources give it; lists of cases
    (SSL4MIS's predefined split) become lists of their slices. The last few volumes read are kept decoded.
    """

    volumetric = True
    _KEEP = 8  # decoded volumes kept

    def __init__(self, volumes: VolumeSource):
        self.volumes, self.name = volumes, volumes.name
        self.in_channels, self.num_classes = volumes.in_channels, volumes.num_classes
        self.class_names, self.spacing = volumes.class_names, volumes.spacing
        self.notes = list(getattr(volumes, "notes", []))
        self.ids, self.cases, self._where = [], [], []
        by_case: dict[str, list[str]] = {}
        for v, case in enumerate(volumes.ids):
            for k in range(volumes.shapes[case][0]):
                self.ids.append(f"{case}_slice_{k}")
                self.cases.append(case)
                self._where.append((v, k))
                by_case.setdefault(case, []).append(self.ids[-1])
        self._index_ids()
        split = volumes.predefined_split
        self.predefined_split = None if split is None else {
            key: [i for case in cases for i in by_case[case]] for key, cases in split.items()}
        self._decoded: dict[int, Sample] = {}

    def load(self, index: int) -> Sample:
        """Slice `index`: image (C, H, W), mask (H, W) of its volume."""
        v, k = self._where[index]
        if v not in self._decoded:
            if len(self._decoded) >= self._KEEP:
                self._decoded.pop(next(iter(self._decoded)))
            self._decoded[v] = self.volumes.load(v)
        volume = self._decoded[v]
        return Sample(image=np.ascontiguousarray(volume.image[:, k]), mask=np.ascontiguousarray(volume.mask[k]),
                      id=self.ids[index], case=self.cases[index])
