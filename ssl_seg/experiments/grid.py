"""Resumable, shardable grids of runs: one directory per run, finished runs skipped on re-launch."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from tqdm import tqdm

from ..engine import locks
from ..config import RunConfig
from ..errors import UserError
from .executors import job_results, submission_error
from ..io_utils import atomic_write_json, read_json
from ..engine.report import evaluate_run
from ..engine.runner import check_config, run_training

log = logging.getLogger(__name__)


@dataclass
class GridRun:
    """One cell of a grid: a unique name, its config, and the tags that place it in the tables."""

    name: str
    cfg: RunConfig
    tags: dict[str, Any] = field(default_factory=dict)
    start: "GridRun | None" = None  # the cell this one is warm-started from (--init-from), finished first


def parse_shard(spec: str | None) -> tuple[int, int]:
    """'i/N' -> (i, N) with 0 <= i < N; None -> (0, 1)."""
    if spec is None:
        return 0, 1
    m = re.fullmatch(r"(\d+)/(\d+)", spec)
    if not m or not int(m.group(1)) < int(m.group(2)):
        raise UserError(f"--shard {spec}: use i/N with 0 <= i < N, e.g. 0/4")
    return int(m.group(1)), int(m.group(2))


def shard(runs: list[GridRun], spec: str | None) -> list[GridRun]:
    """The runs of shard i/N: every N-th run starting at i (shards are disjoint and cover the grid)."""
    i, n = parse_shard(spec)
    return runs[i::n]


def is_finished(run_dir: Path) -> bool:
    """A run is finished when its result.json holds test metrics."""
    path = run_dir / "result.json"
    if not path.is_file():
        return False
    result = read_json(path, "it is a grid cell's result.json: delete it and run the grid again to redo the cell")
    return isinstance(result, dict) and "test" in result


TEST_KEYS = ("dice", "iou", "hd95", "asd", "per_class", "n_cases")


def test_summary(metrics: dict) -> dict[str, Any]:
    """The test numbers a grid keeps: case means, per-volume and post-processed scores (no per-case detail)."""
    out = {k: metrics[k] for k in TEST_KEYS}
    if "volume" in metrics:
        out["volume"] = {k: metrics["volume"][k] for k in TEST_KEYS}
    if "postprocessed" in metrics:
        out["postprocessed"] = {k: v for k, v in test_summary(metrics["postprocessed"]).items()}
        out["postprocessed"]["lcc_classes"] = metrics["postprocessed"]["lcc_classes"]
    return out


def run_one(run: GridRun, root: Path) -> dict[str, Any]:
    """Train (or resume) and test one grid run on both checkpoints; result.json is written last, atomically."""
    run_dir = root / "runs" / run.name
    cfg = copy.deepcopy(run.cfg)
    cfg.out = str(run_dir)
    if run.start is not None:
        finish_start(run.start, root)
        cfg.model.init_from = str(root / "runs" / run.start.name)
    with locks.locked(run_dir, "grid cell"):
        resume = (run_dir / "last.pt").is_file()
        result = run_training(cfg, resume=resume)
        quiet = {"device": cfg.train.device, "progress": cfg.train.progress}  # no bars from --no-progress cells
        best = evaluate_run(run_dir, checkpoint="best", split="test", **quiet)
        last = evaluate_run(run_dir, checkpoint="last", split="test", **quiet)
        result.update({"name": run.name, "tags": run.tags, "test": test_summary(best),
                       "test_last": test_summary(last)})
        atomic_write_json(run_dir / "result.json", result)
    return result


def finish_start(start: GridRun, root: Path, poll_s: float = 30.0) -> None:
    """Return once cell `start` has finished: train it here, or wait while another process trains it."""
    while not is_finished(root / "runs" / start.name):
        if run_cell(start, root) is not None:
            log.info(f"grid: waiting for cell {start.name} (another process is training it) to start from it")
            time.sleep(poll_s)


def warm_config(cfg: RunConfig, start: str) -> RunConfig:
    """A copy of `cfg` as a warm cell will run it: --init-from set (here to its start cell's name)."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init_from=start))


def check_grid(runs: list[GridRun], paths: bool = True) -> None:
    """Every cell's config (and, with `paths`, data paths) is valid before the first cell trains; errors name the cell."""
    names = [r.name for r in runs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"the grid lists cell {twice[0]} {names.count(twice[0])} times: a seed, method, label "
                        "budget, ratio or backbone is given twice; list each value once")
    for run in runs:
        try:
            cfg = check_config(run.cfg if run.start is None else warm_config(run.cfg, run.start.name))
        except UserError as e:
            raise UserError(f"grid cell {run.name}: {e}") from None
        for path in [cfg.data.data, *cfg.data.synthetic] if paths else []:
            if not path.startswith("phantom:") and not Path(path).exists():
                raise UserError(f"grid cell {run.name}: {path} does not exist; fix --data / --synthetic")


def run_cell(run: GridRun, root: Path) -> str | None:
    """run_one, or the cell's name when another process holds its lock (that process finishes it)."""
    try:
        run_one(run, root)
    except locks.Locked:
        return run.name
    return None


def submit_cells(todo: list[GridRun], root: Path, executor: Any) -> list[str]:
    """Run the cells as jobs of a submitit `executor` (one array job), wait for all; the names left to others.

    A failed cell is reported after all jobs end, in one line naming its log; a relaunch skips finished cells.
    """
    try:
        jobs = executor.map_array(run_cell, todo, [root] * len(todo))
    except (OSError, RuntimeError) as e:  # e.g. no sbatch here
        raise submission_error(e) from None
    log.info(f"grid: {len(jobs)} cell job(s) submitted (first {jobs[0].job_id}); logs in {executor.folder}")
    return [name for name in job_results(jobs, [run.name for run in todo]) if name is not None]


def with_threads(run: GridRun, threads: int) -> GridRun:
    """`run` (and the cell it starts from) with `threads` torch threads."""
    cfg = dataclasses.replace(run.cfg, train=dataclasses.replace(run.cfg.train, threads=threads))
    start = with_threads(run.start, threads) if run.start is not None else None
    return GridRun(run.name, cfg, run.tags, start)


def run_grid(runs: list[GridRun], root: str | Path, shard_spec: str | None = None,
             progress: bool = True, executor: Any | None = None, threads: int | None = None) -> list[dict[str, Any]]:
    """Run this shard's unfinished runs (here in order, or as jobs of a submitit `executor`), each with `threads`
    torch threads when given; returns the results of the shard's finished runs."""
    root = Path(root)
    if threads is not None:
        runs = [with_threads(r, threads) for r in runs]
    if root.exists() and not root.is_dir():
        raise UserError(f"--out {root} is a file; give a folder for the grid")
    check_grid(runs)
    mine = shard(runs, shard_spec)
    todo = [r for r in mine if not is_finished(root / "runs" / r.name)]
    log.info(f"grid: {len(runs)} runs, shard {shard_spec or '0/1'} has {len(mine)}, {len(mine) - len(todo)} done "
             "already")
    if executor is not None and todo:
        busy = submit_cells(todo, root, executor)
    else:
        bar: Iterable[GridRun] = tqdm(todo, desc="grid", disable=not progress)
        busy, failed = [], []
        for run in bar:
            try:
                if run_cell(run, root) is not None:
                    busy.append(run.name)
            except Exception as e:  # noqa: BLE001 - one failing cell must not stop the others; named at the end
                log.error(f"grid cell {run.name} failed: {type(e).__name__}: {e}")
                failed.append(f"{run.name} ({e})" if isinstance(e, UserError) else f"{run.name} ({type(e).__name__})")
        if failed:
            raise UserError(f"grid: {len(failed)} of {len(todo)} cell(s) failed, the others ran: "
                            f"{'; '.join(failed[:3])}{'; ...' if len(failed) > 3 else ''}; fix and run the grid again "
                            "(finished cells are kept)")
    if busy:
        log.warning(f"grid: {len(busy)} cell(s) were being trained by another process and were left to it: "
                    f"{', '.join(busy)}")
    return collect(root, [r.name for r in mine])


def collect(root: str | Path, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Results of finished runs under root/runs (all of them, or those named)."""
    runs_dir = Path(root) / "runs"
    if not runs_dir.is_dir():
        return []
    dirs = [runs_dir / n for n in names] if names is not None else sorted(p for p in runs_dir.iterdir() if p.is_dir())
    return [json.loads((d / "result.json").read_text()) for d in dirs if is_finished(d)]
