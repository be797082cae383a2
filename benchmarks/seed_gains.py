"""Per-seed test scores of finished grid runs, per-cell means, each method's paired gain over supervised and the
paired gap to full labels, with 95 % intervals.

Reads result.json of every finished run under one or more grid directories (runs trained with different settings
may live in different grids; a run name may appear once only). Prints markdown: one row per run, each run's
per-class scores, then per method and label budget the seed means +- std, the seed-paired differences against
supervised (t-interval, seeds won) and, where the grid has full-label supervised runs (labels f1), the seed-paired
gap from each cell up to them.
Runs on volumes (--spatial-dims 3) score whole volumes, so their plain Dice / HD95 are the per-volume scores.

    python benchmarks/seed_gains.py runs/bench/hippo_const runs/bench/hippo_poly --labels c2

A grid given with --tagged DIR TAG names its methods "METHOD + TAG" (e.g. the same method with another setting), so
its runs pair with the untagged supervised runs:

    python benchmarks/seed_gains.py runs/bench/hippo_final --tagged runs/bench/hippo_wema weight-ema --labels c2

Runs made under an older rule for the largest-component filter (a half-point margin on validation Dice, used from the
sixth to the tenth session) may keep other filters than today's rule (any validation rise); --lcc-rule current
re-decides each run's filter from its postprocessing*.json with today's rule (`choose_lcc_classes`), so its +LCC
columns read as a run of today's code would. Where that changes which filters a run keeps to anything but none, the
+LCC scores need a re-evaluation and show n/a.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ssl_seg.evaluation.postprocess import choose_lcc_classes
from ssl_seg.experiments.ablation import summary_rows
from ssl_seg.experiments.grid import collect
from ssl_seg.experiments.results import by_seed, paired as results_paired
from ssl_seg.experiments.stats import fmt_gain, fmt_mean_std

# (column, csv key): per-volume Dice and HD95 for the best-on-validation and the last checkpoint, raw and with the
# largest-component filter chosen on validation
SCORES = (("Dice best", "vol_dice"), ("Dice best +LCC", "vol_dice_pp"), ("Dice last", "vol_dice_last"),
          ("Dice last +LCC", "vol_dice_pp_last"), ("HD95 best", "vol_hd95"), ("HD95 best +LCC", "vol_hd95_pp"),
          ("HD95 last +LCC", "vol_hd95_pp_last"))
FULL = "f1"  # the label budget of the full-label supervised reference


def redecide_lcc(result: dict[str, Any], run_dir: Path) -> list[str]:
    """Apply today's filter rule to `result` in place (see --lcc-rule); one note per checkpoint whose filter changed."""
    notes = []
    for test_key, file in (("test", "postprocessing.json"), ("test_last", "postprocessing_last.json")):
        test, path = result.get(test_key), run_dir / file
        if not test or "postprocessed" not in test or not path.is_file():
            continue
        choice = json.loads(path.read_text())
        kept = choose_lcc_classes(*({int(c): v for c, v in choice[k].items()}
                                    for k in ("val_dice_without", "val_dice_with")))
        if kept == sorted(choice["lcc_classes"]):
            continue
        if kept:  # another non-empty set of classes: the stored scores filtered others
            test["postprocessed"] = {"dice": None, "hd95": None}
        else:
            test["postprocessed"] = {k: v for k, v in test.items() if k != "postprocessed"}
        notes.append(f"{run_dir.name} {test_key}: filter classes {choice['lcc_classes']} -> {kept}")
    return notes


def score(row: dict[str, Any], key: str) -> float | None:
    """The row's per-volume score `key`; a 3D run has no vol_* keys, its plain scores are per volume."""
    return row[key] if key in row else row.get(key.removeprefix("vol_"))


def paired(rows: list[dict[str, Any]], a: tuple[str, str], b: tuple[str, str], key: str) -> list[float]:
    """Seed-paired differences a - b ((method, labels) each) on score `key`, Dice in points, HD95 in mm."""
    scale = 1.0 if "hd95" in key else 100.0
    scored = [{**r, key: score(r, key)} for r in rows]
    this = by_seed(scored, key, method=a[0], labels=a[1])
    other = by_seed(scored, key, method=b[0], labels=b[1])
    return [scale * d for d in results_paired(this, other)]


def per_class(rows: list[dict[str, Any]]) -> None:
    """Print each run's per-class test Dice and HD95 (best checkpoint, raw; its result.json `test`), with the cases
    whose HD95 is undefined (class absent from the prediction or the truth), which the HD95 means leave out."""
    classes = sorted({c for r in rows for c in r["test"]["per_class"]}, key=int)
    print()
    print("| method | labels | seed | " + " | ".join(f"class {c} Dice | class {c} HD95 (undefined)" for c in classes)
          + " |")
    print("|---" * (2 * len(classes) + 3) + "|")
    for r in rows:
        test = r["test"]
        cells = []
        for c in classes:
            m = test["per_class"].get(c)
            cells += ["n/a", "n/a"] if m is None else \
                [f"{m['dice']:.3f}", f"{m['hd95']:.2f} ({m['n_undefined_hd95']}/{test['n_cases']})"]
        print(f"| {r['method']} | {r['labels']} | {r['seed']} | " + " | ".join(cells) + " |")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("roots", nargs="*", help="grid directories (runs/<name>/result.json)")
    p.add_argument("--tagged", nargs=2, action="append", default=[], metavar=("DIR", "TAG"),
                   help="a grid whose methods are named 'METHOD + TAG' (repeatable)")
    p.add_argument("--labels", help="only this label budget, e.g. c2 or f0.05")
    p.add_argument("--lcc-rule", choices=["stored", "current"], default="stored",
                   help="+LCC scores as the runs stored them, or with today's filter rule (any validation rise) re-applied")
    args = p.parse_args(argv)
    grids = [(root, None) for root in args.roots] + [tuple(t) for t in args.tagged]
    rows, notes = [], []
    for root, tag in grids:
        results = collect(root)
        if args.lcc_rule == "current":
            for result in results:
                notes += redecide_lcc(result, Path(root) / "runs" / result["name"])
        rows += [{**r, "method": r["method"] if tag is None else f"{r['method']} + {tag}", "test": result["test"]}
                 for result, r in zip(results, summary_rows(results))
                 if args.labels is None or r["labels"] == args.labels]
    names = [(r["method"], r["name"]) for r in rows]
    if len(set(names)) != len(names):
        print(f"a run name appears in more than one grid: {sorted({n for n in names if names.count(n) > 1})}")
        return 2
    rows.sort(key=lambda r: (r["labels"], r["method"] != "supervised", r["method"], r["seed"]))
    print("| method | labels | seed | best step | " + " | ".join(c for c, _ in SCORES) + " | s / iter | wall (min) |")
    print("|---" * (len(SCORES) + 6) + "|")
    for r in rows:
        cells = [f"{score(r, k):.3f}" if score(r, k) is not None else "n/a" for _, k in SCORES]
        print(f"| {r['method']} | {r['labels']} | {r['seed']} | {r['best_step']} | " + " | ".join(cells)
              + f" | {r['s_per_iteration']:.3f} | {r['wall_time_s'] / 60:.1f} |")
    per_class(rows)
    if args.lcc_rule == "current":
        print()
        print("Filters re-decided with today's rule: " + ("; ".join(notes) if notes else "none changed") + ".")
    cells = sorted({(r["labels"], r["method"] != "supervised", r["method"]) for r in rows})
    print()
    print("| method | labels | n | " + " | ".join(c for c, _ in SCORES) + " | s / iter |")
    print("|---" * (len(SCORES) + 4) + "|")
    for labels, _, method in cells:
        mine = [r for r in rows if (r["method"], r["labels"]) == (method, labels)]
        print(f"| {method} | {labels} | {len(mine)} | "
              + " | ".join(fmt_mean_std([score(r, k) for r in mine], n_label=False) for _, k in SCORES)
              + f" | {fmt_mean_std([r['s_per_iteration'] for r in mine], n_label=False)} |")
    print()
    print("| method - supervised | labels | score | paired gain (Dice points or mm), 95 % CI | seeds better |")
    print("|---|---|---|---|---|")
    for (method, labels) in sorted({(r["method"], r["labels"]) for r in rows if r["method"] != "supervised"}):
        for column, key in SCORES:
            diffs = paired(rows, (method, labels), ("supervised", labels), key)
            better = sum((d < 0) if "hd95" in key else (d > 0) for d in diffs)
            print(f"| {method} | {labels} | {column} | {fmt_gain(diffs)} | {better}/{len(diffs)} |")
    if any((r["method"], r["labels"]) == ("supervised", FULL) for r in rows):
        print()
        print("| full labels - cell | labels | score | paired gap (Dice points), 95 % CI | seeds below full |")
        print("|---|---|---|---|---|")
        for labels, _, method in cells:
            if labels == FULL:
                continue
            for column, key in SCORES:
                if "hd95" in key:
                    continue
                gaps = paired(rows, ("supervised", FULL), (method, labels), key)
                print(f"| {method} | {labels} | {column} | {fmt_gain(gaps)} | {sum(g > 0 for g in gaps)}/{len(gaps)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
