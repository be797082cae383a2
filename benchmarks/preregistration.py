"""Checks that every cell of benchmarks/cells.json that claims pre-registration has it (benchmarks/PROTOCOL.md §4).

A cell is pre-registered when the commit that added its predictions file is older than the `started_at` of every
run of the cell (every candidate of every arm) and no later commit changed the file. A cell without a predictions
file must say why in "exploratory". Prints one line per cell and exits 1 when any cell fails.

    python benchmarks/preregistration.py            # the repository's cells
    python benchmarks/preregistration.py --root DIR # another checkout
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CELLS = "benchmarks/cells.json"


def git_commits(root: Path, path: str) -> list[tuple[str, datetime]]:
    """(hash, committer time) of every commit that touched `path`, oldest first ([] when untracked or no git)."""
    try:
        out = subprocess.run(["git", "-C", str(root), "log", "--format=%H %cI", "--", path], capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    rows = [line.split(" ", 1) for line in out.splitlines() if line.strip()]
    return [(h, datetime.fromisoformat(t)) for h, t in reversed(rows)]


def run_dirs(root: Path, cell: dict[str, Any]) -> list[Path]:
    """Every run folder (holding result.json) of every candidate of every arm of `cell` run for it. Arms reused from
    another pre-registered cell are that cell's runs, and so are their candidates where another arm also lists them
    (e.g. real only as one choice of a recipe chosen on validation)."""
    found = []
    reused = cell.get("reused", {})
    checked = {pattern for arm in reused for pattern in cell["arms"].get(arm, [])}
    for arm, patterns in cell["arms"].items():
        if arm in reused:
            continue
        for pattern in patterns:
            if pattern not in checked:
                found += [Path(p).parent for p in sorted(glob.glob(str(root / pattern / "result.json")))]
    return found


def check_cell(root: Path, cell: dict[str, Any]) -> list[str]:
    """The reasons `cell` fails the pre-registration rule ([] when it passes or is declared exploratory)."""
    predictions = cell.get("predictions")
    if predictions is None:
        return [] if cell.get("exploratory") else ["neither a predictions file nor an 'exploratory' reason"]
    commits = git_commits(root, predictions)
    if not commits:
        return [f"{predictions} is not committed"]
    added_hash, added_at = commits[0]
    problems = [f"{predictions} changed after it was added (commit {h[:8]})" for h, _ in commits[1:]]
    problems += reuse_problems(root, cell)
    runs = run_dirs(root, cell)
    if not runs:
        problems.append("no finished run")
    first_finish = None
    for run in runs:
        result = json.loads((run / "result.json").read_text())
        started = result.get("started_at")
        if started is None:
            problems.append(f"{run.relative_to(root)}: result.json has no started_at")
            continue
        start = datetime.fromisoformat(started)
        if start <= added_at:
            problems.append(f"{run.relative_to(root)} started {started}, not after {added_hash[:8]} ({added_at})")
        finish = start + timedelta(seconds=float(result.get("wall_time_s", 0.0)))
        first_finish = finish if first_finish is None else min(first_finish, finish)
    for amendment in cell.get("amendments", []):
        amended = git_commits(root, amendment)
        if not amended:
            problems.append(f"{amendment} is not committed")
            continue
        problems += [f"{amendment} changed after it was added (commit {h[:8]})" for h, _ in amended[1:]]
        if first_finish is not None and amended[0][1] >= first_finish:
            problems.append(f"{amendment} was committed {amended[0][1]}, after the first run finished ({first_finish})")
    return problems


def reuse_problems(root: Path, cell: dict[str, Any]) -> list[str]:
    """Each arm in `cell["reused"]` ({arm: source cell id}) is the same arm, same runs, of a source cell that is
    itself pre-registered and passes, and whose own runs they are (not an arm it reuses in turn)."""
    problems = []
    spec = load_cells(root / CELLS) if cell.get("reused") else None
    cells = {c["id"]: c for c in spec["cells"]} if spec else {}
    for arm, source_id in cell.get("reused", {}).items():
        source = cells.get(source_id)
        if source is None or arm in source.get("reused", {}) or not source.get("predictions"):
            problems.append(f"arm {arm!r} reuses cell {source_id!r}, which is not a pre-registered cell of its own")
        elif source["arms"].get(arm) != cell["arms"].get(arm):
            problems.append(f"arm {arm!r} differs from the same arm of {source_id} (reuse takes its runs unchanged)")
        elif check_cell(root, source):
            problems.append(f"arm {arm!r} reuses {source_id}, which fails its own check")
    return problems


def load_cells(path: Path) -> dict[str, Any] | None:
    """benchmarks/cells.json, or None after printing one line saying what is wrong with it."""
    if not path.is_file():
        print(f"{path}: not found; run from a checkout that has benchmarks/cells.json")
        return None
    try:
        spec = json.loads(path.read_text())
        if all(isinstance(c, dict) and {"id", "data", "labels", "seeds", "arms"} <= set(c)
               and c.get("baseline", "supervised") in c["arms"] for c in spec["cells"]):
            return spec
    except (ValueError, KeyError, TypeError):
        pass
    print(f"{path}: not a cells file (a JSON object whose 'cells' each have id, data, labels, seeds, arms, and "
          "among the arms 'supervised' or the arm named by 'baseline'); fix it")
    return None


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    args = p.parse_args(argv)
    spec = load_cells(args.root / CELLS)
    if spec is None:
        return 2
    failed = 0
    for cell in spec["cells"]:
        problems = check_cell(args.root, cell)
        if problems:
            failed += 1
            print(f"FAIL {cell['id']}: " + "; ".join(problems))
        elif cell.get("predictions"):
            print(f"ok   {cell['id']}: pre-registered in {cell['predictions']}, {len(run_dirs(args.root, cell))} runs "
                  "started after it")
        else:
            print(f"ok   {cell['id']}: exploratory ({cell['exploratory']})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
