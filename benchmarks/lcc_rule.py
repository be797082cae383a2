"""How the validation rule that turns the largest-component filter on per class fares on test, by minimum gain.

Reads finished runs (any folders holding `postprocessing*.json` next to `result.json`, as `ssl-seg ablate` files
them) and, for every (run, checkpoint, class) where the filter raised validation Dice, pairs that validation gain
with the filter's test change. For each minimum validation gain it prints, per dataset, how many filters are kept,
the mean test Dice and HD95 change over all those decisions (a dropped filter changes nothing), and how many kept
filters lowered test Dice. A run filed in two folders counts once.

    python benchmarks/lcc_rule.py benchmarks/results/real_realistic benchmarks/results/hippo3d --min-gains 0 0.5 1
"""

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Decision:
    """One class of one checkpoint whose filter raised validation Dice, with its test effect."""

    dataset: str
    val_gain: float  # Dice points on validation, filter on minus off
    test_dice: float  # Dice points on test, filter on minus off
    test_hd95: float  # HD95 on test, filter on minus off (the run's unit)


def dataset_label(run_dir: Path, result: dict) -> str:
    """The data folder's name, with "(3D)" for runs on whole volumes (config.json's spatial_dims)."""
    config = run_dir / "config.json"
    dims = json.loads(config.read_text()).get("data", {}).get("spatial_dims", 2) if config.is_file() else 2
    return Path(str(result.get("data"))).name + (" (3D)" if dims == 3 else "")


def decisions(folder: Path) -> dict[tuple, Decision]:
    """Every chosen filter under `folder`, keyed by what identifies the run so that copies count once."""
    found: dict[tuple, Decision] = {}
    for result_path in sorted(folder.rglob("result.json")):
        run_dir = result_path.parent
        records = {last: run_dir / f"postprocessing{'_last' if last else ''}.json" for last in (False, True)}
        if not any(path.is_file() for path in records.values()):
            continue
        result = json.loads(result_path.read_text())
        dataset = dataset_label(run_dir, result)
        for last, record_path in records.items():
            record = json.loads(record_path.read_text()) if record_path.is_file() else {}
            if not record.get("val_dice_with"):
                continue
            test = result.get("test_last" if last else "test") or {}
            post = test.get("postprocessed") or {}
            base, filtered = test.get("volume", test), post.get("volume", post)
            for cls in record["lcc_classes"]:
                c = str(cls)
                on, off = record["val_dice_with"][c], record["val_dice_without"][c]
                t_off, t_on = base["per_class"][c], filtered["per_class"][c]
                if None in (t_on["dice"], t_off["dice"], t_on["hd95"], t_off["hd95"]):
                    continue
                key = (result.get("data"), result.get("name"), test.get("dice"), last, c)
                found[key] = Decision(dataset, 100 * (on - off), 100 * (t_on["dice"] - t_off["dice"]),
                                      t_on["hd95"] - t_off["hd95"])
    return found


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="folders holding finished runs (searched recursively)")
    p.add_argument("--min-gains", nargs="+", type=float, default=[0.0, 0.25, 0.5, 1.0],
                   help="minimum validation Dice gains to compare, in Dice points (default: 0 0.25 0.5 1)")
    args = p.parse_args(argv)
    found: dict[tuple, Decision] = {}
    for folder in map(Path, args.folders):
        if not folder.is_dir():
            print(f"error: {folder}: no such folder; pass folders that hold finished runs", file=sys.stderr)
            return 2
        found.update(decisions(folder))
    if not found:
        print("error: no run with a validation-chosen filter under the folders given", file=sys.stderr)
        return 2
    print("| dataset | min val gain | filters kept / raised val | mean test Dice change | mean test HD95 change "
          "| kept that lowered test Dice |")
    print("|---|---|---|---|---|---|")
    for dataset in sorted({d.dataset for d in found.values()}):
        rows = [d for d in found.values() if d.dataset == dataset]
        for gain in args.min_gains:
            kept = [d for d in rows if d.val_gain > gain]
            dice = statistics.fmean([d.test_dice if d.val_gain > gain else 0.0 for d in rows])
            hd = statistics.fmean([d.test_hd95 if d.val_gain > gain else 0.0 for d in rows])
            worse = sum(d.test_dice < 0 for d in kept)
            print(f"| {dataset} | {gain:g} | {len(kept)} / {len(rows)} | {dice:+.2f} | {hd:+.2f} | {worse} |")
    print(f"\n$ python benchmarks/lcc_rule.py {' '.join(args.folders)} --min-gains "
          f"{' '.join(f'{g:g}' for g in args.min_gains)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
