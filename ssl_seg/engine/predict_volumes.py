"""Predict label volumes for a folder of NIfTI volumes with a 3D run; write OUT/<case>.nii.gz on the input's grid."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..data.msd import NIFTI_SUFFIXES, read_unlabeled_case
from ..data.nifti_writer import write_nifti
from ..data.patches3d import patch_shape
from ..data.transforms import normalize
from ..data.volumes import to_file_axes, to_volume_axes
from ..device import resolve_device
from ..errors import UserError
from ..evaluation.postprocess import largest_component
from ..evaluation.scoring import predict_image
from .report import load_postprocessing
from .run_models import load_run

_CHANNEL = re.compile(r"^(.+)_(\d{4})$")  # nnU-Net: <case>_0000.nii.gz, <case>_0001.nii.gz, ...


def _stem(path: Path) -> str:
    return next(path.name[: -len(s)] for s in NIFTI_SUFFIXES if path.name.endswith(s))


def volume_inputs(input_dir: Path) -> dict[str, list[Path]]:
    """{case: channel files} of the NIfTI volumes in INPUT (or INPUT/imagesTs, else INPUT/imagesTr).

    When every file is named `<case>_<4 digits>` (nnU-Net), the files of a case are its channels in number order;
    otherwise each file is one case (3D, or 4D with the channels last).
    """
    for sub in ("imagesTs", "imagesTr"):
        if (input_dir / sub).is_dir():
            input_dir = input_dir / sub
            break
    if not input_dir.is_dir():
        raise UserError(f"{input_dir}: input folder not found")
    files = sorted(p for p in input_dir.iterdir() if p.name.endswith(NIFTI_SUFFIXES) and not p.name.startswith("."))
    if not files:
        raise UserError(f"{input_dir}: no NIfTI volumes (.nii, .nii.gz) found")
    matches = [_CHANNEL.match(_stem(p)) for p in files]
    if not all(matches):
        return {_stem(p): [p] for p in files}
    cases: dict[str, list[Path]] = {}
    for path, match in sorted(zip(files, matches), key=lambda pm: (pm[1][1], int(pm[1][2]))):
        cases.setdefault(match[1], []).append(path)
        if int(match[2]) != len(cases[match[1]]) - 1:
            raise UserError(f"{path}: channel {match[2]} of case '{match[1]}' without the channels before it; "
                            f"every case needs {match[1]}_0000, _0001, ... with no gaps")
    return cases


def predict_volumes(run_dir: str | Path, input_dir: str | Path, out_dir: str | Path, checkpoint: str = "best",
                    device: str = "auto", postprocess: bool = True) -> int:
    """Write OUT/<case>.nii.gz (uint8 class indices, the input's affine) for each case in INPUT; returns the count.

    Each case is scaled as in training, predicted by 3D Gaussian sliding window with the run's patch shape, and
    cut to the largest component of the classes the run chose on validation (with `postprocess`).
    """
    cases = volume_inputs(Path(input_dir))
    dev = resolve_device(device)
    model, cfg, info = load_run(run_dir, checkpoint, dev)
    lcc = load_postprocessing(run_dir, checkpoint) if postprocess else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for case, paths in tqdm(cases.items(), desc="predict"):
        volume = read_unlabeled_case(paths, info["in_channels"])
        image = torch.from_numpy(to_volume_axes(volume.image))  # (C, D, H, W)
        sx, sy, sz = volume.spacing
        patch = info.get("patch") or patch_shape(cfg.data.patch_size, (sz, sx, sy), image.shape[1:])
        probs = predict_image(model, normalize(image, spatial_dims=3), tuple(patch), info["num_classes"], dev)
        pred = probs.argmax(0).numpy()
        if lcc:
            pred = largest_component(pred, lcc)
        write_nifti(out_dir / f"{case}.nii.gz", to_file_axes(pred).astype(np.uint8), volume.affine)
    return len(cases)
