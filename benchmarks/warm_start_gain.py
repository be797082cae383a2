"""Secondary comparisons of the pre-registered warm-start cells: hippo_c2_warm and hippo_c2_warm2 (hippocampus slices),
hc18_half_warm and hc18_half_warm_bcp (HC18 half-size copy); of hippo_f005_warm and hippo_f005_frozen (hippocampus at
5 %, `--study hippocampus_5pct`); of hippo_c1_warm and hippo_c1_warm_bcp (hippocampus at 1 labeled volume, seeds 10-14,
`--study hippocampus_1vol`) and its replication on seeds 15-20 (hippo_c1_warm_rep, `--study hippocampus_1vol_rep`);
and of the synthetic-pair cells hippo_c2_syn and hippo_c2_warm_syn (`--study hippocampus_synthetic`).

Seed-paired (the same seed draws the same split in every arm), in Dice points of the primary endpoint (test Dice per
volume of the checkpoint chosen on validation): each arm per seed, where each warm run's best.pt comes from (its start,
step -1, or a later step), its cost (training seconds, the start's included), and the secondary differences the
predictions name; the validation drop of each run from its peak to its last check (steps >= 0, so a warm run's start
is left out). With the runs' folders (`--runs`, default runs/), also the share of confident unlabeled pixels over
the last 200 logged steps (TensorBoard `stat/mask_ratio`). Secondary by the protocol: 95 % t-intervals, never a claim.

    python benchmarks/warm_start_gain.py
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python benchmarks/warm_start_gain.py` from the root
from benchmarks.leaderboard import arm_runs, points  # noqa: E402
from ssl_seg.experiments.stats import (fmt_family, fmt_gain, fmt_interval, fmt_mean_std,  # noqa: E402
                                       paired_interval, verdict)

RESULTS = ROOT / "benchmarks" / "results"
SUP = "supervised (chosen on validation)"


@dataclass(frozen=True)
class Study:
    """The warm-start cells of one data set: arms (result folders, and run folders under --runs with TensorBoard logs),
    each cell's pre-registered family, the secondary comparisons, and where the starts' results are."""

    title: str
    arms: dict[str, tuple[list[str], str | None]]
    families: dict[str, list[tuple[str, str]]]
    secondary: list[tuple[str, str]]
    starts: str
    seeds: tuple[int, ...] = (10, 11, 12)


STUDIES = {
    "hippocampus": Study(
        "hippocampus slices, 2 labeled volumes (hippo_c2_warm, hippo_c2_warm2)",
        {SUP: (["prereg_hc2/sup_const/*", "prereg_hc2/sup_poly/*"], None),
         "start (supervised, poly)": (["prereg_hc2/sup_poly/*"], None),
         "unimatch, cold": (["prereg_hc2/uni_poly/*"], "prereg_hc2/uni_poly/runs/unet__unimatch__c2__s{seed}"),
         "supervised+warm": (["prereg_hc2_warm/sup_warm/*"], None),
         "unimatch+warm": (["prereg_hc2_warm/uni_warm/*"], "prereg_hc2_warm/runs/unet__unimatch+warm__c2__s{seed}"),
         "bcp+warm": (["prereg_hc2_warm2/bcp/*"], None),
         "unimatch+warm, freematch": (["prereg_hc2_warm2/fm/*"],
                                      "prereg_hc2_warm2/fm/runs/unet__unimatch+warm__c2__s{seed}")},
        {"hippo_c2_warm": [("unimatch+warm", SUP), ("supervised+warm", SUP)],
         "hippo_c2_warm2": [("bcp+warm", SUP), ("unimatch+warm, freematch", SUP)]},
        [("unimatch+warm", "supervised+warm"), ("unimatch+warm", "unimatch, cold"),
         ("supervised+warm", "start (supervised, poly)"), ("unimatch+warm", "start (supervised, poly)"),
         ("unimatch+warm, freematch", "unimatch+warm"), ("bcp+warm", "start (supervised, poly)")],
        "prereg_hc2/sup_poly/*"),
    "hc18": Study(
        "HC18 half-size copy, 5 % labels (hc18_half_warm, amendment 1: supervised poly only, 500 warm steps; "
        "hc18_half_warm_bcp: its BCP arm, run a session later)",
        {"supervised (poly)": (["prereg_hc18w/sup_poly/*"], None),
         "unimatch+warm": (["prereg_hc18w/uni/*"], "prereg_hc18w/uni/runs/unet__unimatch+warm__f0.05__s{seed}"),
         "bcp+warm": (["prereg_hc18w_bcp/bcp/*"], None)},
        {"hc18_half_warm": [("unimatch+warm", "supervised (poly)")],
         "hc18_half_warm_bcp": [("bcp+warm", "supervised (poly)")],
         "hc18_half_warm as first pre-registered (m = 2)": [("unimatch+warm", "supervised (poly)"),
                                                             ("bcp+warm", "supervised (poly)")]},
        [("unimatch+warm", "bcp+warm")],
        "prereg_hc18w/sup_poly/*"),
    "hippocampus_5pct": Study(
        "hippocampus slices, 5 % labels (hippo_f005_warm, hippo_f005_frozen)",
        {"supervised (poly)": (["prereg_hf05/sup_poly/*"], None),
         "supervised+warm": (["prereg_hf05_warm/sup_warm/*"], None),
         "unimatch+warm": (["prereg_hf05_warm/uni_warm/*"],
                           "prereg_hf05_warm/runs/unet__unimatch+warm__f0.05__s{seed}"),
         "unimatch+warm, frozen teacher": (["prereg_hf05_frozen/uni_frozen/*"],
                                           "prereg_hf05_frozen/runs/unet__unimatch+warm__f0.05__s{seed}")},
        {"hippo_f005_warm": [("unimatch+warm", "supervised (poly)"), ("supervised+warm", "supervised (poly)")],
         "hippo_f005_frozen": [("unimatch+warm, frozen teacher", "unimatch+warm")]},
        [("unimatch+warm", "supervised+warm"), ("unimatch+warm, frozen teacher", "supervised (poly)")],
        "prereg_hf05/sup_poly/*"),
    "hippocampus_1vol": Study(
        "hippocampus slices, 1 labeled volume (hippo_c1_warm, hippo_c1_warm_bcp)",
        {"supervised (poly)": (["prereg_hc1/sup_poly/*"], None),
         "supervised+warm": (["prereg_hc1_warm/sup_warm/*"], None),
         "unimatch+warm": (["prereg_hc1_warm/uni_warm/*"], "prereg_hc1_warm/runs/unet__unimatch+warm__c1__s{seed}"),
         "bcp+warm": (["prereg_hc1_warm_bcp/bcp_warm/*"], None)},
        {"hippo_c1_warm": [("unimatch+warm", "supervised (poly)"), ("supervised+warm", "supervised (poly)")],
         "hippo_c1_warm_bcp": [("bcp+warm", "supervised (poly)")]},
        [("unimatch+warm", "supervised+warm"), ("bcp+warm", "unimatch+warm")],
        "prereg_hc1/sup_poly/*", (10, 11, 12, 13, 14)),
    "hippocampus_1vol_rep": Study(
        "hippocampus slices, 1 labeled volume, the replication on new seeds 15-20 (hippo_c1_warm_rep; never pooled "
        "with seeds 10-14)",
        {"supervised (poly)": (["prereg_hc1r/sup_poly/*"], None),
         "unimatch+warm": (["prereg_hc1r_warm/uni_warm/*"], "prereg_hc1r_warm/runs/unet__unimatch+warm__c1__s{seed}")},
        {"hippo_c1_warm_rep": [("unimatch+warm", "supervised (poly)")]},
        [],
        "prereg_hc1r/sup_poly/*", (15, 16, 17, 18, 19, 20)),
    "hippocampus_synthetic": Study(
        "hippocampus slices, 2 labeled volumes, generated pairs from a pix2pix per seed (hippo_c2_syn, "
        "hippo_c2_warm_syn)",
        {SUP: (["prereg_hc2/sup_const/*", "prereg_hc2/sup_poly/*"], None),
         "supervised, poly": (["prereg_hc2/sup_poly/*"], None),
         "synthetic R = 0.25": (["prereg_hc2_syn/r0.25/*"], None),
         "synthetic R = 0.5": (["prereg_hc2_syn/r0.5/*"], None),
         "synthetic, ratio on validation": (["prereg_hc2/sup_const/*", "prereg_hc2/sup_poly/*",
                                             "prereg_hc2_syn/r0.25/*", "prereg_hc2_syn/r0.5/*"], None),
         "unimatch+warm": (["prereg_hc2_warm/uni_warm/*"], "prereg_hc2_warm/runs/unet__unimatch+warm__c2__s{seed}"),
         "unimatch+warm, synthetic R = 0.25": (["prereg_hc2_warm_syn/r0.25/unet__unimatch+warm__c2__s*"],
                                               "prereg_hc2_warm_syn/r0.25/runs/unet__unimatch+warm__c2__s{seed}"),
         "unimatch+warm, synthetic on validation": (["prereg_hc2_warm/uni_warm/*",
                                                     "prereg_hc2_warm_syn/r0.25/unet__unimatch+warm__c2__s*"], None)},
        {"hippo_c2_syn": [("synthetic, ratio on validation", SUP)],
         "hippo_c2_warm_syn": [("unimatch+warm, synthetic on validation", "unimatch+warm")]},
        [("synthetic R = 0.25", "supervised, poly"), ("synthetic R = 0.5", "supervised, poly"),
         ("synthetic R = 0.5", "synthetic R = 0.25"), ("unimatch+warm, synthetic R = 0.25", "unimatch+warm"),
         ("unimatch+warm, synthetic R = 0.25", SUP)],
        "prereg_hc2/sup_poly/*"),
}


def train_seconds(run_dir: Path, starts: str) -> float:
    """Training seconds of a run, plus its start's (a run among `starts`) when it was warm-started (model.init_from)."""
    result = json.loads((run_dir / "result.json").read_text())
    seconds = result["s_per_iteration"] * result["iterations"]
    init = json.loads((run_dir / "config.json").read_text())["model"].get("init_from")
    if init:
        start = next((d for d in sorted(RESULTS.glob(starts)) if d.name == Path(init).name), None)
        if start is not None:
            seconds += train_seconds(start, starts)
    return seconds


def mask_ratio(run_dir: Path) -> float | None:
    """Mean TensorBoard stat/mask_ratio over the last 200 logged steps of a run (None without its logs)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not (run_dir / "tb").is_dir():
        return None
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    events.Reload()
    if "stat/mask_ratio" not in events.Tags()["scalars"]:
        return None
    scalars = events.Scalars("stat/mask_ratio")
    last = [s.value for s in scalars if s.step >= scalars[-1].step - 200]
    return sum(last) / len(last)


def validation_drop(result: dict) -> float:
    """Peak minus last validation score (points) of a result's checkpoint-choosing network over its checks at steps
    >= 0."""
    chosen = result.get("best_model") or result["val_history"][0]["model"]
    scores = [h["score"] for h in result["val_history"] if h["step"] >= 0 and h["model"] == chosen]
    return 100 * (max(scores) - scores[-1])


def report(study: Study, runs_root: Path) -> None:
    """Print one study's per-seed table, its families (Holm) and the secondary differences."""
    seeds = list(study.seeds)
    runs = {arm: arm_runs(RESULTS, patterns, seeds) for arm, (patterns, _) in study.arms.items()}
    score = {arm: points(by_seed) for arm, by_seed in runs.items()}
    print(f"### {study.title}")
    print()
    print("| arm | primary endpoint, Dice points (per seed) | mean +- std | best.pt from (per seed) | training s, start "
          "included (mean) | confident share, last 200 steps | validation peak - last, points |")
    print("|---|---|---|---|---|---|---|")
    for arm, by_seed in runs.items():
        if not by_seed:
            print(f"| {arm} | not run | | | | | |")
            continue
        several = len(study.arms[arm][0]) > 1  # name the candidate chosen on validation
        per_seed = ", ".join(f"s{s} {v:.1f}" + (f" ({by_seed[s].path.parent.name})" if several else "")
                             for s, v in sorted(score[arm].items()))
        results = {s: json.loads((r.path / "result.json").read_text()) for s, r in sorted(by_seed.items())}
        steps = ", ".join(f"s{s} {'start' if r['best_step'] == -1 else r['best_step']}" for s, r in results.items())
        cost = sum(train_seconds(r.path, study.starts) for r in by_seed.values()) / len(by_seed)
        logs = study.arms[arm][1]
        ratios = [mask_ratio(runs_root / logs.format(seed=s)) for s in seeds] if logs else []
        shown = ", ".join(f"s{s} {v:.3f}" for s, v in zip(seeds, ratios) if v is not None) or "-"
        drops = ", ".join(f"s{s} {validation_drop(r):.1f}" for s, r in results.items())
        print(f"| {arm} | {per_seed} | {fmt_mean_std(score[arm].values())} | {steps} | {cost:.0f} | {shown} | {drops} |")
    print()
    for cell, pairs in study.families.items():
        family = {f"{a} - {b}": [score[a][s] - score[b][s] for s in seeds if s in score[a] and s in score[b]]
                  for a, b in pairs}
        run = {label: diffs for label, diffs in family.items() if diffs}
        if not run:
            continue
        for label, text in fmt_family(run).items():
            print(f"- {cell} (pre-registered family, m = {len(pairs)}): {label}: {text}")
        for label in (label for label in family if label not in run):
            print(f"- {cell}: {label}: not run (no comparison); Holm above adjusts over the {len(run)} run")
        if len(run) < len(pairs):  # the pre-registered m, as Bonferroni: each interval at level 1 - 0.05 / m
            for label, diffs in run.items():
                iv = paired_interval(diffs, 1 - 0.05 / len(pairs))
                print(f"- {cell}: {label} at the pre-registered m = {len(pairs)} (t-interval at "
                      f"{100 * (1 - 0.05 / len(pairs)):g} %): "
                      f"{fmt_interval(iv).replace('95 % CI', f'{100 * (1 - 0.05 / len(pairs)):g} % CI')}: {verdict(iv)}")
    for a, b in study.secondary:
        diffs = [score[a][s] - score[b][s] for s in seeds if s in score[a] and s in score[b]]
        if diffs:
            print(f"- {a} - {b} (secondary): {fmt_gain(diffs)}")
    print()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=ROOT / "runs", help="folder of the grids' run folders (TensorBoard)")
    p.add_argument("--study", choices=list(STUDIES), nargs="*", default=list(STUDIES), help="which data sets")
    args = p.parse_args()
    for name in args.study:
        report(STUDIES[name], args.runs)
    print("command: python benchmarks/warm_start_gain.py")


if __name__ == "__main__":
    main()
