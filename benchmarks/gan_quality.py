"""GAN benchmark: train pix2pix on the labeled pairs, synthesize, assess quality; and synthesize throughput.

    python benchmarks/gan_quality.py --data phantom:cardiac?n=200&size=64 --labeled-fraction 0.1 \
        --iterations 1500 --n 400 --out runs/bench_gan_cardiac

Prints mask fidelity (segmenter Dice on synthetic vs on real test), FID/KID with the real-vs-real reference,
memorisation flags, TSTR, and synthesize throughput (pairs/s) at --throughput-size px. Every stage resumes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from gan_aug.assess import assess
from gan_aug.config import GanConfig
from gan_aug.synthesize import synthesize
from gan_aug.train import train_gan


def train(cfg: GanConfig) -> float:
    """Train (or resume / reuse) a GAN; returns the wall seconds spent now."""
    t0 = time.time()
    out = Path(cfg.out)
    if not (out / "result.json").is_file():
        train_gan(cfg, resume=(out / "checkpoint.pt").is_file())
    return time.time() - t0


def throughput(data: str, size: int, n: int, root: Path, device: str) -> float:
    """Pairs per second of `synthesize` with a default-width generator at size x size (a 2-step GAN)."""
    cfg = GanConfig(data=data, labeled_fraction=0.1, out=str(root / f"gan_{size}px"), iterations=2,
                    batch_size=2, patch_size=size, device=device, progress=False)
    train(cfg)
    out = root / f"throughput_{size}px"
    t0 = time.time()
    synthesize(cfg.out, n, out, mask_source="deform", batch_size=32, device=device, progress=False, overwrite=True)
    return n / (time.time() - t0)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures and the command that reproduces them."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="phantom:cardiac?n=200&size=64")
    p.add_argument("--labeled-fraction", type=float, default=0.1)
    p.add_argument("--iterations", type=int, default=1500)
    p.add_argument("--patch-size", type=int, default=64)
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--mask-source", default="deform")
    p.add_argument("--assess-iterations", type=int, default=300)
    p.add_argument("--throughput-size", type=int, default=128)
    p.add_argument("--throughput-n", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    root = Path(args.out)

    cfg = GanConfig(data=args.data, labeled_fraction=args.labeled_fraction, out=str(root / "gan"),
                    iterations=args.iterations, patch_size=args.patch_size, device=args.device, progress=False)
    t_train = train(cfg)
    syn_dir = root / f"syn_{args.mask_source}"
    t0 = time.time()
    if not (syn_dir / "manifest.json").is_file():
        synthesize(cfg.out, args.n, syn_dir, mask_source=args.mask_source, device=args.device, progress=False)
    t_syn = time.time() - t0
    t0 = time.time()
    report = assess(syn_dir, device=args.device, iterations=args.assess_iterations, progress=False)
    t_assess = time.time() - t0
    pps = throughput(args.data, args.throughput_size, args.throughput_n, root, args.device)

    fid, tstr, mem = report["fidelity"], report["tstr"], report["memorisation"]
    figures = {"data": args.data, "labeled_fraction": args.labeled_fraction, "gan_iterations": args.iterations,
               "n_synthetic": args.n, "mask_source": args.mask_source, "fidelity": fid,
               "fid": report.get("fid"), "kid": report.get("kid"), "tstr": tstr, "memorisation": {
                   k: v for k, v in mem.items() if k != "flagged"},
               "throughput_pairs_per_s": pps, "throughput_size": args.throughput_size,
               "seconds": {"train_gan": t_train, "synthesize": t_syn, "assess": t_assess}}
    (root / "benchmark.json").write_text(json.dumps(figures, indent=2, default=str))
    print(json.dumps(figures, indent=2, default=str))
    print("reproduce: python benchmarks/gan_quality.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
