"""Write a copy of a 2D `images/` + `masks/` folder with every side divided by an integer factor.

A network with a fixed patch sees more of each image in a downscaled copy: on HC18 (512 x 346 px) a 128 px
patch of the half-size copy covers what a 256 px patch covers at full size, at a quarter of the compute. Images
are resampled with LANCZOS, masks with NEAREST (class indices stay integers); file names are kept, so
`--group-by` and the split are unchanged. Scores of runs on the copy are in its pixels (HD95 in copy px).
The source is checked as `ssl-seg` reads it (pairs, sizes, mask values); the copy appears only when complete.

    python benchmarks/downscale_2d.py ../shared/data/hc18_fetal_head runs/hc18_half --factor 2
"""

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from PIL import Image

from ssl_seg.data.readers import FolderSource
from ssl_seg.errors import UserError


def downscale_folder(src: Path, dst: Path, factor: int) -> int:
    """Write src's image/mask pairs downscaled by `factor` into dst (which must not exist yet); return the pair count."""
    if factor < 1:
        raise UserError(f"--factor {factor}: use an integer >= 1")
    if dst.exists():
        raise UserError(f"{dst}: exists; pick a new output folder (nothing is overwritten)")
    source = FolderSource(src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    try:
        for sub in ("images", "masks"):
            (tmp / sub).mkdir()
        for index in range(len(source)):
            for path, sub, method in zip(source.files(index), ("images", "masks"), (Image.LANCZOS, Image.NEAREST)):
                with Image.open(path) as img:
                    small = img.resize((max(1, img.width // factor), max(1, img.height // factor)), method)
                    small.save(tmp / sub / path.name, format=img.format)
        os.replace(tmp, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only our own unfinished copy
    return len(source)


def main(argv: list[str] | None = None) -> int:
    """Command line: SRC DST --factor N; 0 on success, 2 with one message for bad input."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--factor", type=int, default=2, help="divide each side by this integer (default 2)")
    args = parser.parse_args(argv)
    try:
        n = downscale_folder(args.src, args.dst, args.factor)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{n} image/mask pairs written to {args.dst} at 1/{args.factor} size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
