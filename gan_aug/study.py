"""`ssl-seg study`: low-label ablation and GAN synthetic pairs -> real-vs-synthetic ratio sweep -> the ratio
chosen on validation (oracle row beside it on phantoms) -> OUT/report.md (study_report.py).

Added to the ssl-seg command line through the `ssl_seg.commands` entry point (ssl_seg never imports gan_aug).
Synthetic masks come from the labeled masks (`deform`); phantom masks only in the labelled oracle row.
Independent runs go to `--workers` processes of one torch thread each. Every stage resumes: finished runs,
the trained GAN and the synthetic sets are kept, so re-running the same command redoes nothing finished and
only rebuilds the tables, figures and report.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import multiprocessing
import os
import shlex
import time
from pathlib import Path
from typing import Any, Callable

from ssl_seg.experiments import grid
from ssl_seg.experiments.ablation import ablation_runs, label_key, write_summary
from ssl_seg.experiments.profiles import GRID_DEFAULTS, PROFILES, base_config, profile, study_plan
from ssl_seg.config import RunConfig
from ssl_seg.errors import UserError
from ssl_seg.methods import method_class
from ssl_seg.flags import as_words, given
from ssl_seg.run_flags import add_run_flags
from ssl_seg.experiments.executors import add_executor_flags, build_executor, job_results, submission_error
from ssl_seg.experiments.grid import GridRun, collect
from ssl_seg.experiments.synthesis import SynthesisRequest
from ssl_seg.io_utils import atomic_write_json, atomic_write_text
from ssl_seg.experiments.sweep import sweep_runs
from ssl_seg.experiments.sweep_report import as_reported, plot_dice_vs_ratio, sweep_rows, write_sweep_summary

from .masks import DEFAULT_MASK_SOURCE
from .provider import train_and_synthesize
from .study_report import ORACLE_LABEL, best_ssl_method, chosen_ratio, report_markdown

log = logging.getLogger(__name__)

SPLIT_SEED = 0  # the sweep's split: the GAN is trained on its labeled pairs


# RunConfig fields the study sets per run or by a flag of its own; each other field is a flag for every run
STUDY_SETS = ("out", "data.data", "data.fractions", "data.labeled_fraction", "data.labeled_cases", "data.split_seed",
              "data.synthetic", "data.synthetic_ratio", "data.ratio_schedule", "data.ratio_end", "data.num_workers",
              "method.name", "train.seed", "train.iterations", "train.device", "train.threads")


def study_base(data: str, profile_name: str, device: str, workers: int = 1,
               run_flags: dict[str, Any] | None = None) -> RunConfig:
    """The profile's base RunConfig with the plan's iteration count and the run-config flags given (by path);
    with several workers, runs load their data in their own process (the other runs use the cores, and a pool's
    processes may not have children)."""
    base = base_config(data, profile(profile_name), device, study_plan(profile_name).iterations, run_flags)
    if workers > 1:
        base.data.num_workers = 0
    return base


# ---------------------------------------------------------------- stages


def _stage(number: int, title: str, where: Path) -> float:
    log.info(f"\n== stage {number}/4: {title} -> {where}")
    return time.time()


def _done(t0: float) -> None:
    log.info(f"   stage done in {time.time() - t0:.0f} s")


def open_study(out: Path, study: dict[str, Any]) -> None:
    """Write OUT/study.json; an OUT holding a study of another profile, data or plan is a UserError."""
    path = out / "study.json"
    if path.is_file():
        old = json.loads(path.read_text())
        fixes = {"profile": f"pass --profile {old.get('profile')} to resume it", "data": "pass its --data to resume it",
                 "plan": "this profile's plan has changed since it ran"}
        for key, fix in fixes.items():
            if old.get(key) != json.loads(json.dumps(study[key])):
                raise UserError(f"--out {out} holds a study with another {key} ({old.get(key)}); {fix}, "
                                "or choose another --out")
    atomic_write_json(path, study)


# ---------------------------------------------------------------- running tasks on several cores


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _call(indexed: tuple[int, tuple[Callable[..., Any], tuple]]) -> tuple[int, Any]:
    k, (fn, args) = indexed
    return k, fn(*args)


def _threaded(threads: int, fn: Callable[..., Any], args: tuple) -> Any:
    """fn(*args) with `threads` torch threads: what one job of an executor runs."""
    _init_worker(threads)
    return fn(*args)


def run_tasks(tasks: list[tuple[Callable[..., Any], tuple]], workers: int, threads: int = 1,
              executor: Any | None = None) -> list[Any]:
    """Results of fn(*args) for each (fn, args), in order: as jobs of a submitit `executor` when given (each with
    `threads` torch threads; failed jobs end in one error naming their logs), else with workers > 1 in that many
    spawned processes of `threads` torch threads each, handed out one task at a time (put the longest first),
    where the first task that fails stops the others and raises its error."""
    if executor is not None and tasks:
        try:
            jobs = [executor.submit(_threaded, threads, fn, args) for fn, args in tasks]
        except (OSError, RuntimeError) as e:  # e.g. no sbatch here
            raise submission_error(e) from None
        log.info(f"   {len(jobs)} job(s) submitted; logs in {executor.folder}")
        return job_results(jobs, [getattr(args[0], "name", fn.__name__) for fn, args in tasks])  # run name or stage
    if workers <= 1 or len(tasks) <= 1:
        return [fn(*args) for fn, args in tasks]
    results: list[Any] = [None] * len(tasks)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(workers, len(tasks)), initializer=_init_worker, initargs=(threads,)) as pool:
        for k, result in pool.imap_unordered(_call, list(enumerate(tasks)), chunksize=1):
            results[k] = result
        pool.close()
        pool.join()
    return results


def grid_tasks(runs: list[GridRun], root: Path) -> list[tuple[Callable[..., Any], tuple]]:
    """(run_one, (run, root)) for the unfinished runs, slowest methods first; says how many are done."""
    todo = [r for r in runs if not grid.is_finished(root / "runs" / r.name)]
    log.info(f"   {len(runs)} runs, {len(runs) - len(todo)} done already")
    todo.sort(key=lambda r: method_class(r.cfg.method.name).relative_cost, reverse=True)  # longest first
    return [(grid.run_one, (run, root)) for run in todo]


# ---------------------------------------------------------------- the pipeline


def synthetic_sets(data: str, fraction: float, split_seed: int, out_dir: Path, profile_name: str, device: str,
                   oracle: bool, group_by: str | None = None, split_file: str | None = None) -> dict[str, str]:
    """Train the GAN on the runs' split and write its synthetic sets: mask source -> synthetic.h5 (the oracle's
    only with `oracle`)."""
    sources = [DEFAULT_MASK_SOURCE] + (["phantom"] if oracle else [])
    sets = {m: str(train_and_synthesize(SynthesisRequest(data, fraction, split_seed, out_dir, profile_name, device,
                                                         mask_source=m, group_by=group_by, split_file=split_file)))
            for m in sources}
    return sets


def sweep_grid(base: RunConfig, fraction: float, synthetic: str, ratios: list[float], methods: list[str],
               seeds: list[int], suffix: str = "") -> list[GridRun]:
    """Constant-ratio runs on split SPLIT_SEED; `suffix` names a set of runs apart (e.g. the oracle's)."""
    sweep_base = copy.deepcopy(base)
    sweep_base.data.split_seed = SPLIT_SEED
    runs = sweep_runs(sweep_base, {fraction: [synthetic]}, ratios, ["constant"], 0.0, methods, seeds)
    return [dataclasses.replace(r, name=r.name + suffix) for r in runs]


def run_study(data: str, profile_name: str, out: Path, device: str, command: str, workers: int = 1,
              threads: int = 1, executor: Any | None = None, run_flags: dict[str, Any] | None = None) -> Path:
    """Run (or resume) the stages into `out` on `workers` processes, or as jobs of a submitit `executor`, every
    run with the run-config flags `run_flags` (by path); returns the report's path."""
    the_plan = study_plan(profile_name)
    base = study_base(data, profile_name, device, workers, run_flags)
    data = base.data.data
    labels = label_key(the_plan.sweep_fraction, None)
    oracle = the_plan.oracle and data.startswith("phantom:")
    study = {"profile": profile_name, "data": data, "plan": dataclasses.asdict(the_plan), "device": device,
             "command": command, "decisions": {"split_seed": SPLIT_SEED, "mask_source": DEFAULT_MASK_SOURCE},
             "run_flags": run_flags or {}}
    open_study(out, study)
    t_start, syn_root = time.time(), out / "synthetic" / labels

    t0 = _stage(1, f"low-label ablation + GAN and synthetic pairs ({workers} worker(s))", out)
    runs = ablation_runs(base, list(the_plan.methods), list(the_plan.fractions), [], list(the_plan.seeds),
                         [base.model.backbone])
    gan_task = (synthetic_sets, (data, the_plan.sweep_fraction, SPLIT_SEED, syn_root, profile_name, device, oracle,
                                 base.data.split_group_by(), base.data.split_file))
    sets = run_tasks([gan_task, *grid_tasks(runs, out / "low_label")], workers, threads, executor)[0]
    low_rows = write_summary(out / "low_label", f"Low-label ablation on {data} ({profile_name} profile)")
    _done(t0)

    t0 = _stage(2, "real-vs-synthetic ratio sweep (supervised)", out / "ratio_sweep")
    sweep_root = out / "ratio_sweep"
    runs = sweep_grid(base, the_plan.sweep_fraction, sets[DEFAULT_MASK_SOURCE], list(the_plan.ratios),
                      ["supervised"], list(the_plan.sweep_seeds))
    run_tasks(grid_tasks(runs, sweep_root), workers, threads, executor)
    ratio = chosen_ratio(sweep_rows(collect(sweep_root)), "supervised", labels)
    study["decisions"]["ratio"] = ratio
    _done(t0)

    t0 = _stage(3, "at the ratio chosen on validation: oracle row, SSL method with synthetic pairs", out)
    tasks = []
    if ratio is not None and oracle:
        tasks += grid_tasks(sweep_grid(base, the_plan.sweep_fraction, sets["phantom"], [ratio], ["supervised"],
                                       list(the_plan.sweep_seeds), "__oracle"), out / "oracle")
    method = best_ssl_method(low_rows, labels)
    if ratio is not None and the_plan.ssl_with_synthetic and method is not None:
        study["decisions"]["ssl_with_synthetic"] = {"method": method, "ratio": ratio}
        log.info(f"   {method} (best SSL method on validation) at ratio {ratio:g} and at 0")
        tasks += grid_tasks(sweep_grid(base, the_plan.sweep_fraction, sets[DEFAULT_MASK_SOURCE], [0.0, ratio],
                                       [method], list(the_plan.sweep_seeds)), sweep_root)
    run_tasks(tasks, workers, threads, executor)
    _done(t0)

    t0 = _stage(4, "tables, figures, report", out / "report.md")
    study["synthetic"] = {m: Path(p).relative_to(out).as_posix() for m, p in sets.items()}
    atomic_write_json(out / "study.json", study)
    report = write_report(out, study)
    _done(t0)
    log.info(f"study finished in {time.time() - t_start:.0f} s: {report}")
    return report


def write_report(out: Path, study: dict[str, Any]) -> Path:
    """Tables, figures and OUT/report.md from the finished runs under `out` and its study.json decisions."""
    data, profile_name = study["data"], study["profile"]
    low_rows = as_reported(write_summary(out / "low_label", f"Low-label ablation on {data} ({profile_name} profile)"))
    sweep = as_reported(write_sweep_summary(out / "ratio_sweep", f"Real-vs-synthetic ratio sweep on {data} "
                                            f"({profile_name} profile)"))
    oracle_rows = as_reported(sweep_rows(collect(out / "oracle")))
    if sweep:
        plot_dice_vs_ratio(sweep, out / "ratio_sweep" / "dice_vs_ratio.png",
                           {ORACLE_LABEL: oracle_rows} if oracle_rows else None)
    syn_rel = Path(study["synthetic"][DEFAULT_MASK_SOURCE]).parent.as_posix()
    report = out / "report.md"
    atomic_write_text(report, report_markdown(out, study, profile(profile_name).seg, low_rows, sweep, oracle_rows,
                                              syn_rel))
    return report


# ---------------------------------------------------------------- command line


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `study` to the ssl-seg command line (the `ssl_seg.commands` entry point)."""
    p = subparsers.add_parser("study", help="end to end: low-label ablation, GAN synthetic pairs, ratio sweep, report")
    p.add_argument("--data", default="phantom:cardiac", help="DATA (bare phantom:<task> gets the profile's size)")
    p.add_argument("--profile", default="quick", help=f"{' | '.join(k for k, p in PROFILES.items() if p.study)} (quick: under 8 min on 2 idle CPU "
                   "cores)")
    p.add_argument("--out", default="runs/study", help="study folder (re-run the same command to resume)")
    p.add_argument("--device", default="auto", help="auto | cuda | cpu")
    p.add_argument("--workers", type=int, help="runs trained at once, each in its own process (default: one per "
                   "CPU core on the CPU, 1 on CUDA)")
    p.add_argument("--threads", type=int, help="torch CPU threads per worker (default on the CPU: 1, since these "
                   "small networks lose far more to thread contention than they gain)")
    add_executor_flags(p)
    p.add_argument("--report-only", action="store_true", help="only rebuild the tables, figures and report of the "
                   "finished study in --out (its run folders need only result.json)")
    p.set_defaults(func=cmd_study, config_flags=add_run_flags(p, skip=STUDY_SETS, notes=GRID_DEFAULTS))


def cmd_study(args: argparse.Namespace) -> None:
    """Set the CPU threads and workers, then run the study."""
    import torch

    from ssl_seg.device import resolve_device

    for flag, value in (("--threads", args.threads), ("--workers", args.workers)):
        if value is not None and value < 1:
            raise UserError(f"{flag} {value}: must be at least 1")
    study_plan(args.profile)
    if args.report_only:
        study_file = Path(args.out) / "study.json"
        if not study_file.is_file() or "synthetic" not in json.loads(study_file.read_text()):
            raise UserError(f"--report-only: {study_file} of a finished study not found; run the study first")
        log.info(f"report: {write_report(Path(args.out), json.loads(study_file.read_text()))}")
        return
    cpu = resolve_device(args.device).type == "cpu"
    workers = args.workers or ((os.cpu_count() or 1) if cpu else 1)
    run_flags = given(args, args.config_flags)
    shown_out = "OUT" if Path(args.out).is_absolute() else args.out  # a report never shows a machine's paths
    command = shlex.join(["ssl-seg", "study", "--data", args.data, "--profile", args.profile, "--out", shown_out,
                          "--device", args.device, *(["--workers", str(args.workers)] if args.workers else []),
                          *(["--threads", str(args.threads)] if args.threads else []),
                          *as_words(args.config_flags, run_flags)])
    threads = torch.get_num_threads()
    if args.threads is not None or cpu:
        torch.set_num_threads(args.threads or 1)
    executor = build_executor(args, Path(args.out))
    per_run = args.threads or (args.slurm_cpus if executor is not None else 1)
    try:
        run_study(args.data, args.profile, Path(args.out), args.device, command, workers, per_run, executor,
                  run_flags)
    finally:
        torch.set_num_threads(threads)
