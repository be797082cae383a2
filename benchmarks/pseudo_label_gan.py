"""A GAN on labeled + confident pseudo-labeled pairs against the labeled-only GAN of a finished `ssl-seg study`:
same split, budget and seed; pseudo-labels from the study's best SSL method (on validation) on that split.
Prints for each GAN: pairs it trained on, mask fidelity, FID/KID, TSTR (gan-aug assess, same real segmenter
for both) and the downstream test Dice at the study's chosen ratio with its sweep seeds (paired 95 % CI).

    python benchmarks/pseudo_label_gan.py --study runs/study_quick --workers 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import shutil
import sys
from pathlib import Path

from gan_aug.assess import assess
from gan_aug.config import GanConfig
from gan_aug.provider import GAN_SUBDIR, synthetic_dir
from gan_aug.study import grid_tasks, run_tasks, study_base, sweep_grid
from gan_aug.study_report import best_ssl_method, by_seed, paired_diffs
from gan_aug.synthesize import H5_NAME, synthesize
from gan_aug.train import train_gan
from ssl_seg.experiments.summary import summary_rows
from ssl_seg.experiments.grid import GridRun, collect
from ssl_seg.experiments.stats import fmt_gain, fmt_mean_std
from ssl_seg.experiments.sweep_report import sweep_rows
from ssl_seg.logs import configure_logging


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", required=True, help="OUT of a finished ssl-seg study")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--teacher-seed", type=int, default=0, help="training seed of the SSL run on the GAN's split "
                   "(0: the study's own seed-0 ablation run; others are trained here)")
    args = p.parse_args(argv)
    configure_logging()  # the study stages' messages
    out = Path(args.study)
    study = json.loads((out / "study.json").read_text())
    the_plan, ratio = study["plan"], study["decisions"]["ratio"]
    fraction, seeds, labels = the_plan["sweep_fraction"], the_plan["sweep_seeds"], f"f{the_plan['sweep_fraction']:g}"
    syn_root = out / Path(study["synthetic"]["deform"]).parent.parent
    method = best_ssl_method(summary_rows(collect(out / "low_label")), labels)
    split_seed = study["decisions"]["split_seed"]
    teacher = out / "low_label" / "runs" / f"unet__{method}__{labels}__s{split_seed}"
    if args.teacher_seed != split_seed:  # the ablation's seed s draws split s: train one on the GAN's split
        cfg = study_base(study["data"], study["profile"], study["device"])
        cfg.method.name, cfg.data.labeled_fraction = method, fraction
        cfg.data.split_seed, cfg.train.seed = split_seed, args.teacher_seed
        run = GridRun(f"{method}__{labels}__split{split_seed}__s{args.teacher_seed}", cfg)
        teacher = out / "pseudo_label_gan" / "teacher" / "runs" / run.name
        run_tasks(grid_tasks([run], teacher.parent.parent), 1)
    segmenter = out / "low_label" / "runs" / f"unet__supervised__f1__s{study['decisions']['split_seed']}"
    print(f"$ python {' '.join(shlex.quote(a) for a in sys.argv)}")
    teacher_dice = json.loads((teacher / "result.json").read_text())["test"]["dice"]
    print(f"pseudo-labels from {teacher.relative_to(out)} (test Dice {teacher_dice:.3f}); fidelity/FID segmenter "
          f"{segmenter.relative_to(out)}", flush=True)

    pl_root = out / "pseudo_label_gan" / f"teacher_s{args.teacher_seed}"
    cfg = GanConfig.load(syn_root / GAN_SUBDIR / "config.json")
    pl_cfg = dataclasses.replace(cfg, out=str(pl_root / GAN_SUBDIR), pseudo_labels=str(teacher.resolve()))
    if not (pl_root / GAN_SUBDIR / "result.json").is_file():
        train_gan(pl_cfg, resume=(pl_root / GAN_SUBDIR / "checkpoint.pt").is_file())
    n = json.loads((out / study["synthetic"]["deform"]).parent.joinpath("manifest.json").read_text())["n"]
    pl_syn = synthetic_dir(pl_root, "deform")
    if not (pl_syn / H5_NAME).is_file():
        synthesize(pl_root / GAN_SUBDIR, n, pl_syn, mask_source="deform", device=study["device"], progress=False)

    base = study_base(study["data"], study["profile"], study["device"], args.workers)
    runs = sweep_grid(base, fraction, str(pl_syn / H5_NAME), [ratio], ["supervised"], list(seeds), "__pseudo")
    run_tasks(grid_tasks(runs, pl_root), args.workers)
    match = dict(method="supervised", labels=labels, schedule="constant")
    sweep = sweep_rows(collect(out / "ratio_sweep"))
    real, deform = by_seed(sweep, **match, ratio=0.0), by_seed(sweep, **match, ratio=ratio)
    pl = by_seed(sweep_rows(collect(pl_root)), **match, ratio=ratio)

    print("| GAN | pairs | fidelity Dice (real test) | FID (real/real) | KID | TSTR/TRTR | test Dice at ratio "
          f"{ratio:g} | gain over real only | minus labeled-only GAN |\n|---|---|---|---|---|---|---|---|---|")
    for name, syn, dice in (("labeled only", syn_root / "synthetic_deform", deform), ("+ pseudo-labels", pl_syn, pl)):
        quality = syn / "quality"
        if name != "labeled only" and (syn_root / "synthetic_deform" / "quality" / "segmenter_real").is_dir() \
                and not (quality / "segmenter_real").exists():  # one real-data TSTR baseline for both
            shutil.copytree(syn_root / "synthetic_deform" / "quality" / "segmenter_real", quality / "segmenter_real")
        r = assess(syn, segmenter=segmenter, out=quality, device=study["device"], progress=False)
        gan = json.loads((syn.parent / GAN_SUBDIR / "result.json").read_text())
        f, d, k, t = r["fidelity"], r["fid"], r["kid"], r["tstr"]
        minus = "-" if dice is deform else fmt_gain(paired_diffs(dice, deform))
        print(f"| {name} | {gan['n_labeled']} + {gan.get('n_pseudo', 0)} | {f['synthetic_dice']:.3f} "
              f"({f['real_dice']:.3f}) | {d['synthetic_vs_real']:.1f} ({d['real_vs_real']:.1f}) | "
              f"{k['synthetic_vs_real']:.3f} | {t['ratio']:.2f} | {fmt_mean_std(dice.values())} | "
              f"{fmt_gain(paired_diffs(dice, real))} | {minus} |")


if __name__ == "__main__":
    main()
