"""Through-plane consistency of slice-wise synthetic volumes: a 2D pix2pix trained on the slices of a volume set
generates each validation volume from its real mask, slice by slice, with several shares of noise common to the
slices; each is scored against the real volumes with adjacent-slice statistics, and timed per volume.

    python benchmarks/volume_gan.py --data 'phantom:lesion_volume?n=40&size=32' --iterations 1500
    python benchmarks/volume_gan.py --data ../shared/data/hippocampus3d --labeled-fraction 0.1 --iterations 1500

Rows: `real` (the validation volumes of the GAN's split), `share S` (gan_aug.volumes.generate_volume, what
`synthesize --format nifti --slice-noise-share S` does: a share S of the dropout noise is common to all slices of
a volume, the rest drawn per slice; 0 = independent slices), `share 0 + z-smooth` (independent, then a Gaussian of
1 slice along D); then the share `--slice-noise-share auto` (the default) picks. Scores, per volume then mean +- std
over the validation volumes: through-plane MAD = mean |I[z+1] - I[z]| over voxels whose class is the same in
both slices (anatomy changes excluded), in-plane MAD the same along H (how smooth the images are within a slice),
their ratio (through-plane incoherence relative to the image's own texture), corr = mean Pearson correlation of
adjacent slices, L1 = mean |generated - real|.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from gan_aug.checkpoint import load_gan_checkpoint, load_generator
from gan_aug.config import GanConfig
from gan_aug.data import gan_source, gan_split
from gan_aug.train import train_gan
from gan_aug.volumes import adjacent_correlation, fit_noise_share, generate_volume, validation_volumes
from ssl_seg.experiments.stats import fmt_mean_std


def same_class_mad(image: np.ndarray, mask: np.ndarray, axis: int) -> float:
    """Mean |difference| of neighbouring voxels along `axis` of image (D, H, W) where both have the same class."""
    n = image.shape[axis]
    a, b = (np.take(x, range(1, n), axis) for x in (image, mask))
    c, d = (np.take(x, range(n - 1), axis) for x in (image, mask))
    return float(np.abs(a - c)[b == d].mean())


def adjacent_scores(image: np.ndarray, mask: np.ndarray) -> tuple[float, float, float]:
    """(same-class MAD of adjacent slices, same-class MAD of in-plane neighbours along H, mean Pearson r of
    adjacent slices) of image (D, H, W)."""
    return same_class_mad(image, mask, 0), same_class_mad(image, mask, 1), adjacent_correlation(image)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="phantom:lesion_volume?n=40&size=32")
    p.add_argument("--iterations", type=int, default=1500)
    p.add_argument("--labeled-fraction", type=float, default=1.0, help="of the split's train cases, for the GAN")
    p.add_argument("--ngf", type=int, default=16)
    p.add_argument("--patch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-volumes", type=int, default=10, help="validation volumes scored, at most")
    p.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.5, 0.8, 0.9, 1.0],
                   help="--slice-noise-share values compared (0 must be among them)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"$ python {' '.join(shlex.quote(a) for a in sys.argv)}")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = GanConfig(data=args.data, spatial_dims=3, labeled_fraction=args.labeled_fraction,
                        out=str(Path(tmp) / "gan"), iterations=args.iterations, batch_size=8,
                        patch_size=args.patch_size, ngf=args.ngf, ndf=args.ngf, seed=args.seed, device="cpu",
                        progress=False, log_every=args.iterations, image_every=args.iterations,
                        val_every=args.iterations, checkpoint_every=args.iterations)
        t0 = time.perf_counter()
        result = train_gan(cfg)
        train_s = time.perf_counter() - t0
        ckpt = load_gan_checkpoint(Path(tmp) / "gan", "cpu")
    generator = load_generator(ckpt, torch.device("cpu"))
    source = gan_source(cfg)
    held_out = gan_split(cfg, source).val[:args.max_volumes]
    k = source.num_classes
    print(f"{source.name}: 2D pix2pix (ngf {args.ngf}) on the slices of {result['n_labeled']} volumes, "
          f"{args.iterations} steps, {train_s:.0f} s; {len(held_out)} validation volumes")
    rows: dict[str, list[tuple[float, ...]]] = {}
    seconds: dict[str, list[float]] = {}
    for i, case in enumerate(held_out):
        sample = source.load(source.index_of(case))
        real = sample.image[0]
        variants = {"real": (real, 0.0)}
        for share in args.shares:
            t0 = time.perf_counter()
            image = generate_volume(generator, sample.mask, k, share, i, 64, torch.device("cpu"), None, False)[0]
            variants[f"share {share:g}"] = (image, time.perf_counter() - t0)
        t0 = time.perf_counter()
        smooth = ndimage.gaussian_filter1d(variants["share 0"][0], 1.0, axis=0)
        variants["share 0 + z-smooth"] = (smooth, variants["share 0"][1] + time.perf_counter() - t0)
        for name, (image, s) in variants.items():
            rows.setdefault(name, []).append((*adjacent_scores(image, sample.mask),
                                              float(np.abs(image - real).mean())))
            seconds.setdefault(name, []).append(s)
    print(f"| volumes (n={len(held_out)} each) | MAD adjacent slices (through-plane) | MAD in-plane neighbours | "
          "ratio through / in-plane | corr adjacent slices | L1 to the real volume | ms per volume |\n"
          "|---|---|---|---|---|---|---|")
    for name, values in rows.items():
        v = np.array(values)
        ms = "-" if name == "real" else f"{1000 * np.mean(seconds[name]):.0f}"
        print(f"| {name} | {fmt_mean_std(v[:, 0], False)} | {fmt_mean_std(v[:, 1], False)} | "
              f"{fmt_mean_std(v[:, 0] / v[:, 1], False)} | {fmt_mean_std(v[:, 2], False)} | "
              f"{fmt_mean_std(v[:, 3], False)} | {ms} |")
    t0 = time.perf_counter()
    fit = fit_noise_share(generator, validation_volumes(cfg), k, 64, torch.device("cpu"), None, False)
    print(f"--slice-noise-share auto (what synthesize does, on the first {len(validation_volumes(cfg))} of these "
          f"volumes): share {fit['share']:g}, real adjacent-slice correlation {fit['real_adjacent_corr']:.3f}, "
          f"generated {', '.join(f'{s}: {c:.3f}' for s, c in fit['generated_adjacent_corr'].items())}; "
          f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
