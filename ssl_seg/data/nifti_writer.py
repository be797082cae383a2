"""NIfTI writing: one volume per file, atomically, and the 3D phantom as an MSD / nnU-Net raw folder.

Axis convention of the written files: a (D, H, W) volume (D the slice axis) is stored as NIfTI (H, W, D) with
the diagonal affine diag(spacing_H, spacing_W, spacing_D), so the MSD slice reader (ssl_seg/data/msd.py), which
cuts along the last axis, gives back the (H, W) slices in order and `spacing[case] = (D, H, W)` spacing.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel
import numpy as np

from ..errors import UserError
from ..io_utils import atomic_path, atomic_write_json
from .phantom_volumes import LESION_CLASSES, lesion_volume


def write_nifti(path: str | Path, array: np.ndarray, affine: np.ndarray) -> None:
    """Write `array` (X, Y, Z[, C]) with the 4x4 voxel-to-mm `affine` to `path` (.nii or .nii.gz), atomically."""
    path = Path(path)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise UserError(f"{path}: NIfTI files end in .nii or .nii.gz")
    image = nibabel.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    data = image.to_bytes()
    with atomic_path(path) as tmp:
        tmp.write_bytes(gzip.compress(data, compresslevel=1) if path.name.endswith(".gz") else data)


def volume_affine(spacing: tuple[float, float, float]) -> np.ndarray:
    """Affine of a (D, H, W) volume of `spacing` mm stored as (H, W, D): diag(s_H, s_W, s_D, 1)."""
    s_d, s_h, s_w = spacing
    return np.diag([s_h, s_w, s_d, 1.0])


def write_phantom_msd(
    root: str | Path,
    n: int,
    shape: tuple[int, int, int] = (24, 64, 64),
    spacing: tuple[float, float, float] = (3.0, 1.0, 1.0),
    seed: int = 0,
) -> list[str]:
    """Write `n` lesion_volume cases as ROOT/{imagesTr,labelsTr}/<case>.nii.gz + dataset.json; return the cases.

    dataset.json is written last, so an interrupted write never looks like a finished MSD folder. A ROOT that
    already holds a dataset.json is refused (nothing is overwritten).
    """
    root = Path(root)
    if (root / "dataset.json").exists():
        raise UserError(f"{root}/dataset.json already exists; choose an empty folder (nothing was overwritten)")
    if n < 1:
        raise UserError(f"phantom volume count {n} must be at least 1")
    cases = []
    for index in range(n):
        volume = lesion_volume(shape, spacing, seed, index)
        affine = volume_affine(volume.spacing)
        write_nifti(root / "imagesTr" / f"{volume.id}.nii.gz", volume.image[0].transpose(1, 2, 0), affine)
        write_nifti(root / "labelsTr" / f"{volume.id}.nii.gz", volume.mask.astype(np.uint8).transpose(1, 2, 0),
                    affine)
        cases.append(volume.id)
    atomic_write_json(root / "dataset.json", {
        "name": "lesion_volume phantom",
        "description": f"ssl_seg.data.phantom_volumes.lesion_volume, shape {list(shape)} (D, H, W), "
                       f"spacing {list(spacing)} mm, seed {seed}",
        "tensorImageSize": "3D",
        "modality": {"0": "phantom"},
        "labels": {str(k): name for k, name in enumerate(LESION_CLASSES)},
        "numTraining": n,
        "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c in cases],
        "test": [],
    })
    return cases
