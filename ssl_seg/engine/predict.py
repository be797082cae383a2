"""Predict masks for a folder of images with a trained run; write mask PNGs and optional overlays."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..config import RunConfig
from ..data.downscale import downscale_image
from ..data.folder import IMAGE_SUFFIXES, read_image
from ..data.transforms import normalize, pad_and_normalize
from ..device import resolve_device
from ..errors import UserError
from ..evaluation.inference import upsample_probs
from ..evaluation.scoring import predict_image, training_pad
from ..io_utils import atomic_path
from ..evaluation.postprocess import largest_component
from .report import check_downscale, load_postprocessing
from .run_models import load_run

PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [145, 30, 180],
                    [70, 240, 240], [240, 50, 230]], dtype=np.uint8)


def mask_to_png(pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Class indices -> uint8 PNG values: {0,255} for binary tasks (the binary mask scheme), indices otherwise."""
    return (pred * 255).astype(np.uint8) if num_classes == 2 else pred.astype(np.uint8)


def overlay_image(image: np.ndarray, pred: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """(C,H,W) image in [0,1] + (H,W) classes -> (H,W,3) uint8 colour overlay."""
    gray = image.mean(0) if image.shape[0] != 3 else None
    rgb = np.stack([gray] * 3, -1) if gray is not None else np.moveaxis(image, 0, -1)
    rgb = (rgb * 255).astype(np.float32)
    colours = PALETTE[pred % len(PALETTE)].astype(np.float32)
    fg = (pred > 0)[..., None]
    return np.where(fg, (1 - alpha) * rgb + alpha * colours, rgb).clip(0, 255).astype(np.uint8)


def predict_folder(run_dir: str | Path, input_dir: str | Path, out_dir: str | Path, checkpoint: str = "best",
                   overlay: bool = False, device: str = "auto", postprocess: bool = True, downscale: int = 1) -> int:
    """Write OUT/<stem>.png for each image in INPUT (and OUT/overlay/<stem>.png); returns the count.

    With `postprocess`, the largest-component filter the run chose on validation (RUN_DIR/postprocessing.json,
    written by `ssl-seg evaluate` and grids) is applied to each 2D mask; a run without that choice is left as is.
    A run trained on volumes (--spatial-dims 3) reads NIfTI volumes and writes OUT/<case>.nii.gz instead
    (`predict_volumes`; no overlays). With `downscale` N, for a run trained on an `ssl-seg downscale --factor N`
    copy, each full-size image is shrunk by N for the network and its mask is written at full size.
    """
    spatial_dims = RunConfig.load(Path(run_dir) / "config.json").data.spatial_dims
    check_downscale(downscale, spatial_dims)
    check_out_outside_input(Path(out_dir), Path(input_dir))
    if spatial_dims == 3:
        from .predict_volumes import predict_volumes

        return predict_volumes(run_dir, input_dir, out_dir, checkpoint, device, postprocess)
    input_dir = Path(input_dir)
    if (input_dir / "images").is_dir():
        input_dir = input_dir / "images"
    if not input_dir.is_dir():
        raise UserError(f"{input_dir}: input folder not found")
    files = sorted(p for p in input_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{input_dir}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    stems = Counter(p.stem for p in files)
    twice = sorted(stem for stem, n in stems.items() if n > 1)
    if twice:
        raise UserError(f"{input_dir}: {len(twice)} name(s) have several images (e.g. "
                        f"{', '.join(p.name for p in files if p.stem == twice[0])}), but each writes OUT/<name>.png; "
                        "keep one image per name")
    dev = resolve_device(device)
    model, cfg, info = load_run(run_dir, checkpoint, dev)
    lcc = load_postprocessing(run_dir, checkpoint) if postprocess else None
    out_dir = Path(out_dir)
    (out_dir / "overlay" if overlay else out_dir).mkdir(parents=True, exist_ok=True)
    for path in tqdm(files, desc="predict"):
        image = read_image(path, info["in_channels"])
        small = torch.from_numpy(downscale_image(image, downscale))
        pad = training_pad(model, cfg.data.patch_size)
        x = normalize(small) if pad is None else pad_and_normalize(small, pad)
        probs = predict_image(model, x, cfg.data.patch_size, info["num_classes"], dev)[:, :small.shape[1], :small.shape[2]]
        pred = upsample_probs(probs, image.shape[1:]).argmax(0).numpy()
        if lcc:
            pred = largest_component(pred, lcc)
        _save_png(out_dir / f"{path.stem}.png", mask_to_png(pred, info["num_classes"]))
        if overlay:
            _save_png(out_dir / "overlay" / f"{path.stem}.png", overlay_image(image, pred))
    return len(files)


def check_out_outside_input(out_dir: Path, input_dir: Path) -> None:
    """Refuse an --out in the --input folder (DATA/masks of a dataset given as DATA included) or in the masks/ or roi/
    beside an images/ folder given as --input."""
    out, given = out_dir.resolve(), input_dir.resolve()
    guarded = [given] + ([given.parent / "masks", given.parent / "roi"] if given.name == "images" else [])
    for folder in guarded:
        if out == folder or folder in out.parents:
            raise UserError(f"--out {out_dir} is inside {folder}, the input images or their masks: predicted masks "
                            "would overwrite or mix with them; choose a folder outside it")


def _save_png(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
