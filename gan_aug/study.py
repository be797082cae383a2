"""`ssl-seg study`: low-label ablation -> GAN synthetic pairs -> real-vs-synthetic ratio sweep -> OUT/report.md.

Added to the ssl-seg command line through the `ssl_seg.commands` entry point (ssl_seg never imports gan_aug).
Every stage resumes: finished runs, the trained GAN and the synthetic set are kept, so re-running the same
command redoes nothing finished and only rebuilds the tables, figures and report.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssl_seg.ablation import Profile, ablation_runs, base_config, gap_recovery, group, label_key, mean_std
from ssl_seg.ablation import profile as ssl_profile
from ssl_seg.ablation import write_summary
from ssl_seg.config import RunConfig
from ssl_seg.errors import UserError
from ssl_seg.grid import collect, run_grid
from ssl_seg.io_utils import atomic_write_json, atomic_write_text
from ssl_seg.sweep import gain_over_real, sweep_rows, sweep_runs, write_sweep_summary

from .provider import GAN_SUBDIR, train_and_synthesize

SPLIT_SEED = 0  # the sweep's split: the GAN is trained on its labeled pairs


@dataclass(frozen=True)
class StudyPlan:
    """What a study runs on top of a segmentation profile (PROFILES) of the same name."""

    methods: tuple[str, ...]  # low-label ablation methods
    fractions: tuple[float, ...]  # their labeled fractions (the full-label supervised reference is added)
    seeds: tuple[int, ...]  # ablation seeds; seed s also draws split s
    sweep_fraction: float  # the labeled fraction whose pairs train the GAN and the ratio sweep
    ratios: tuple[float, ...]  # synthetic shares of the labeled batch, 0 (real only) first
    sweep_seeds: tuple[int, ...]  # training seeds of the sweep (split seed SPLIT_SEED)
    ssl_with_synthetic: bool  # also train the best SSL method at the best non-zero ratio (and at ratio 0)
    iterations: int | None = None  # segmentation steps per run (None: the profile's)


PLANS: dict[str, StudyPlan] = {
    "tiny": StudyPlan(methods=("supervised", "mean-teacher"), fractions=(0.25,), seeds=(0,), sweep_fraction=0.25,
                      ratios=(0.0, 0.5), sweep_seeds=(0,), ssl_with_synthetic=True),
    # quick: ~9 min on a busy 2-core CPU with one torch thread: 8 ablation runs, a 600-step GAN, 4 sweep runs and
    # the best SSL method at ratio 0 and at the best ratio, 250 steps each (at the profile's 120 the full-label
    # reference is far from converged).
    "quick": StudyPlan(methods=("supervised", "mean-teacher", "unimatch"), fractions=(0.1,), seeds=(0, 1),
                       sweep_fraction=0.1, ratios=(0.0, 0.25, 0.5, 1.0), sweep_seeds=(0,), ssl_with_synthetic=True,
                       iterations=250),
    "standard": StudyPlan(methods=("supervised", "mean-teacher", "pseudo-label", "cps", "unimatch"),
                          fractions=(0.05, 0.1), seeds=(0, 1, 2), sweep_fraction=0.05,
                          ratios=(0.0, 0.25, 0.5, 0.75, 1.0), sweep_seeds=(0, 1, 2), ssl_with_synthetic=True),
}


def plan(name: str) -> StudyPlan:
    """The study plan of profile `name`; unknown names list the valid ones."""
    ssl_profile(name)
    if name not in PLANS:
        raise UserError(f"--profile {name}: no study plan for it; valid: {', '.join(PLANS)}")
    return PLANS[name]


def study_base(data: str, profile_name: str, device: str) -> RunConfig:
    """The profile's base RunConfig with the plan's iteration count."""
    base, iterations = base_config(data, ssl_profile(profile_name), device), plan(profile_name).iterations
    if iterations:
        base.train.iterations = base.train.image_every = iterations
        base.train.val_every = min(base.train.val_every, iterations)
    return base


# ---------------------------------------------------------------- what the numbers say


def method_means(rows: list[dict[str, Any]], labels: str) -> dict[str, tuple[float, float, int]]:
    """method -> (mean, std, n) test Dice over seeds at label budget `labels`."""
    return {m: mean_std([r["dice"] for r in sub]) for (m,), sub in group(
        [r for r in rows if r["labels"] == labels], ("method",)).items()}


def best_method(rows: list[dict[str, Any]], labels: str, ssl_only: bool = False) -> str | None:
    """The method with the best mean test Dice at `labels` (SSL methods only with ssl_only); ties go to supervised."""
    means = {m: v[0] for m, v in method_means(rows, labels).items()
             if np.isfinite(v[0]) and not (ssl_only and m == "supervised")}
    return max(means, key=lambda m: (means[m], m == "supervised")) if means else None


def ratio_means(rows: list[dict[str, Any]], method: str, labels: str) -> dict[float, tuple[float, float, int]]:
    """ratio -> (mean, std, n) test Dice of the constant-schedule runs of `method` at `labels`."""
    sub = [r for r in rows if r["method"] == method and r["labels"] == labels and r["schedule"] == "constant"]
    return {ratio: mean_std([r["dice"] for r in v]) for (ratio,), v in group(sub, ("ratio",)).items()}


def best_ratio(rows: list[dict[str, Any]], method: str, labels: str, nonzero: bool = False) -> float | None:
    """The constant ratio with the highest mean Dice for `method` at `labels` (ratio 0 excluded with nonzero);
    ties go to the smaller ratio."""
    means = {r: v[0] for r, v in ratio_means(rows, method, labels).items()
             if np.isfinite(v[0]) and not (nonzero and r == 0)}
    return max(means, key=lambda r: (means[r], -r)) if means else None


def findings(low_rows: list[dict[str, Any]], sweep: list[dict[str, Any]], labels: str) -> list[str]:
    """Markdown bullet points computed from the ablation and sweep rows."""
    out = []
    full = method_means(low_rows, "f1").get("supervised")
    for lab in sorted({r["labels"] for r in low_rows} - {"f1"}, key=lambda k: float(k[1:])):
        means, best = method_means(low_rows, lab), best_method(low_rows, lab)
        if best is None:
            continue
        n_lab = int(np.mean([r["n_labeled"] for r in low_rows if r["labels"] == lab]))
        m, _, n = means[best]
        text = f"- **Labels {lab}** ({n_lab} labeled): best method **{best}**, test Dice {m:.3f} ({n} seed(s))"
        sup = means.get("supervised")
        if best != "supervised" and sup is not None:
            text += f", {m - sup[0]:+.3f} over supervised ({sup[0]:.3f})"
            recovered = gap_recovery(low_rows, low_rows[0]["backbone"]).get((best, lab))
            if recovered is not None:
                text += f"; it recovers {recovered:.0%} of the gap to full labels"
        elif best == "supervised":
            runner_up = best_method(low_rows, lab, ssl_only=True)
            if runner_up is not None:
                text += f"; no SSL method beat it (best SSL: {runner_up}, {means[runner_up][0]:.3f})"
        out.append(text + ".")
    if full is not None:
        out.append(f"- Full-label supervised reference: test Dice {full[0]:.3f}.")
    for method in sorted({r["method"] for r in sweep if r["labels"] == labels}, key=lambda m: m != "supervised"):
        means = ratio_means(sweep, method, labels)
        best, best_nz = best_ratio(sweep, method, labels), best_ratio(sweep, method, labels, nonzero=True)
        if best is None or 0.0 not in means:
            continue
        text = (f"- **Ratio sweep, {method}, labels {labels}**: best ratio **{best:g}** (Dice {means[best][0]:.3f}; "
                f"real only {means[0.0][0]:.3f})")
        if best_nz is not None:
            g, gs, p, n = gain_over_real(sweep, method, labels, "constant", best_nz)
            p_txt = f", paired p = {p:.3f}" if np.isfinite(p) else ""
            text += f"; the best synthetic ratio {best_nz:g} changes Dice by {g:+.3f} +- {gs:.3f} ({n} seed(s){p_txt})"
        if 1.0 in means:
            text += f"; synthetic pairs alone (ratio 1) give {means[1.0][0]:.3f}"
        if method != "supervised":
            text += " (the ablation's best SSL method, at the supervised sweep's best synthetic ratio)"
        out.append(text + ".")
    return out + [seed_caveat(low_rows, sweep)]


def seed_caveat(low_rows: list[dict[str, Any]], sweep: list[dict[str, Any]]) -> str:
    """How many seeds back the numbers, and the largest seed-to-seed Dice std of the ablation."""
    cells = [*group(low_rows, ("method", "labels")).values(), *group(sweep, ("method", "labels", "ratio")).values()]
    seeds = min((len({r["seed"] for r in cell}) for cell in cells), default=0)
    spreads = [(mean_std([r["dice"] for r in cell])[1], key) for key, cell in group(
        low_rows, ("method", "labels")).items() if len({r["seed"] for r in cell}) > 1]
    text = f"- Seeds: as few as {seeds} per cell"
    if spreads:
        std, (method, labels) = max(spreads)
        text += (f". Seed-to-seed std of test Dice reaches {std:.3f} ({method}, {labels}): single-seed "
                 "differences smaller than that are not established")
    return text + "."


# ---------------------------------------------------------------- the report


def demote(markdown: str, levels: int = 2) -> str:
    """Markdown with every heading pushed `levels` deeper (to embed a document under a section)."""
    return re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + levels) + " ", markdown, flags=re.MULTILINE)


def _link(out: Path, rel: str, what: str) -> str | None:
    return f"- [{rel}]({rel}): {what}" if (out / rel).exists() else None


def report_markdown(out: Path, study: dict[str, Any], prof: Profile, low_rows: list[dict[str, Any]],
                    sweep: list[dict[str, Any]], synthetic: Path) -> str:
    """OUT/report.md: findings, the ablation and sweep tables and figures, the synthetic set, where files lie."""
    p, labels = study["plan"], label_key(study["plan"]["sweep_fraction"], None)
    syn_dir = synthetic.parent
    syn_rel, gan_rel = syn_dir.relative_to(out).as_posix(), (syn_dir.parent / GAN_SUBDIR).relative_to(out).as_posix()
    manifest = json.loads((syn_dir / "manifest.json").read_text())
    gan = json.loads((out / gan_rel / "result.json").read_text())
    iterations = p["iterations"] or prof.iterations
    val_l1 = "n/a" if gan["val_l1"] is None else f"{gan['val_l1']:.4f}"
    lines = [f"# Study: scarce labels and synthetic pairs on `{study['data']}`", "",
             f"Profile `{study['profile']}`: U-Net, {iterations} iterations ({prof.optimizer}, lr {prof.lr:g}), "
             f"batch {prof.batch_size}, {prof.patch_size} px patches, {prof.base_channels} base channels; "
             f"device `{study['device']}`. Re-run the same command to resume; finished work is skipped.", "",
             "```", study["command"], "```", "", "## Findings", "",
             *findings(low_rows, sweep, labels), "",
             "## 1. Low-label ablation", "",
             f"Methods {', '.join(p['methods'])} at labeled fractions {', '.join(f'{f:g}' for f in p['fractions'])} "
             f"(seeds {', '.join(map(str, p['seeds']))}; seed s also draws split s) and the full-label "
             "supervised reference.", "",
             "![test Dice against labeled fraction](low_label/dice_vs_labels.png)", "",
             "![share of the label gap recovered](low_label/gap_recovery.png)", "",
             demote((out / "low_label" / "summary.md").read_text()), "",
             "## 2. Synthetic pairs", "",
             f"A pix2pix GAN trained for {gan['iterations']} steps on the {gan['n_labeled']} labeled pairs of split "
             f"{SPLIT_SEED} at labeled fraction {p['sweep_fraction']:g} (validation L1 {val_l1}, "
             f"{gan['wall_time_s']:.0f} s), "
             f"then {manifest['n']} pairs generated from `{manifest['mask_source']}` masks "
             f"({manifest['throughput_pairs_per_s']:.0f} pairs/s). Left: mask, right: generated image.", "",
             f"![synthetic pairs]({syn_rel}/samples.png)", "",
             "## 3. Real-vs-synthetic ratio sweep", "",
             f"Supervised at labeled fraction {p['sweep_fraction']:g}, split {SPLIT_SEED}, ratios "
             f"{', '.join(f'{r:g}' for r in p['ratios'])} (share of synthetic pairs in each labeled batch), seeds "
             f"{', '.join(map(str, p['sweep_seeds']))}"
             + (f"; then the ablation's best SSL method, {leg['method']}, at ratio 0 and at the best synthetic "
                f"ratio {leg['ratio']:g}." if (leg := study.get("ssl_with_synthetic")) else "."), "",
             "![test Dice against synthetic ratio](ratio_sweep/dice_vs_ratio.png)", "",
             demote((out / "ratio_sweep" / "summary.md").read_text()), "",
             "## Artefacts", ""]
    artefacts = [
        ("study.json", "the study's profile, data, plan and decisions"),
        ("low_label/summary.md", "ablation table"), ("low_label/summary.csv", "one row per ablation run"),
        ("low_label/dice_vs_labels.png", "figure"), ("low_label/gap_recovery.png", "figure"),
        ("low_label/runs", "one folder per ablation run (config.json, split.json, best.pt, last.pt, tb/, result.json)"),
        (gan_rel, "the GAN run (config.json, split.json, checkpoint.pt, tb/, result.json)"),
        (f"{syn_rel}/{synthetic.name}", "the synthetic pairs (project HDF5; pass to --synthetic)"),
        (f"{syn_rel}/manifest.json", "how they were made"), (f"{syn_rel}/samples.png", "preview"),
        ("ratio_sweep/summary.md", "sweep table"), ("ratio_sweep/summary.csv", "one row per sweep run"),
        ("ratio_sweep/dice_vs_ratio.png", "figure"), ("ratio_sweep/runs", "one folder per sweep run"),
    ]
    lines += [line for rel, what in artefacts if (line := _link(out, rel, what))]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the pipeline


def _stage(number: int, title: str, where: Path) -> float:
    print(f"\n== stage {number}/4: {title} -> {where}", flush=True)
    return time.time()


def _done(t0: float) -> None:
    print(f"   stage done in {time.time() - t0:.0f} s", flush=True)


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


def ratio_sweep(base: RunConfig, the_plan: StudyPlan, synthetic: Path, low_rows: list[dict[str, Any]],
                root: Path) -> dict[str, Any] | None:
    """Supervised at every ratio, then the ablation's best SSL method at ratio 0 and the best non-zero ratio;
    returns that choice ({"method", "ratio"}) or None."""
    sweep_base = copy.deepcopy(base)
    sweep_base.data.split_seed = SPLIT_SEED
    pairs, seeds = {the_plan.sweep_fraction: [str(synthetic)]}, list(the_plan.sweep_seeds)
    runs = sweep_runs(sweep_base, pairs, list(the_plan.ratios), ["constant"], 0.0, ["supervised"], seeds)
    run_grid(runs, root)
    if not the_plan.ssl_with_synthetic:
        return None
    labels = label_key(the_plan.sweep_fraction, None)
    method = best_method(low_rows, labels, ssl_only=True)
    ratio = best_ratio(sweep_rows(collect(root, [r.name for r in runs])), "supervised", labels, nonzero=True)
    if method is None or ratio is None:
        return None
    print(f"   best SSL method {method} at the best synthetic ratio {ratio:g} (and at 0)", flush=True)
    run_grid(sweep_runs(sweep_base, pairs, [0.0, ratio], ["constant"], 0.0, [method], seeds), root)
    return {"method": method, "ratio": ratio}


def run_study(data: str, profile_name: str, out: Path, device: str, command: str) -> Path:
    """Run (or resume) the four stages into `out`; returns the report's path."""
    prof, the_plan = ssl_profile(profile_name), plan(profile_name)
    base = study_base(data, profile_name, device)
    data = base.data.data
    labels = label_key(the_plan.sweep_fraction, None)
    study = {"profile": profile_name, "data": data, "plan": dataclasses.asdict(the_plan), "device": device,
             "command": command, "stages": {"low_label": "low_label", "synthetic": f"synthetic/{labels}",
                                            "ratio_sweep": "ratio_sweep", "report": "report.md"}}
    open_study(out, study)
    t_start = time.time()

    t0 = _stage(1, "low-label ablation", out / "low_label")
    runs = ablation_runs(base, list(the_plan.methods), list(the_plan.fractions), [], list(the_plan.seeds),
                         [base.model.backbone])
    run_grid(runs, out / "low_label")
    low_rows = write_summary(out / "low_label", f"Low-label ablation on {data} ({profile_name} profile)")
    _done(t0)

    t0 = _stage(2, "GAN on the labeled pairs + synthetic set", out / "synthetic" / labels)
    synthetic = train_and_synthesize(data, the_plan.sweep_fraction, SPLIT_SEED, out / "synthetic" / labels,
                                     profile_name, device)
    _done(t0)

    t0 = _stage(3, "real-vs-synthetic ratio sweep", out / "ratio_sweep")
    leg = ratio_sweep(base, the_plan, synthetic, low_rows, out / "ratio_sweep")
    if leg is not None:
        study["ssl_with_synthetic"] = leg
    sweep = write_sweep_summary(out / "ratio_sweep",
                                f"Real-vs-synthetic ratio sweep on {data} ({profile_name} profile)")
    _done(t0)

    t0 = _stage(4, "report", out / "report.md")
    study["synthetic"] = synthetic.relative_to(out).as_posix()
    atomic_write_json(out / "study.json", study)
    report = out / "report.md"
    atomic_write_text(report, report_markdown(out, study, prof, low_rows, sweep, synthetic))
    _done(t0)
    print(f"study finished in {time.time() - t_start:.0f} s: {report}")
    return report


# ---------------------------------------------------------------- command line


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `study` to the ssl-seg command line (the `ssl_seg.commands` entry point)."""
    p = subparsers.add_parser("study", help="end to end: low-label ablation, GAN synthetic pairs, ratio sweep, report")
    p.add_argument("--data", default="phantom:cardiac", help="DATA (bare phantom:<task> gets the profile's size)")
    p.add_argument("--profile", default="quick", help=f"{' | '.join(PLANS)} (quick: about 10 min on 2 CPU cores)")
    p.add_argument("--out", default="runs/study", help="study folder (re-run the same command to resume)")
    p.add_argument("--device", default="auto", help="auto | cuda | cpu")
    p.add_argument("--threads", type=int, help="torch CPU threads (default on the CPU: 1, since these small "
                   "networks lose far more to thread contention on a shared CPU than they gain)")
    p.set_defaults(func=cmd_study)


def cmd_study(args: argparse.Namespace) -> None:
    """Set the CPU threads, then run the study."""
    import torch

    from ssl_seg.device import resolve_device

    if args.threads is not None and args.threads < 1:
        raise UserError(f"--threads {args.threads}: must be at least 1")
    plan(args.profile)
    command = shlex.join(["ssl-seg", "study", "--data", args.data, "--profile", args.profile, "--out", args.out,
                          "--device", args.device, *(["--threads", str(args.threads)] if args.threads else [])])
    threads = torch.get_num_threads()
    if args.threads is not None or resolve_device(args.device).type == "cpu":
        torch.set_num_threads(args.threads or 1)
    try:
        run_study(args.data, args.profile, Path(args.out), args.device, command)
    finally:
        torch.set_num_threads(threads)
