"""`ssl-seg` command line: thin wrappers that parse flags, build a config and call the library."""

from __future__ import annotations

import argparse
import errno
import re
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

from .config import RunConfig
from .data.phantom_volumes import VOLUME_TASK as VOLUME_PHANTOM
from .errors import UserError
from .flags import Flag, Parser, apply, given
from .logs import configure_logging
from .run_flags import add_run_flags


def add_train_flags(p: argparse.ArgumentParser) -> list[Flag]:
    """A flag for every RunConfig field plus --config; returns the config flags."""
    flags = add_run_flags(p)
    p.add_argument("--config", help="start from this config.json, then apply the flags")
    return flags


def config_from_args(args: argparse.Namespace, flags: Sequence[Flag]) -> RunConfig:
    """RunConfig from --config (or defaults; with --resume, the run's saved config) overridden by the flags given."""
    if getattr(args, "config", None):
        cfg = RunConfig.load(args.config)
    elif getattr(args, "resume", False) and getattr(args, "out", None) and (Path(args.out) / "config.json").is_file():
        cfg = RunConfig.load(Path(args.out) / "config.json")
    else:
        cfg = RunConfig()
    values = given(args, flags)
    apply(cfg, values)
    if "data.labeled_cases" in values:
        cfg.data.labeled_fraction = None
    cfg.validate()
    return cfg.with_absolute_paths()


def cmd_train(args: argparse.Namespace) -> None:
    from .engine.runner import run_training

    cfg = config_from_args(args, args.config_flags)
    result = run_training(cfg, resume=args.resume)
    when = "the start (--init-from)" if result["best_step"] == -1 else f"step {result['best_step']}"
    print(f"run: {result['run_dir']}  best val Dice {_fmt(result['val_dice'])} at {when} "
          f"({result['best_model']})  {result['wall_time_s']:.0f} s")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .engine.report import evaluate_run, format_metrics_table, metrics_path

    metrics = evaluate_run(args.run, checkpoint=args.checkpoint, split=args.split, data=args.data,
                           device=args.device, spacing=tuple(args.spacing), postprocess=not args.no_postprocess,
                           downscale=args.downscale, volume_by=args.volume_by)
    print(format_metrics_table(metrics))
    print(f"wrote {metrics_path(args.run, args.split, args.checkpoint, args.downscale)}")


def cmd_predict(args: argparse.Namespace) -> None:
    from .engine.predict import predict_folder

    written = predict_folder(args.run, args.input, args.out, checkpoint=args.checkpoint, overlay=args.overlay,
                             device=args.device, postprocess=not args.no_postprocess, downscale=args.downscale)
    print(f"wrote {written} mask(s) to {args.out}")


def _spacing_flag(text: str) -> tuple[float, float, float]:
    """'3,1,1' -> (3.0, 1.0, 1.0): --spacing in mm along (D, H, W)."""
    try:
        spacing = tuple(float(v) for v in text.split(","))
    except ValueError:
        spacing = ()
    if len(spacing) != 3 or not all(v > 0 for v in spacing):
        raise UserError(f"--spacing {text!r} must be three positive numbers in mm, e.g. 3,1,1 (D, H, W)")
    return spacing  # type: ignore[return-value]


def cmd_make_phantoms(args: argparse.Namespace) -> None:
    from .data.h5format import write_source_to_h5
    from .data.phantoms import PhantomSource

    out = Path(args.out)
    if args.task == VOLUME_PHANTOM:
        from .data.nifti_writer import write_phantom_msd

        folder = out / f"phantom_{args.task}"
        spacing = _spacing_flag(args.spacing)
        write_phantom_msd(folder, args.n, (args.depth, args.size, args.size), spacing, args.seed)
        print(f"wrote {args.n} {args.depth}x{args.size}x{args.size} {args.task} volumes "
              f"({args.spacing} mm) as NIfTI to {folder}")
        return
    path = out if out.suffix in (".h5", ".hdf5") else out / f"phantom_{args.task}.h5"
    if path.exists() or path.is_symlink():
        raise UserError(f"{path} already exists; make-phantoms never replaces a file: remove it or choose another "
                        "--out")
    source = PhantomSource(args.task, n=args.n, size=args.size, seed=args.seed)
    write_source_to_h5(source, path, provenance={"generator": source.name, "task": args.task, "n": args.n,
                                                  "size": args.size, "seed": args.seed})
    print(f"wrote {len(source)} {args.size}x{args.size} phantom:{args.task} pairs to {path}")


def cmd_downscale(args: argparse.Namespace) -> None:
    from .data.downscale import downscale_folder

    n = downscale_folder(args.data, args.out, args.factor)
    print(f"wrote {n} image/mask pairs to {args.out} at 1/{args.factor} size (train on it with --data {args.out})")


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _train_args(p: argparse.ArgumentParser) -> None:
    """The flags of `ssl-seg train`."""
    p.set_defaults(config_flags=add_train_flags(p))
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    """The flags of `ssl-seg evaluate`."""
    p.add_argument("--run", required=True, help="RUN_DIR of 'ssl-seg train'")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="best on validation, or the last")
    p.add_argument("--split", default="test", choices=["test", "val", "labeled", "unlabeled", "all"],
                   help="which samples of the run's split to score")
    p.add_argument("--data", help="read the data from here instead of the run's DATA")
    p.add_argument("--spacing", type=float, nargs=2, default=[1.0, 1.0], metavar=("DY", "DX"),
                   help="pixel spacing for HD95/ASD (e.g. mm)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--no-postprocess", action="store_true",
                   help="skip the largest-component filter chosen on validation (scores are then reported without it)")
    p.add_argument("--downscale", type=int, default=1, metavar="N",
                   help="the run trained on an 'ssl-seg downscale --factor N' copy and --data is full size: shrink "
                        "each image by N for the network, score at full size (writes metrics_<split>_downscaleN.json)")
    p.add_argument("--volume-by", metavar="REGEX",
                   help="2D slices of volumes: group 1 of REGEX names the volume, group 2 the slice index; also "
                        "scores per stacked 3D volume (default: the run's --volume-by)")


def _predict_args(p: argparse.ArgumentParser) -> None:
    """The flags of `ssl-seg predict`."""
    p.add_argument("--run", required=True, help="RUN_DIR of 'ssl-seg train'")
    p.add_argument("--input", required=True, help="folder of images (or a folder holding images/)")
    p.add_argument("--out", required=True, help="folder for the predicted masks")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="best on validation, or the last")
    p.add_argument("--overlay", action="store_true", help="also write colour overlays")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--no-postprocess", action="store_true",
                   help="do not apply the largest-component filter chosen on validation by 'ssl-seg evaluate'")
    p.add_argument("--downscale", type=int, default=1, metavar="N",
                   help="the run trained on an 'ssl-seg downscale --factor N' copy and --input is full size: shrink "
                        "each image by N for the network, write its mask at full size")


def _make_phantoms_args(p: argparse.ArgumentParser) -> None:
    """The flags of `ssl-seg make-phantoms`."""
    p.add_argument("--task", default="cardiac", help=f"a 2D phantom task, or {VOLUME_PHANTOM} (3D, NIfTI)")
    p.add_argument("--n", type=int, default=400, help="number of images (2D) or volumes (3D)")
    p.add_argument("--size", type=int, default=128, help="image side (2D) or H = W of each volume (3D)")
    p.add_argument("--depth", type=int, default=24, help=f"slices per volume ({VOLUME_PHANTOM} only)")
    p.add_argument("--spacing", default="3,1,1", help=f"voxel size D,H,W in mm ({VOLUME_PHANTOM} only)")
    p.add_argument("--seed", type=int, default=0, help="seed of the phantom generator")
    p.add_argument("--out", required=True, help="folder (writes phantom_<task>.h5, or the NIfTI folder "
                   f"phantom_{VOLUME_PHANTOM}/) or a .h5 path")


def _downscale_args(p: argparse.ArgumentParser) -> None:
    """The flags of `ssl-seg downscale`."""
    p.add_argument("--data", required=True, help="folder with images/ and masks/ (and optionally roi/)")
    p.add_argument("--out", required=True, help="new folder for the copy (must not exist)")
    p.add_argument("--factor", type=int, default=2, help="divide each side by this integer (default 2)")

    from .experiments.ablation import add_ablate_args, cmd_ablate


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of `ssl-seg`: the commands below, then those other installed packages contribute."""
    from .experiments.ablation import add_ablate_args, cmd_ablate
    from .experiments.sweep import add_sweep_args, cmd_sweep

    parser = Parser(prog="ssl-seg", description="Segmentation with scarce labels.")
    sub = parser.add_subparsers(dest="command", required=True)
    commands = [
        ("train", "train a backbone with a (semi-)supervised method", _train_args, cmd_train),
        ("evaluate", "score a run on a split; writes RUN_DIR/metrics_<split>.json", _evaluate_args, cmd_evaluate),
        ("predict", "write predicted mask PNGs for a folder of images", _predict_args, cmd_predict),
        ("make-phantoms", "write a phantom dataset in the project HDF5 format, or the 3D phantom "
                          f"({VOLUME_PHANTOM}) as an MSD / nnU-Net NIfTI folder", _make_phantoms_args,
         cmd_make_phantoms),
        ("downscale", "copy a 2D images/ + masks/ folder at 1/N size, so a patch holds more of each image (LANCZOS "
                      "images, NEAREST masks, same names)", _downscale_args, cmd_downscale),
        ("ablate", "low-label grid: methods x label fractions x seeds x backbones", add_ablate_args, cmd_ablate),
        ("sweep", "real-vs-synthetic ratio grid: ratios x schedules x fractions x methods x seeds", add_sweep_args,
         cmd_sweep),
    ]
    for name, help_text, add_args, func in commands:
        p = sub.add_parser(name, help=help_text)
        add_args(p)
        p.set_defaults(func=func)
    for entry in entry_points(group="ssl_seg.commands"):  # e.g. `study`, contributed by gan_aug
        try:
            register = entry.load()
        except ImportError:  # the contributing package is not importable here: its commands are absent
            continue
        register(sub)
    return parser


_OS_HINTS = {
    errno.ENOSPC: "the disk is full; files finished before are intact (every write is atomic): free space, then "
                  "rerun (train: add --resume)",
    errno.EDQUOT: "the disk quota is used up; files finished before are intact: free space, then rerun",
    errno.EFBIG: "the file is larger than this system allows; files finished before are intact",
    errno.EACCES: "write somewhere else (--out) or fix the folder's permissions",
    errno.EPERM: "write somewhere else (--out) or fix the folder's permissions",
    errno.EROFS: "the file system is read-only; choose another --out",
    errno.EEXIST: "a file is in the way; choose another --out or move the file",
    errno.ENOTDIR: "a file is in the way of a folder; choose another --out or move the file",
    errno.EISDIR: "a folder is in the way of a file; choose another --out",
}


def os_error_message(e: OSError) -> str:
    """One line for an OSError: the path, what the system said, and the fix."""
    where = f"{e.filename}: " if e.filename else ""
    hint = _OS_HINTS.get(e.errno, "check the path and the disk")
    return f"{where}{e.strerror or e} ({hint})"


def available_memory_gib() -> float | None:
    """MemAvailable of /proc/meminfo in GiB (None where the system does not say)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_error_message(e: BaseException) -> str | None:
    """One line for an allocation the machine refused (numpy, torch CPU or CUDA), or None for other errors."""
    text = str(e)
    cuda = "CUDA out of memory" in text or type(e).__name__ == "OutOfMemoryError"
    if not (isinstance(e, MemoryError) or cuda or "can't allocate memory" in text):
        return None
    asked = re.search(r"allocate (\d+) bytes", text) or re.search(r"allocate ([\d.]+ \w+)", text)
    size = (f"{int(asked[1]) / 2**30:.1f} GiB" if asked[1].isdigit() else asked[1].replace(". ", " ")) if asked \
        else "more than there is"
    free = available_memory_gib()
    where = "the GPU" if cuda else (f"this machine ({free:.1f} GiB available now)" if free is not None else "this machine")
    return (f"out of memory: {where} refused an allocation of {size}; lower the size that sets it (the phantom "
            "size or n, --patch-size, --batch-size, --base-channels, --n-down, --val-max-samples) and rerun")


def run_command(args: argparse.Namespace) -> int:
    """Call the parsed subcommand, its messages shown; a user error prints one line `error: ...`, exit code 2."""
    configure_logging()
    try:
        args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system refused an output: full, read-only, a file in the way
        print(f"error: {os_error_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: checkpoints written so far are intact; rerun with --resume to continue",
              file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as e:
        message = memory_error_message(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


def parse_and_run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse `argv` and call its subcommand; a bad flag or value prints one line `error: ...` and gives exit code 2."""
    try:
        args = parser.parse_args(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return run_command(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `ssl-seg`."""
    return parse_and_run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
