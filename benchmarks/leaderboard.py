"""The front page of benchmarks/RESULTS.md, written from the result files that benchmarks/cells.json names.

Per real data set x label budget: each arm's primary endpoint (benchmarks/PROTOCOL.md: test Dice of the checkpoint
chosen on validation, per volume where the data has volumes), the seed-paired gain of each method over the
supervised arm with Holm-adjusted intervals (one family per table), the share of the full-label gap recovered, cost
per step and the commit that added the result files. Where an arm lists several candidate settings, each seed's run
is the candidate with the highest validation Dice. Pre-registered cells (benchmarks/preregistration.py passes) make
the claims table; every other cell goes to the exploratory table, which claims nothing.

    python -m benchmarks.leaderboard          # rewrites the front of benchmarks/RESULTS.md and its figure
    python -m benchmarks.leaderboard --check  # exit 1 when RESULTS.md differs from what the files give
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.preregistration import CELLS, ROOT, check_cell, load_cells
from ssl_seg.experiments.stats import fmt_family, fmt_mean_std, paired_interval

RESULTS = "benchmarks/RESULTS.md"
FIGURE = "benchmarks/results/leaderboard.png"
START = "<!-- leaderboard: written by `python -m benchmarks.leaderboard` from benchmarks/cells.json; do not edit -->"
END = "<!-- end of leaderboard -->"
BASELINE, FULL = "supervised", "full labels"


@dataclass(frozen=True)
class Run:
    """One finished run as the page uses it."""

    path: Path
    seed: int
    val_dice: float | None
    primary: float | None
    s_per_iteration: float
    schedule: str


def primary_endpoint(result: dict[str, Any]) -> float | None:
    """Test Dice of the best-on-validation checkpoint, unfiltered: per volume where scored, else per case."""
    test = result.get("test") or {}
    return (test["volume"] if "volume" in test else test).get("dice")


def load_run(run_dir: Path) -> Run:
    """The Run of a folder holding result.json (and config.json for its learning-rate schedule)."""
    result = json.loads((run_dir / "result.json").read_text())
    config = run_dir / "config.json"
    train = json.loads(config.read_text())["train"] if config.is_file() else {}
    schedule = train.get("lr_schedule") or ("poly" if train.get("optimizer") == "sgd" else "constant")  # the runner's
    return Run(run_dir, int(result["seed"]), result.get("val_dice"), primary_endpoint(result),
               float(result["s_per_iteration"]), schedule)


def arm_runs(root: Path, patterns: list[str], seeds: list[int]) -> dict[int, Run]:
    """seed -> the run chosen on validation among the arm's candidates (one glob of run folders each)."""
    chosen: dict[int, Run] = {}
    for pattern in patterns:
        for result in sorted(glob.glob(str(root / pattern / "result.json"))):
            run = load_run(Path(result).parent)
            if run.seed not in seeds:
                continue
            best = chosen.get(run.seed)
            if best is None or (run.val_dice or -1.0) > (best.val_dice or -1.0):
                chosen[run.seed] = run
    return chosen


def added_in(root: Path, runs: list[Run]) -> str:
    """Short hashes of the commits that added the runs' result files ('uncommitted' for those not yet added)."""
    hashes = []
    for run in runs:
        try:
            out = subprocess.run(["git", "-C", str(root), "log", "--diff-filter=A", "--format=%h", "--",
                                  str((run.path / "result.json").relative_to(root))],
                                 capture_output=True, text=True, check=True).stdout.split()
        except (OSError, subprocess.CalledProcessError):
            out = []
        hashes.append(out[-1] if out else "uncommitted")
    return ", ".join(dict.fromkeys(hashes)) or "-"


Chosen = dict[str, dict[str, dict[int, Run]]]  # cell id -> arm -> seed -> the run chosen on validation


def chosen_runs(root: Path, cells: list[dict[str, Any]]) -> Chosen:
    """Every cell's arms read once: cell id -> arm -> seed -> run (arm_runs)."""
    return {c["id"]: {arm: arm_runs(root, pats, c["seeds"]) for arm, pats in c["arms"].items()} for c in cells}


def points(runs: dict[int, Run]) -> dict[int, float]:
    """seed -> primary endpoint in Dice points, seeds whose run has one."""
    return {s: 100 * r.primary for s, r in runs.items() if r.primary is not None}


def gap_share(method: dict[int, float], base: dict[int, float], full: dict[int, float]) -> str:
    """Per-seed (M - S) / (F - S) with its 95 % t-interval; n/a unless every paired seed has F > S."""
    seeds = sorted(set(method) & set(base) & set(full))
    if not seeds or any(full[s] <= base[s] for s in seeds):
        return "n/a"
    iv = paired_interval([100 * (method[s] - base[s]) / (full[s] - base[s]) for s in seeds])
    if iv.n == 1:
        return f"{iv.mean:+.0f} % (n = 1, no interval)"
    return f"{iv.mean:+.0f} % [{iv.lo:+.0f}, {iv.hi:+.0f}] (95 % CI, n = {iv.n})"


def baseline(cell: dict[str, Any]) -> str:
    """The arm `cell`'s gains are measured against: "supervised" unless the cell names another ("baseline")."""
    return cell.get("baseline", BASELINE)


def family_table(root: Path, cells: list[dict[str, Any]], chosen: Chosen) -> list[str]:
    """One markdown table over `cells`, its gains Holm-adjusted together."""
    family = {}
    for c in cells:
        base = points(chosen[c["id"]][baseline(c)])
        for arm, runs in chosen[c["id"]].items():
            if arm not in (baseline(c), FULL):
                family[(c["id"], arm)] = [v - base[s] for s, v in sorted(points(runs).items()) if s in base]
    gains = fmt_family(family)
    lines = ["| data | labels | arm | n | primary endpoint (Dice) | schedules chosen | gain over supervised (Dice "
             "points), Holm | full-label gap recovered | s / iter | result files added in |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        arms = chosen[c["id"]]
        base, full = points(arms[baseline(c)]), points(arms.get(FULL, {}))
        for arm, runs in arms.items():
            if not runs:
                continue
            values = [r.primary for r in runs.values()]
            schedules = ", ".join(f"{k} {v}" for k, v in sorted(
                {s: sum(r.schedule == s for r in runs.values()) for s in {r.schedule for r in runs.values()}}.items()))
            gain = gains.get((c["id"], arm), "-")
            if arm not in (baseline(c), FULL) and baseline(c) != BASELINE:
                gain = f"over {baseline(c)}: {gain}"
            share = "-" if arm in (baseline(c), FULL) or not full else gap_share(points(runs), base, full)
            cost = fmt_mean_std([r.s_per_iteration for r in runs.values()], n_label=False)
            lines.append(f"| {c['data']} | {c['labels']} | {arm} | {len(runs)} | "
                         f"{fmt_mean_std(values, n_label=False)} | {schedules or '-'} | {gain} | {share} | {cost} | "
                         f"{added_in(root, list(runs.values()))} |")
    return lines


def plot(cells: list[dict[str, Any]], chosen: Chosen, path: Path) -> None:
    """Primary endpoint against label budget, one panel per data set, one line per arm, 95 % t-interval bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ssl_seg.io_utils import atomic_path

    datasets = list(dict.fromkeys(c["data"] for c in cells))
    cols = min(3, len(datasets))
    rows = -(-len(datasets) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(datasets):]:
        ax.set_visible(False)
    for ax, data in zip(axes.flat, datasets):
        mine = [c for c in cells if c["data"] == data]
        ticks = [f"{c['labels']}{' *' if c.get('predictions') else ''}" for c in mine]
        arms = list(dict.fromkeys(a for c in mine for a in c["arms"]))
        for arm in arms:
            xs, m, lo, hi = [], [], [], []
            for x, c in enumerate(mine):
                if arm not in c["arms"]:
                    continue
                v = np.array([r.primary for r in chosen[c["id"]][arm].values() if r.primary is not None])
                if v.size == 0:
                    continue
                iv = paired_interval(v) if v.size > 1 else None
                xs.append(x)
                m.append(v.mean())
                lo.append(iv.lo if iv else v.mean())
                hi.append(iv.hi if iv else v.mean())
            line, = ax.plot(xs, m, marker="o", lw=1, label=arm)
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.15)
        ax.set_xticks(range(len(mine)), ticks, fontsize=7, rotation=20)
        ax.set_title(data, fontsize=8)
        ax.set_ylabel("test Dice (primary endpoint)", fontsize=8)
        ax.legend(fontsize=6)
    fig.suptitle("bands: 95 % t-interval of the seed mean; * pre-registered", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def has_runs(cell: dict[str, Any], chosen: Chosen) -> bool:
    """Whether any arm of `cell` has a finished run."""
    return any(chosen[cell["id"]].values())


def page(root: Path, spec: dict[str, Any], chosen: Chosen) -> str:
    """The front page's markdown (without the figure, which `plot` writes)."""
    confirmed, exploratory, why = [], [], []
    for cell in spec["cells"]:
        where = f"{cell['id']} ({cell['data']}, {cell['labels']})"
        if not has_runs(cell, chosen):
            why.append(f"- {where}: no finished run yet")
        elif not cell.get("predictions"):
            exploratory.append(cell)
            why.append(f"- {where}: {cell['exploratory']}")
        elif problems := check_cell(root, cell):
            exploratory.append(cell)
            why.append(f"- {where}: the pre-registration check failed ({'; '.join(problems)})")
        else:
            confirmed.append(cell)
    lines = [START, "", "# Results", "",
             "Every claim follows [PROTOCOL.md](PROTOCOL.md). Primary endpoint: test Dice of the checkpoint chosen on "
             "validation, no post-processing, per 3D volume where the data has volumes. Gains are seed-paired (seed s "
             "draws split s), in Dice points, with t-intervals Holm-adjusted over the comparisons of their table (m) and "
             "the exact sign-flip p beside them; \"established\" = Holm-adjusted p < 0.05. Where an arm had several "
             "candidate settings (learning-rate schedules), each seed's run is the one with the higher validation "
             "Dice; the 'schedules chosen' column counts them. s / iter: as measured on a 2-core CPU often shared "
             "with another run; compare within a row's cell only.", ""]
    lines += ["## Claims: pre-registered cells", ""]
    lines += family_table(root, confirmed, chosen) if confirmed else ["No cell passes the pre-registration check yet."]
    if confirmed:
        lines += ["", "Predictions (committed before the runs started): " + "; ".join(
            f"[{c['id']}]({Path(c['predictions']).relative_to('benchmarks')})" for c in confirmed) + "."]
    lines.append("")
    lines += ["## Exploratory: not pre-registered, no claim", "",
              "Earlier runs recomputed under the protocol's endpoint and correction (one family). Why each cell is "
              "here:", ""] + why + [""]
    lines += family_table(root, exploratory, chosen) if exploratory else []
    lines += ["", "## Withdrawn", ""] + [f"- **{w['claim']}** {w['why']}" for w in spec.get("withdrawn", [])]
    lines += ["", f"![primary endpoint against labels]({Path(FIGURE).relative_to('benchmarks')})", "",
              "The chronological notebook, with every run's details and secondary scores, follows below.", "", END]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    p.add_argument("--check", action="store_true", help="only compare: exit 1 when RESULTS.md is out of date")
    args = p.parse_args(argv)
    results = args.root / RESULTS
    spec = load_cells(args.root / CELLS)
    if spec is None:
        return 2
    chosen = chosen_runs(args.root, spec["cells"])
    front = page(args.root, spec, chosen)
    old = results.read_text() if results.is_file() else ""
    rest = old.split(END, 1)[1].lstrip("\n") if END in old else old
    new = front + "\n" + rest
    if args.check:
        same = old == new
        print(f"{results}: {'up to date' if same else 'out of date: run python -m benchmarks.leaderboard'}")
        return 0 if same else 1
    from ssl_seg.io_utils import atomic_write_text

    plot([c for c in spec["cells"] if has_runs(c, chosen)], chosen, args.root / FIGURE)
    atomic_write_text(results, new)
    print(f"wrote the front of {results} and {args.root / FIGURE}")
    print("reproduce: python -m benchmarks.leaderboard")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
