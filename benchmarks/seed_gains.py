"""Per-seed test scores of finished grid runs and each method's paired gain over supervised, with 95 % intervals.

Reads result.json of every finished run under one or more grid directories (runs trained with different settings
may live in different grids; a run name may appear once only). Prints markdown: one row per run, then per method
and label budget the seed-paired differences against supervised, their t-interval and the seeds won.

    python benchmarks/seed_gains.py runs/bench/hippo_const runs/bench/hippo_poly --labels c2

A grid given with --tagged DIR TAG names its methods "METHOD + TAG" (e.g. the same method with another setting), so
its runs pair with the untagged supervised runs:

    python benchmarks/seed_gains.py runs/bench/hippo_final --tagged runs/bench/hippo_wema weight-ema --labels c2
"""

import argparse
import sys

from ssl_seg.experiments.ablation import summary_rows
from ssl_seg.experiments.grid import collect
from ssl_seg.experiments.stats import fmt_gain

# (column, csv key): per-volume Dice and HD95 for the best-on-validation and the last checkpoint, raw and with the
# largest-component filter chosen on validation
SCORES = (("Dice best", "vol_dice"), ("+LCC", "vol_dice_pp"), ("Dice last", "vol_dice_last"),
          ("+LCC", "vol_dice_pp_last"), ("HD95 best +LCC", "vol_hd95_pp"), ("HD95 last +LCC", "vol_hd95_pp_last"))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="*", help="grid directories (runs/<name>/result.json)")
    p.add_argument("--tagged", nargs=2, action="append", default=[], metavar=("DIR", "TAG"),
                   help="a grid whose methods are named 'METHOD + TAG' (repeatable)")
    p.add_argument("--labels", help="only this label budget, e.g. c2 or f0.05")
    args = p.parse_args(argv)
    grids = [(root, None) for root in args.roots] + [tuple(t) for t in args.tagged]
    rows = [{**r, "method": r["method"] if tag is None else f"{r['method']} + {tag}"}
            for root, tag in grids for r in summary_rows(collect(root))
            if args.labels is None or r["labels"] == args.labels]
    names = [(r["method"], r["name"]) for r in rows]
    if len(set(names)) != len(names):
        print(f"a run name appears in more than one grid: {sorted({n for n in names if names.count(n) > 1})}")
        return 2
    rows.sort(key=lambda r: (r["labels"], r["method"] != "supervised", r["method"], r["seed"]))
    print("| method | labels | seed | best step | " + " | ".join(c for c, _ in SCORES) + " | s / iter | wall (min) |")
    print("|---" * (len(SCORES) + 6) + "|")
    for r in rows:
        cells = [f"{r[k]:.3f}" if r.get(k) is not None else "n/a" for _, k in SCORES]
        print(f"| {r['method']} | {r['labels']} | {r['seed']} | {r['best_step']} | " + " | ".join(cells)
              + f" | {r['s_per_iteration']:.3f} | {r['wall_time_s'] / 60:.1f} |")
    print()
    print("| method - supervised | labels | score | paired gain (Dice points or mm), 95 % CI | seeds better |")
    print("|---|---|---|---|---|")
    for (method, labels) in sorted({(r["method"], r["labels"]) for r in rows if r["method"] != "supervised"}):
        for column, key in SCORES:
            sup = {r["seed"]: r.get(key) for r in rows if (r["method"], r["labels"]) == ("supervised", labels)}
            this = {r["seed"]: r.get(key) for r in rows if (r["method"], r["labels"]) == (method, labels)}
            seeds = [s for s in sorted(this) if this[s] is not None and sup.get(s) is not None]
            scale = 1.0 if key.startswith("vol_hd95") else 100.0
            diffs = [scale * (this[s] - sup[s]) for s in seeds]
            better = sum((d < 0) if key.startswith("vol_hd95") else (d > 0) for d in diffs)
            label = column if column != "+LCC" else ("Dice best +LCC" if key == "vol_dice_pp" else "Dice last +LCC")
            print(f"| {method} | {labels} | {label} | {fmt_gain(diffs)} | {better}/{len(seeds)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
