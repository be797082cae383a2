"""Where a grid's cells run: here, one after another (`local`), or one Slurm job each through submitit (`slurm`).

submitit is the Slurm client of the PyTorch research world (facebookincubator/submitit): it pickles the call,
writes the sbatch script, and brings back each job's result or its error and log paths. It is an optional
extra (`pip install medseg-lab[slurm]`), imported only when `--executor slurm` is asked for.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import UserError

EXECUTORS = ("local", "slurm")


def add_executor_flags(p: argparse.ArgumentParser) -> None:
    """--executor and the Slurm job resources of `ssl-seg ablate` / `sweep` / `study` (and any grid command)."""
    p.add_argument("--executor", default="local",
                   help="local (runs here) | slurm (one Slurm job per unfinished run, via submitit)")
    p.add_argument("--slurm-partition", help="Slurm partition of the jobs (default: the cluster's)")
    p.add_argument("--slurm-time", type=int, default=240, help="minutes each job may run (default 240)")
    p.add_argument("--slurm-cpus", type=int, default=4, help="CPUs per job; also its torch threads (default 4)")
    p.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per job (default 0)")


def add_threads_flag(p: argparse.ArgumentParser) -> None:
    """--threads of a grid command: torch threads of every cell."""
    p.add_argument("--threads", type=int, help="torch threads of every cell (default: its job's CPUs under Slurm, "
                   "else torch's default; use 1 per process when several grid processes share a machine)")


def add_grid_flags(p: argparse.ArgumentParser) -> None:
    """The flags every grid command shares (after its --profile): budget override, sharding, where cells run, output."""
    p.add_argument("--iterations", type=int, help="override the profile's iterations")
    p.add_argument("--shard", help="i/N: run every N-th run starting at i (spread a grid over machines)")
    add_executor_flags(p)
    add_threads_flag(p)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--out", required=True, help="grid directory (runs/, summary.*)")
    p.add_argument("--summary-only", action="store_true", help="only rebuild the tables and figures")


def submission_error(e: Exception) -> UserError:
    """The one-line error for jobs that could not be submitted (e.g. no sbatch on this machine)."""
    return UserError(f"--executor: could not submit the jobs ({str(e).splitlines()[0]}); "
                     "run on a Slurm login node or use --executor local")


def job_results(jobs: list[Any], labels: list[str]) -> list[Any]:
    """Each job's result in order, once all have ended; failed jobs end in one UserError naming their logs."""
    results, failed = [], []
    for label, job in zip(labels, jobs):
        try:
            results.append(job.result())
        except Exception:  # the job's own error and traceback are in its log
            failed.append(f"{label} (log {job.paths.stderr})")
            results.append(None)
    if failed:
        raise UserError(f"{len(failed)} job(s) failed: {'; '.join(failed)}; fix the cause and relaunch "
                        "(finished runs are skipped)")
    return results


def build_executor(args: argparse.Namespace, root: Path) -> Any | None:
    """None for `local`; for `slurm` a submitit executor writing its scripts and logs under ROOT/submitit."""
    name = getattr(args, "executor", "local") or "local"
    if name not in EXECUTORS:
        raise UserError(f"--executor {name}: use one of {', '.join(EXECUTORS)}")
    if name == "local":
        return None
    try:
        import submitit
    except ImportError:
        raise UserError("--executor slurm needs submitit; pip install 'medseg-lab[slurm]' (or: pip install submitit)")
    for flag, value in (("--slurm-time", args.slurm_time), ("--slurm-cpus", args.slurm_cpus)):
        if value < 1:
            raise UserError(f"{flag} {value}: must be at least 1")
    try:
        executor = submitit.AutoExecutor(folder=root / "submitit", cluster="slurm")
    except (OSError, RuntimeError) as e:  # e.g. 'Could not detect "srun"' off a cluster
        raise submission_error(e) from None
    params: dict[str, Any] = {"timeout_min": args.slurm_time, "cpus_per_task": args.slurm_cpus,
                              "gpus_per_node": args.slurm_gpus, "name": f"medseg-{root.name}"}
    if args.slurm_partition:
        params["slurm_partition"] = args.slurm_partition
    executor.update_parameters(**params)
    return executor
