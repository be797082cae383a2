"""Write a copy of a 2D `images/` + `masks/` folder with every side divided by an integer factor.

A network with a fixed patch sees more of each image in a downscaled copy: on HC18 (512 x 346 px) a 128 px
patch of the half-size copy covers what a 256 px patch covers at full size, at a quarter of the compute. Images
are resampled with LANCZOS, masks with NEAREST (class indices stay integers); file names are kept, so
`--group-by` and the split are unchanged. Scores of runs on the copy are in its pixels (HD95 in copy px).

    python benchmarks/downscale_2d.py ../shared/data/hc18_fetal_head runs/hc18_half --factor 2
"""

import argparse
import sys
from pathlib import Path

from PIL import Image

from ssl_seg.io_utils import atomic_path


class InputError(Exception):
    """A bad folder or flag, reported as one line (exit 2)."""


def downscale_folder(src: Path, dst: Path, factor: int) -> int:
    """Write src/{images,masks}/* downscaled by `factor` into dst (which must not exist yet); return the pair count."""
    if not (src / "images").is_dir() or not (src / "masks").is_dir():
        raise InputError(f"{src}: needs images/ and masks/ folders")
    pairs = sorted(p for p in (src / "images").iterdir() if not p.name.startswith("."))
    missing = [src / "masks" / p.name for p in pairs if not (src / "masks" / p.name).is_file()]
    if not pairs or missing:
        raise InputError(f"{missing[0] if missing else src / 'images'}: missing; every image needs a mask of the "
                         "same name in masks/")
    if dst.exists():
        raise InputError(f"{dst}: exists; pick a new output folder (nothing is overwritten)")
    for sub in ("images", "masks"):
        (dst / sub).mkdir(parents=True)
    for image_path in pairs:
        mask_path = src / "masks" / image_path.name
        for path, sub, method in ((image_path, "images", Image.LANCZOS), (mask_path, "masks", Image.NEAREST)):
            try:
                with Image.open(path) as img:
                    small = img.resize((max(1, img.width // factor), max(1, img.height // factor)), method)
            except OSError as err:  # PIL's UnidentifiedImageError and truncated files
                raise InputError(f"{path}: not a readable image ({err}); replace or remove it") from None
            with atomic_path(dst / sub / path.name) as tmp:
                small.save(tmp, format="PNG")
    return len(pairs)


def main(argv: list[str] | None = None) -> int:
    """Command line: SRC DST --factor N; 0 on success, 2 with one message for bad input."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    parser.add_argument("--factor", type=int, default=2, help="divide each side by this integer (default 2)")
    args = parser.parse_args(argv)
    try:
        if args.factor < 1:
            raise InputError(f"--factor {args.factor}: use an integer >= 1")
        n = downscale_folder(args.src, args.dst, args.factor)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{n} image/mask pairs written to {args.dst} at 1/{args.factor} size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
