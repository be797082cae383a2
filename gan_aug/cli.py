"""`gan-aug` command line: train a mask-to-image GAN, synthesize paired datasets, assess them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ssl_seg.cli import parse_and_run
from ssl_seg.config import absolute_data
from ssl_seg.errors import UserError
from ssl_seg.flags import Parser, add_config_flags, given

from .config import GanConfig


def registry_choices() -> dict[str, list[str]]:
    """Valid names of the GanConfig fields chosen from a registry (shown in --help, checked on parse)."""
    from .networks import DISCRIMINATORS, GENERATORS, NORMS
    from .pix2pix import GAN_LOSSES

    return {"generator": list(GENERATORS), "discriminator": list(DISCRIMINATORS), "norm": list(NORMS),
            "gan_loss": list(GAN_LOSSES)}


def train_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """GanConfig fields the command line set (flags not given are absent)."""
    overrides = given(args, args.config_flags)
    if overrides.get("labeled_cases") is not None:
        overrides["labeled_fraction"] = None
    return overrides


def cmd_train(args: argparse.Namespace) -> None:
    from .train import train_gan

    overrides = train_overrides(args)
    if "out" not in overrides:
        raise UserError("gan-aug train needs --out GAN_DIR")
    for key in ("data", "split_file", "pseudo_labels"):
        if overrides.get(key):
            overrides[key] = absolute_data(overrides[key])
    if args.resume:
        saved = GanConfig.load(Path(overrides["out"]) / "config.json").with_absolute_paths()
        cfg = saved.resumed_with(overrides)
    else:
        if "data" not in overrides:
            raise UserError("gan-aug train needs --data DATA (a folder, .h5 file or phantom:<task>)")
        cfg = GanConfig(**overrides)
    result = train_gan(cfg, resume=args.resume)
    labeled = "volumes (their slices are the pairs)" if cfg.spatial_dims == 3 else "pairs"
    print(f"GAN run: {result['gan_dir']}  {result['n_labeled']} labeled {labeled}, {result['iterations']} steps, "
          f"val L1 {_fmt(result['val_l1'])}, {result['wall_time_s']:.0f} s")


def cmd_synthesize(args: argparse.Namespace) -> None:
    from .synthesize import synthesize

    m = synthesize(args.checkpoint, args.n, args.out, mask_source=args.mask_source, seed=args.seed, fmt=args.format,
                   batch_size=args.batch_size, device=args.device, amp=args.amp, mask_data=args.mask_data,
                   overwrite=args.overwrite, progress=not args.no_progress,
                   slice_noise_share=args.slice_noise_share, filter_run=args.filter_run,
                   filter_dice=args.filter_dice, filter_quantile=args.filter_quantile,
                   sample_steps=args.sample_steps)
    what = "volumes" if args.format == "nifti" else f"{m['image_size'][0]}x{m['image_size'][1]} pairs"
    kept = m.get("quality_filter")
    filtered = f"  (filter kept {kept['kept']} of {kept['scored']}, Dice >= {kept['threshold']:.3f})" if kept else ""
    print(f"wrote {m['n']} {what} ({args.format}) to {args.out}  "
          f"{m['throughput_pairs_per_s']:.1f} {what.split()[-1]}/s on {m['device']}{filtered}")


def cmd_assess(args: argparse.Namespace) -> None:
    from .assess import assess

    report = assess(args.synthetic, data=args.data, segmenter=args.segmenter, out=args.out, device=args.device,
                    iterations=args.iterations, max_samples=args.max_samples, seed=args.seed,
                    progress=not args.no_progress)
    f, d, t = report["fidelity"], report["fid"], report["tstr"]
    print(f"mask fidelity Dice {_fmt(f['synthetic_dice'])} (real test {_fmt(f['real_dice'])})  "
          f"FID {_fmt(d['synthetic_vs_real'])} (real/real {_fmt(d['real_vs_real'])})  "
          f"near-copies {report['memorisation']['near_copies']}  TSTR/TRTR {_fmt(t['ratio'])}  "
          f"-> {Path(report['out']) / 'quality.json'}")


def cmd_diagnose(args: argparse.Namespace) -> None:
    from .diagnose import diagnose

    r = diagnose(args.synthetic, data=args.data, out=args.out, max_samples=args.max_samples, seed=args.seed)

    def sides(key: str) -> str:
        return f"{r[key]['real']:.3g} / {r[key]['synthetic']:.3g}"

    w1 = ", ".join(f"{name} {row.get('wasserstein', float('nan')):.3g}"
                   for name, row in r["intensity_per_class"].items())
    print(f"real / synthetic: boundary sharpness {sides('boundary_sharpness')}, flat blocks "
          f"{sides('flat_block_share')}, high-frequency share {sides('high_frequency_share')}; intensity W1 per "
          f"class: {w1}; noise-like images {r['noise_like_images']['synthetic_share']:.3g} (1 % expected)  "
          f"-> {Path(r['out']) / 'diagnosis.json'}")


def noise_share(text: str) -> float | str:
    """--slice-noise-share: 'auto' or a number in [0, 1]."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: use auto or a share in [0, 1]")
    return value


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.4g}"


def _train_args(p: argparse.ArgumentParser) -> None:
    """The flags of `gan-aug train`."""
    p.set_defaults(config_flags=add_config_flags(p, GanConfig, choices=registry_choices(),
                                                   notes={"data": "required unless --resume",
                                                          "out": "required"}))
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint.pt")


def _synthesize_args(p: argparse.ArgumentParser) -> None:
    """The flags of `gan-aug synthesize`."""
    from .masks import DEFAULT_MASK_SOURCE, MASK_SOURCES
    from .synthesize import FORMATS
    from .volumes import SLICE_NOISE_SHARE

    p.add_argument("--checkpoint", required=True, help="GAN_DIR of 'gan-aug train' (or its checkpoint.pt)")
    p.add_argument("--n", type=int, required=True, help="number of pairs")
    p.add_argument("--out", required=True, help="SYN_DIR to create (atomically)")
    p.add_argument("--mask-source", default=DEFAULT_MASK_SOURCE, choices=MASK_SOURCES, metavar="SOURCE",
                   help="deform, mix and shape make new masks from the labeled ones; "
                   "phantom is an oracle (draws from the phantom test set's own generator; an upper bound, never a "
                   "result)")
    p.add_argument("--mask-data", help="take masks from this DATA instead of the GAN's labeled training masks")
    p.add_argument("--seed", type=int, default=0, help="seed of the masks and the generator's dropout noise")
    p.add_argument("--format", default="hdf5", choices=FORMATS, help="hdf5 (SYN_DIR/synthetic.h5) | png (images/ + "
                   "masks/) | nifti (volumes, for a GAN trained with --spatial-dims 3: an MSD folder, dataset.json + "
                   "imagesTr/ + labelsTr/, that ssl-seg train --spatial-dims 3 --synthetic reads)")
    p.add_argument("--batch-size", type=int, default=32, help="pairs (of volumes: slices) generated per chunk")
    p.add_argument("--slice-noise-share", type=noise_share, default=SLICE_NOISE_SHARE, metavar="auto|S",
                   help="--format nifti: share of the generator's noise common to all slices of a volume (1: one "
                   "noise draw per volume, 0: independent slices; auto: the share whose volumes match the adjacent-"
                   "slice correlation of the GAN's validation volumes; see benchmarks/RESULTS.md, synthetic volumes)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--amp", default="auto",
                   help="auto (bf16 on CPUs with native bf16, else as on CUDA) | bf16 | fp16 | off")
    p.add_argument("--filter-run", metavar="RUN_DIR",
                   help="quality filter: keep a pair only when this trained segmenter ('ssl-seg train' on the real "
                   "labeled images) recovers its mask; generates until --n pairs pass (at most 20x --n tries)")
    p.add_argument("--filter-dice", type=float, metavar="D",
                   help="the filter's Dice threshold; default: chosen on validation (--filter-quantile)")
    p.add_argument("--filter-quantile", type=float, default=0.1, metavar="Q",
                   help="threshold = this quantile of the segmenter's per-image Dice on its validation images "
                   "(default 0.1: a kept pair is recovered as well as 90 % of real validation images)")
    p.add_argument("--sample-steps", type=int, metavar="N",
                   help="a diffusion generator's DDIM steps (default: its --sample-steps at training); fewer is faster")
    p.add_argument("--overwrite", action="store_true", help="replace an existing SYN_DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _assess_args(p: argparse.ArgumentParser) -> None:
    """The flags of `gan-aug assess`."""
    p.add_argument("--synthetic", required=True, help="SYN_DIR of 'gan-aug synthesize'")
    p.add_argument("--data", help="the real DATA (default: the data the GAN was trained on)")
    p.add_argument("--segmenter", help="RUN_DIR of 'ssl-seg train' on the real data (default: train a small one)")
    p.add_argument("--out", help="report folder (default: SYN_DIR/quality)")
    p.add_argument("--iterations", type=int, default=300, help="steps of the small segmenters trained here")
    p.add_argument("--max-samples", type=int, default=256, help="at most this many images per feature set")
    p.add_argument("--seed", type=int, default=0, help="seed of the small segmenters, the image subsample and KID")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _diagnose_args(p: argparse.ArgumentParser) -> None:
    """The flags of `gan-aug diagnose`."""
    p.add_argument("--synthetic", required=True, help="SYN_DIR of 'gan-aug synthesize' (2D pairs)")
    p.add_argument("--data", help="the real DATA (default: the data the generator was trained on)")
    p.add_argument("--out", help="report folder (default: SYN_DIR/diagnosis)")
    p.add_argument("--max-samples", type=int, default=256, help="synthetic pairs compared, and as many real crops")
    p.add_argument("--seed", type=int, default=0, help="seed of the real crops")


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of `gan-aug`."""
    parser = Parser(prog="gan-aug", description="Conditional GAN (mask -> image) augmentation.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text, add_args, func in [
        ("train", "train a mask-to-image generator (pix2pix GAN or diffusion) on the labeled pairs of a split",
         _train_args, cmd_train),
        ("synthesize", "write N synthetic (mask, image) pairs", _synthesize_args, cmd_synthesize),
        ("assess", "score a synthetic dataset: fidelity, FID/KID, memorisation, TSTR", _assess_args, cmd_assess),
        ("diagnose", "where generated images differ from real ones: intensity per class, spectrum, edges, flat "
         "blocks", _diagnose_args, cmd_diagnose),
    ]:
        p = sub.add_parser(name, help=help_text)
        add_args(p)
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `gan-aug`: user errors print one line `error: ...` to stderr and return 2."""
    return parse_and_run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
