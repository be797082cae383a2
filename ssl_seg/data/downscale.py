"""A copy of a 2D images/ + masks/ (+ roi/) folder with every side divided by an integer factor (`ssl-seg downscale`).

A network with a fixed patch sees more of each image in a downscaled copy: on HC18 (512 x 346 px) a 128 px patch of
the half-size copy covers what a 256 px patch covers at full size, at a quarter of the compute. Images are resampled
with LANCZOS, masks and ROIs with NEAREST (class indices stay integers); file names and classes.json are kept, so
`--group-by` and the split are unchanged. Scores of runs on the copy are in its pixels (HD95 in copy px);
`downscale_image` lets `predict` and `evaluate --downscale N` feed such a run full-size images.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..errors import UserError
from .mask_scheme import CLASSES_FILE
from .folder import FolderSource

RESAMPLING = {"images": Image.LANCZOS, "masks": Image.NEAREST, "roi": Image.NEAREST}


def downscaled_size(width: int, height: int, factor: int) -> tuple[int, int]:
    """(width, height) of an image divided by `factor` as the copy stores it (floor, at least 1 px)."""
    return max(1, width // factor), max(1, height // factor)


def downscale_image(image: np.ndarray, factor: int) -> np.ndarray:
    """(C, H, W) image in [0, 1] -> (C, H // factor, W // factor), LANCZOS per channel as the copy resamples it.

    A channel on the 8-bit grid (an 8-bit file as read) goes through PIL's 8-bit resampling, which rounds and clips
    between its two passes, so the network sees the copy's pixels exactly; other channels are resampled in float.
    """
    if factor == 1:
        return image
    size = downscaled_size(image.shape[2], image.shape[1], factor)
    channels = []
    for channel in np.asarray(image, np.float32):
        levels = np.rint(channel * 255)
        if np.allclose(levels, channel * 255, rtol=0, atol=1e-3):
            small = Image.fromarray(levels.astype(np.uint8)).resize(size, Image.LANCZOS)
            channels.append(np.asarray(small, np.float32) / 255.0)
        else:
            channels.append(np.asarray(Image.fromarray(channel).resize(size, Image.LANCZOS), np.float32))
    return np.stack(channels)


def downscale_folder(src: str | Path, dst: str | Path, factor: int) -> int:
    """Write src's pairs downscaled by `factor` into dst (which must not exist); return the pair count."""
    src, dst = Path(src), Path(dst)
    if factor < 1:
        raise UserError(f"--factor {factor}: use an integer >= 1")
    if not (src / "images").is_dir():
        raise UserError(f"--data {src}: not a folder with images/ and masks/; `ssl-seg downscale` copies only that "
                        "layout (MSD, HDF5 and phantom data are not supported)")
    if dst.exists():
        raise UserError(f"{dst}: exists; pick a new --out folder (nothing is overwritten)")
    source = FolderSource(src, require_foreground=False)  # checks pairs, sizes and mask values as training reads them
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        for sub in source.files(0):  # images, masks and roi when the folder has one
            (tmp / sub).mkdir()
        for index in tqdm(range(len(source)), desc="downscale"):
            for sub, path in source.files(index).items():
                with Image.open(path) as img:
                    small = img.resize(downscaled_size(img.width, img.height, factor), RESAMPLING[sub])
                    small.save(tmp / sub / path.name, format=img.format)
        if (src / CLASSES_FILE).is_file():
            shutil.copyfile(src / CLASSES_FILE, tmp / CLASSES_FILE)
        os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only our own unfinished copy
    return len(source)
