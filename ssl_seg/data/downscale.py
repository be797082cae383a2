"""A copy of a 2D images/ + masks/ (+ roi/) folder with every side divided by an integer factor (`ssl-seg downscale`).

A network with a fixed patch sees more of each image in a downscaled copy: on HC18 (512 x 346 px) a 128 px patch of
the half-size copy covers what a 256 px patch covers at full size, at a quarter of the compute. Images are resampled
with LANCZOS, masks and ROIs with NEAREST (class indices stay integers); file names and classes.json are kept, so
`--group-by` and the split are unchanged. Scores of runs on the copy are in its pixels (HD95 in copy px).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from ..errors import UserError
from .mask_scheme import CLASSES_FILE
from .readers import FolderSource

RESAMPLING = {"images": Image.LANCZOS, "masks": Image.NEAREST, "roi": Image.NEAREST}


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
    source = FolderSource(src)  # checks pairs, sizes and mask values as training reads them
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        for sub in source.files(0):  # images, masks and roi when the folder has one
            (tmp / sub).mkdir()
        for index in tqdm(range(len(source)), desc="downscale"):
            for sub, path in source.files(index).items():
                with Image.open(path) as img:
                    small = img.resize((max(1, img.width // factor), max(1, img.height // factor)), RESAMPLING[sub])
                    small.save(tmp / sub / path.name, format=img.format)
        if (src / CLASSES_FILE).is_file():
            shutil.copyfile(src / CLASSES_FILE, tmp / CLASSES_FILE)
        os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only our own unfinished copy
    return len(source)
