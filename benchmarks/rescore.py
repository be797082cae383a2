"""Re-score every finished run of a grid on test (best and last checkpoints) with the current evaluation.

Used for grids trained before the post-processing choice existed: each run gets the largest-component filter chosen
on its validation split and its test scores with and without it; result.json's `test`/`test_last` are replaced and
the summaries rewritten. Training is untouched.

    python benchmarks/rescore.py runs/bench/hippo_realistic --title "Hippocampus slices, realistic profile"
"""

import argparse
import json
import sys
from pathlib import Path

from ssl_seg.experiments.ablation import write_summary
from ssl_seg.experiments.grid import collect, test_summary
from ssl_seg.io_utils import atomic_write_json
from ssl_seg.engine.report import evaluate_run


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", help="grid directory (runs/<name>/result.json)")
    p.add_argument("--title", default="Low-label ablation")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    root = Path(args.root)
    for result in collect(root):
        run_dir = root / "runs" / result["name"]
        if "postprocessed" in result["test"] and "postprocessed" in result.get("test_last", {}):
            continue
        for key, checkpoint in (("test", "best"), ("test_last", "last")):
            result[key] = test_summary(evaluate_run(run_dir, checkpoint=checkpoint, split="test", device=args.device))
        atomic_write_json(run_dir / "result.json", result)
        post = result["test"]["postprocessed"]
        print(f"{result['name']}: LCC classes {post['lcc_classes']}, test Dice {result['test']['dice']:.4f} -> "
              f"{post['dice']:.4f}", json.dumps({k: result["test"].get("volume", {}).get(k) for k in ("dice", "hd95")}))
    rows = write_summary(root, args.title)
    print(f"{len(rows)} runs summarised in {root / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
