"""Downstream Dice of mask sources: on a finished `ssl-seg study`, synthesize from its GAN with other mask
sources and train supervised at the study's chosen ratio with its sweep seeds; paired gains (95 % CI) over
the study's real-only runs and over its `deform` runs (same split, seeds and budget).

    python benchmarks/mask_source_dice.py --study runs/study_quick --sources mix shape --workers 2

Writes STUDY/mask_sources/<source>/ (synthetic set and runs) and prints one row per source.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from gan_aug.provider import GAN_SUBDIR, synthetic_dir
from gan_aug.study import grid_tasks, run_tasks, study_base, sweep_grid
from gan_aug.study_report import by_seed, paired_diffs
from gan_aug.synthesize import H5_NAME, synthesize
from ssl_seg.experiments.grid import collect
from ssl_seg.experiments.stats import fmt_gain, fmt_mean_std
from ssl_seg.experiments.sweep_report import sweep_rows
from ssl_seg.logs import configure_logging


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", required=True, help="OUT of a finished ssl-seg study")
    p.add_argument("--sources", nargs="+", default=["mix", "shape"])
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    configure_logging()  # the study stages' messages
    out = Path(args.study)
    study = json.loads((out / "study.json").read_text())
    the_plan, ratio = study["plan"], study["decisions"]["ratio"]
    fraction, seeds = the_plan["sweep_fraction"], the_plan["sweep_seeds"]
    syn_root = out / Path(study["synthetic"]["deform"]).parent.parent
    base = study_base(study["data"], study["profile"], study["device"], args.workers)
    n = json.loads((out / study["synthetic"]["deform"]).parent.joinpath("manifest.json").read_text())["n"]
    print(f"$ python {' '.join(shlex.quote(a) for a in sys.argv)}")
    rows = sweep_rows(collect(out / "ratio_sweep"))
    match = dict(method="supervised", labels=f"f{fraction:g}", schedule="constant")
    real, deform = by_seed(rows, **match, ratio=0.0), by_seed(rows, **match, ratio=ratio)
    print(f"supervised, labels f{fraction:g}, ratio {ratio:g} (the study's choice), seeds {seeds}, {n} pairs per set")
    print("| masks | test Dice | gain over real only | minus deform |\n|---|---|---|---|")
    print(f"| deform (the study's) | {fmt_mean_std(deform.values())} | {fmt_gain(paired_diffs(deform, real))} | - |")
    for source in args.sources:
        syn = synthetic_dir(syn_root, source)
        if not (syn / H5_NAME).is_file():
            synthesize(syn_root / GAN_SUBDIR, n, syn, mask_source=source, device=study["device"], progress=False)
        root = out / "mask_sources" / source
        runs = sweep_grid(base, fraction, str(syn / H5_NAME), [ratio], ["supervised"], list(seeds), f"__{source}")
        run_tasks(grid_tasks(runs, root), args.workers)
        dice = by_seed(sweep_rows(collect(root)), **match, ratio=ratio)
        print(f"| {source} | {fmt_mean_std(dice.values())} | {fmt_gain(paired_diffs(dice, real))} | "
              f"{fmt_gain(paired_diffs(dice, deform))} |")


if __name__ == "__main__":
    main()
