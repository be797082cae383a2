"""Parameter count and training-step time of every backbone beside the package's U-Net at the same patch.

Each backbone's step (`Trainer.train_step` of `--method`, as `ssl-seg train` runs it on the CPU, float32) is timed in
ONE process next to the U-Net's step on the same batch: both warm up, then alternating segments of `--steps` steps;
the ratio is backbone time / U-Net time summed over the segments (the spread over segments is printed too). On a
shared machine only the ratios mean something; the U-Net's seconds per step are printed for scale.

    OMP_NUM_THREADS=1 python benchmarks/backbone_cost.py                       # 2D 64 px and 3D 32^3, supervised
    OMP_NUM_THREADS=1 python benchmarks/backbone_cost.py --method unimatch --dims 2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/backbone_cost.py` from the root
from benchmarks.speed import method_step, side_by_side  # noqa: E402
from ssl_seg.errors import UserError  # noqa: E402
from ssl_seg.models import build_model, model_names, volumetric_model_names  # noqa: E402

# a width other than --base where a backbone needs one (SwinUNETR: a multiple of 12)
BASE = {"monai:swinunetr": 12}


def parameters(name: str, base: int, size: int, spatial_dims: int) -> int:
    """Trainable parameters of backbone `name` for 1 channel in, 4 classes out."""
    model = build_model(name, 1, 4, base_channels=base, spatial_dims=spatial_dims, patch_size=size)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="supervised")
    p.add_argument("--dims", type=int, nargs="+", default=[2, 3], choices=(2, 3))
    p.add_argument("--size2d", type=int, default=64)
    p.add_argument("--size3d", type=int, default=32)
    p.add_argument("--batch2d", type=int, default=8)
    p.add_argument("--batch3d", type=int, default=2)
    p.add_argument("--base", type=int, default=16)
    p.add_argument("--segments", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"commit {commit}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), method {args.method}")
    print("| dims | patch | batch | backbone | base | parameters | x U-Net params | step / U-Net step | spread |"
          " U-Net s/step |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for dims in args.dims:
        size, batch = (args.size2d, args.batch2d) if dims == 2 else (args.size3d, args.batch3d)
        names = model_names() if dims == 2 else volumetric_model_names()
        unet_params = parameters("unet", args.base, size, dims)
        labeled, unlabeled = batch, (batch if args.method != "supervised" else 0)
        reference = method_step(args.method, size, args.base, labeled, unlabeled, 0, "off", spatial_dims=dims)
        for name in names:  # the U-Net beside itself too: its ratio shows the noise of the timing
            base = BASE.get(name, args.base)
            try:
                n = parameters(name, base, size, dims)
            except UserError as e:  # e.g. SwinUNETR below 64 px
                print(f"| {dims}D | {size} | {batch} | {name} | {base} | not built: {e} | | | | |")
                continue
            step = method_step(args.method, size, base, labeled, unlabeled, 0, "off", spatial_dims=dims,
                               backbone=name)
            ratio, spread, seconds = side_by_side(step, reference, args.warmup, args.segments, args.steps)
            print(f"| {dims}D | {size} | {batch} | {name} | {base} | {n / 1e6:.2f} M | {n / unet_params:.2f} |"
                  f" {ratio:.2f} | {min(spread):.2f}-{max(spread):.2f} | {seconds:.3f} |", flush=True)
    print(f"command: OMP_NUM_THREADS={torch.get_num_threads()} python benchmarks/backbone_cost.py "
          f"--method {args.method} --dims {' '.join(map(str, args.dims))}")


if __name__ == "__main__":
    main()
