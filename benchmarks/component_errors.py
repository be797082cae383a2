"""Where a 2D run's test errors lie for one class: stray components, holes, or the kept component itself.

Predicts the run's test split (best or last checkpoint) and prints per-image means and medians of Dice and HD95 as
predicted, with holes filled, with the largest component kept (LCC), and with both, and how many images have more
than one component or any hole. Answers whether a post-processing step could fix a high HD95.

    python benchmarks/component_errors.py runs/hc18/runs/unet__supervised__f0.05__s0 --cls 1
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from ssl_seg.data.sources import open_source
from ssl_seg.engine.run_models import load_run
from ssl_seg.errors import UserError
from ssl_seg.evaluation.metrics import dice, hd95
from ssl_seg.evaluation.postprocess import largest_component
from ssl_seg.evaluation.scoring import EvalDataset, predict_image


def variants(pred: np.ndarray, cls: int) -> dict[str, np.ndarray]:
    """The prediction as is, with the class's holes filled, with its largest component kept, and with both."""

    def filled(p: np.ndarray) -> np.ndarray:
        return np.where(ndimage.binary_fill_holes(p == cls), cls, p).astype(np.uint8)

    lcc = largest_component(pred, [cls])
    return {"as predicted": pred, "holes filled": filled(pred), "LCC": lcc, "LCC + holes filled": filled(lcc)}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a finished 2D run directory (best.pt, split.json)")
    p.add_argument("--cls", type=int, default=1, help="the class to analyse (default 1)")
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    args = p.parse_args(argv)
    run = Path(args.run)
    torch.set_num_threads(1)
    try:
        model, cfg, _ = load_run(run, args.checkpoint)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    source = open_source(cfg.data.data, 2)
    data = EvalDataset(source, json.loads((run / "split.json").read_text())["test"])
    scores: dict[str, list[tuple[float, float]]] = {}
    several, holes = 0, 0
    for i in range(len(data)):
        item = data[i]
        probs = predict_image(model, item["image"], cfg.data.patch_size, source.num_classes, torch.device("cpu"))
        roi = item["roi"].numpy()
        pred = np.where(roi, probs.argmax(0).numpy(), 0).astype(np.uint8)
        truth = np.where(roi, item["mask"].numpy(), 0).astype(np.uint8)
        several += ndimage.label(pred == args.cls)[1] > 1
        holes += bool((ndimage.binary_fill_holes(pred == args.cls) & (pred != args.cls)).any())
        for name, v in variants(pred, args.cls).items():
            scores.setdefault(name, []).append((dice(v, truth, args.cls), hd95(v, truth, args.cls)))
    print(f"# {run} ({args.checkpoint}), class {args.cls}, {len(data)} test images")
    print(f"# python benchmarks/component_errors.py {args.run} --cls {args.cls} --checkpoint {args.checkpoint}")
    print("| prediction | Dice mean | Dice median | HD95 mean | HD95 median |\n|---|---|---|---|---|")
    for name, rows in scores.items():
        d = [r[0] for r in rows]
        h = [r[1] for r in rows if np.isfinite(r[1])]
        print(f"| {name} | {np.mean(d):.3f} | {statistics.median(d):.3f} | {np.mean(h):.1f} | "
              f"{statistics.median(h):.1f} |")
    print(f"\n{several} of {len(data)} images have more than one component of class {args.cls}; {holes} have holes.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
