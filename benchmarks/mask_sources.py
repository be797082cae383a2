"""Mask realism of the mask sources: classifier two-sample test (leave-one-out 1-NN on shape features) between
each source's masks, built from the labeled masks of split 0, and real masks the sources never saw (the
split's val + test masks, random crops). 0.5 = indistinguishable, 1.0 = always told apart.

    python benchmarks/mask_sources.py --data phantom:cardiac?n=120&size=64 --size 64
    python benchmarks/mask_sources.py --data ../shared/data/hc18_fetal_head --group-by '^([0-9]+)_' --size 128

Prints one row per source: mean +- std of the accuracy over --seeds draws, n masks per side.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import numpy as np

from gan_aug.mask_realism import c2st_accuracy, mask_features
from gan_aug.data import random_crop
from gan_aug.masks import build_mask_source, load_masks
from ssl_seg.data.sources import open_source
from ssl_seg.data.splits import make_split
from ssl_seg.experiments.stats import fmt_mean_std


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--group-by")
    p.add_argument("--labeled-fraction", type=float, default=0.1)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--n", type=int, default=100, help="masks per side, at most the held-out masks")
    p.add_argument("--sources", nargs="+", default=["labeled", "deform", "mix", "shape", "phantom"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = p.parse_args(argv)
    source = open_source(args.data)
    split = make_split(source, seed=0, group_by=args.group_by, labeled_fraction=args.labeled_fraction)
    labeled = load_masks(source, split.labeled)
    held_out = load_masks(source, split.val + split.test)
    k = source.num_classes
    print(f"$ python {' '.join(shlex.quote(a) for a in sys.argv)}")
    print(f"{source.name}: {len(labeled)} labeled masks, {len(held_out)} held-out masks, {args.size} px, "
          f"{min(args.n, len(held_out))} masks per side, seeds {args.seeds}")
    print("| source | C2ST 1-NN accuracy (0.5 = realistic) | s |\n|---|---|---|")
    for name in args.sources:
        if name == "phantom" and not args.data.startswith("phantom:"):
            continue
        accs, t0 = [], time.time()
        for seed in args.seeds:
            rng = np.random.default_rng([seed, 7])
            # each held-out mask once (a duplicate would be its own nearest neighbour), as many generated masks
            picks = rng.permutation(len(held_out))[:args.n]
            real = np.stack([mask_features(random_crop(held_out[i], args.size, rng), k) for i in picks])
            if name == "labeled":  # crops of the few labeled masks, repeated: no new masks at all
                masks = [random_crop(labeled[int(rng.integers(len(labeled)))], args.size, rng) for _ in picks]
            else:
                it = iter(build_mask_source(name, data=args.data, num_classes=k, size=args.size, seed=seed,
                                            masks=labeled))
                masks = [next(it) for _ in picks]
            accs.append(c2st_accuracy(real, np.stack([mask_features(m, k) for m in masks])))
        label = f"{name} (oracle)" if name == "phantom" else name
        print(f"| {label} | {fmt_mean_std(accs)} | {time.time() - t0:.0f} |")


if __name__ == "__main__":
    main()
