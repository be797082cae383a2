"""The weight EMA (--weight-ema) on a grid cell: choose its decay on validation, then read validation curves.

choose: train one `ssl-seg ablate` cell (same config, same run name) while following an EMA of the trained
        network at each of --decays, each validated every val_every steps like the run's own networks; print
        the curves and the decay of the rule fixed before the run: the highest mean validation score over the
        validations in the second half of training (where checkpoints are picked; the mean rewards level and
        steadiness); a tie goes to the smaller decay. Writes OUT/choice.json. Not resumable (the EMAs are not
        checkpointed); the cell itself is an ordinary run.
curves: for each run directory (result.json), each evaluated network's validation curve, its largest fall between
        two consecutive validations, and the best-on-validation and last test per-volume Dice.
buffers: the BatchNorm statistics of a --weight-ema run's last checkpoint three ways, scored on its validation
        split: averaged (what the run keeps), copied from the live network, and recomputed for the averaged
        weights from the labeled batches of its last --steps steps (momentum None: their plain mean).

    python benchmarks/weight_ema.py choose --data ../shared/data/hippocampus3d --profile realistic \\
        --method supervised --labeled-cases 2 --seed 0 --lr-schedule constant --decays 0.99 0.995 0.998 0.999 \\
        --out runs/bench/wema_choice
    python benchmarks/weight_ema.py curves runs/bench/hippo_wema/runs/unet__supervised__c2__s*
    python benchmarks/weight_ema.py buffers runs/bench/hippo_wema/runs/unet__supervised__c2__s0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ssl_seg.data.sources import open_source
from ssl_seg.device import amp_dtype, resolve_device
from ssl_seg.engine.hooks import BaseHook, due
from ssl_seg.data.splits import Split
from ssl_seg.engine.checkpoint import load_checkpoint
from ssl_seg.engine.run_models import load_run
from ssl_seg.engine.runner import build_split, patch_for, run_training, step_batches
from ssl_seg.engine.trainer import Trainer
from ssl_seg.engine.weight_ema import WeightEMA, averaged_network
from ssl_seg.evaluation.scoring import evaluate_model, selection_score
from ssl_seg.experiments.ablation import ablation_runs
from ssl_seg.experiments.profiles import base_config, profile
from ssl_seg.io_utils import atomic_write_json


class DecayProbe(BaseHook):
    """EMAs of the trained network at several decays, each validated with `evaluate` every `every` steps."""

    def __init__(self, decays: list[float], evaluate, every: int):
        self.decays, self.evaluate, self.every = decays, evaluate, every
        self.emas: dict[float, WeightEMA] = {}
        self.curves: dict[float, list[tuple[int, float]]] = {d: [] for d in decays}

    def before_train(self, trainer: Trainer) -> None:
        if trainer.state.step != -1:
            raise SystemExit("choose: the cell already holds a run; give a new --out")
        self.emas = {d: WeightEMA(averaged_network(trainer.method), d) for d in self.decays}

    def after_step(self, trainer: Trainer) -> None:
        step = trainer.state.step
        for ema in self.emas.values():
            ema.update(averaged_network(trainer.method), step)
        if due(trainer, self.every):
            for d, ema in self.emas.items():
                self.curves[d].append((step, selection_score(self.evaluate(ema.module))))


def second_half_mean(curve: list[tuple[int, float]], iterations: int) -> float:
    """Mean score of the validations at steps in the second half of training."""
    late = [s for step, s in curve if step + 1 > iterations // 2]
    return sum(late) / len(late)


def choose(args: argparse.Namespace) -> int:
    base = base_config(args.data, profile(args.profile), "cpu")
    base.train.lr_schedule = args.lr_schedule
    run = ablation_runs(base, [args.method], [], [args.labeled_cases], [args.seed], ["unet"], full_reference=False)[0]
    cfg = run.cfg
    cfg.out = str(Path(args.out) / "runs" / run.name)
    source = open_source(cfg.data.data, cfg.data.spatial_dims)
    split = build_split(cfg, source)
    val_ids = split.val[: cfg.train.val_max_samples] if cfg.train.val_max_samples else split.val
    device = resolve_device(cfg.train.device)
    dtype, patch = amp_dtype(device, cfg.train.amp), patch_for(cfg, source)
    probe = DecayProbe(args.decays, lambda m: evaluate_model(m, source, val_ids, patch, device, dtype),
                       cfg.train.val_every)
    result = run_training(cfg, extra_hooks=[probe])
    live = [(h["step"], h["score"]) for h in result["val_history"] if h["model"] == result["best_model"]]
    curves = {"live": live, **{str(d): c for d, c in probe.curves.items()}}
    rule = {name: second_half_mean(c, cfg.train.iterations) for name, c in curves.items()}
    chosen = max(args.decays, key=lambda d: (rule[str(d)], -d))
    steps = [s for s, _ in live]
    print(f"validation score ({len(val_ids)} validation images, per volume where scored), {run.name}")
    print("| network | " + " | ".join(str(s) for s in steps) + " | mean of the second half |")
    print("|---" * (len(steps) + 2) + "|")
    for name, c in curves.items():
        print(f"| {name} | " + " | ".join(f"{s:.3f}" for _, s in c) + f" | {rule[name]:.3f} |")
    print(f"chosen decay: {chosen}")
    atomic_write_json(Path(args.out) / "choice.json", {"run": run.name, "curves": curves, "second_half_mean": rule,
                                                      "chosen": chosen, "torch_threads": torch.get_num_threads()})
    return 0


def largest_fall(scores: list[float]) -> float:
    """Largest drop from one validation to the next (0 when it never falls)."""
    return max([0.0] + [a - b for a, b in zip(scores, scores[1:])])


def test_dice(scores: dict | None) -> float | None:
    """Per-volume test Dice where the data has volumes, else the per-image mean; None when not tested."""
    return None if scores is None else scores.get("volume", scores)["dice"]


def curves(args: argparse.Namespace) -> int:
    print("| run | network | validation scores | largest fall | test Dice best / last (last - best, points) |")
    print("|---|---|---|---|---|")
    for run_dir in args.runs:
        r = json.loads((Path(run_dir) / "result.json").read_text())
        best, last = (test_dice(r.get(k)) for k in ("test", "test_last"))
        for name in dict.fromkeys(h["model"] for h in r["val_history"]):
            scores = [h["score"] for h in r["val_history"] if h["model"] == name]
            tested = (f"{best:.3f} / {last:.3f} ({100 * (last - best):+.1f})"
                      if name == r["best_model"] and None not in (best, last) else "not tested")
            print(f"| {Path(run_dir).name} | {name} | {' '.join(f'{s:.3f}' for s in scores)} | "
                  f"{largest_fall(scores):.3f} | {tested} |")
    return 0


@torch.no_grad()
def recompute_bn(model: torch.nn.Module, images: list[torch.Tensor]) -> None:
    """BatchNorm running statistics of `model` <- their plain mean over training-mode passes on `images`."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for x in images:
        model(x)
    model.eval()


def buffers(args: argparse.Namespace) -> int:
    run = Path(args.run)
    ckpt = load_checkpoint(run / "last.pt")
    model, cfg, _ = load_run(run, "last")
    if cfg.train.weight_ema is None:
        raise SystemExit(f"{run}: not a --weight-ema run")
    source = open_source(cfg.data.data, cfg.data.spatial_dims)
    split = Split.load(run / "split.json")
    val_ids = split.val[: cfg.train.val_max_samples] if cfg.train.val_max_samples else split.val
    device = torch.device("cpu")
    score = lambda m: selection_score(evaluate_model(m, source, val_ids, patch_for(cfg, source), device))
    live = ckpt["models"][next(iter(ckpt["models"]))]
    rows = {"averaged (kept by the run)": score(model)}
    model.load_state_dict({**ckpt["weight_ema"], **{k: v for k, v in live.items() if "running" in k}})
    rows["copied from the live network"] = score(model)
    steps = step_batches(cfg, source, split, 0)
    last = range(cfg.train.iterations - args.steps, cfg.train.iterations)
    recompute_bn(model, [steps[s]["labeled"]["image"] for s in last])
    rows[f"recomputed on the labeled batches of steps {last.start}-{last.stop - 1}"] = score(model)
    print(f"{run.name}, last checkpoint, weight EMA decay {cfg.train.weight_ema}: validation score "
          f"({len(val_ids)} images, per volume where scored) by BatchNorm statistics")
    print("| statistics | validation score |\n|---|---|")
    for name, value in rows.items():
        print(f"| {name} | {value:.3f} |")
    return 0


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("choose", help="choose the decay on validation (one grid cell)")
    c.add_argument("--data", required=True)
    c.add_argument("--profile", default="realistic")
    c.add_argument("--method", default="supervised")
    c.add_argument("--labeled-cases", type=int, required=True)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--lr-schedule", default="constant")
    c.add_argument("--decays", type=float, nargs="+", default=[0.99, 0.995, 0.998, 0.999])
    c.add_argument("--out", required=True)
    v = sub.add_parser("curves", help="validation curves and best / last test Dice of finished runs")
    v.add_argument("runs", nargs="+")
    b = sub.add_parser("buffers", help="BatchNorm statistics of a --weight-ema run: averaged, copied, recomputed")
    b.add_argument("run")
    b.add_argument("--steps", type=int, default=50, help="recompute from the labeled batches of this many last steps")
    args = p.parse_args(argv)
    return {"choose": choose, "curves": curves, "buffers": buffers}[args.command](args)


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main(sys.argv[1:]))
