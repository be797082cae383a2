"""Score runs trained on an `ssl-seg downscale` copy on the full-size images it was made from, beside their copy scores.

For every finished run of the grids, the best and the last checkpoint are scored on the run's test split of --data
(`evaluate --downscale N`: each image shrunk by N for the network, probabilities upsampled, scored at full size with
the largest-component filter the run chose on validation) and printed beside the test scores the run recorded on
the copy. Scores already written (RUN_DIR/metrics_test[_last]_downscaleN.json) are read back, not recomputed.

    python benchmarks/full_size_scores.py runs/half_f0.1_sup_s2 runs/half_f0.1_uni_s2 \\
        --data ../shared/data/hc18_fetal_head --factor 2
"""

import argparse
import json
import sys
from pathlib import Path

from ssl_seg.engine.report import evaluate_run, metrics_path
from ssl_seg.experiments.grid import collect
from ssl_seg.experiments.stats import fmt_gain


def full_size(run_dir: Path, checkpoint: str, data: str, factor: int, device: str) -> dict:
    """The run's full-size test metrics for `checkpoint`, from an earlier evaluation when there is one."""
    path = metrics_path(run_dir, "test", checkpoint, factor)
    if path.is_file():
        return json.loads(path.read_text())
    return evaluate_run(run_dir, checkpoint=checkpoint, split="test", data=data, device=device, downscale=factor,
                        progress=False)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="+", help="grid directories (runs/<name>/result.json) trained on the copy")
    p.add_argument("--data", required=True, help="the full-size folder the copy was made from")
    p.add_argument("--factor", type=int, default=2, help="the copy's --factor")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    print("| grid/run | checkpoint | Dice copy | Dice full | +LCC copy | +LCC full | HD95 copy (copy px) | "
          "HD95 full (full px) | full / copy | +LCC HD95 full / copy |")
    print("|---" * 10 + "|")
    dice_diffs, ratios = [], []
    for root in args.roots:
        for result in collect(root):
            run_dir = Path(root) / "runs" / result["name"]
            for key, checkpoint in (("test", "best"), ("test_last", "last")):
                copy, full = result[key], full_size(run_dir, checkpoint, args.data, args.factor, args.device)
                pc, pf = copy["postprocessed"], full["postprocessed"]
                dice_diffs.append(100 * (full["dice"] - copy["dice"]))
                ratios.append(full["hd95"] / copy["hd95"])
                cells = [copy["dice"], full["dice"], pc["dice"], pf["dice"]]
                print(f"| {Path(root).name}/{result['name']} | {checkpoint} | "
                      + " | ".join(f"{v:.3f}" for v in cells)
                      + f" | {copy['hd95']:.1f} | {full['hd95']:.1f} | {ratios[-1]:.2f}"
                      + f" | {pf['hd95'] / pc['hd95']:.2f} |")
    print()
    print(f"Dice full - copy over {len(dice_diffs)} run checkpoints (points): {fmt_gain(dice_diffs)}")
    print(f"HD95 full / copy: mean {sum(ratios) / len(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f} "
          f"(a factor-{args.factor} copy's pixel is {args.factor} full-size pixels)")
    print(f"\n$ python benchmarks/full_size_scores.py {' '.join(args.roots)} --data {args.data} --factor {args.factor}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
