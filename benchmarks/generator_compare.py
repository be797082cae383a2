"""The pre-registered generator measurement (benchmarks/preregistered/generators_hippo_f0.1.md): pix2pix, task-aware
pix2pix and the diffusion generator at equal training wall-clock, side by side with their costs.

Reads, per generator G, the probe and budgeted runs' result.json, the synthetic set's manifest.json, `gan-aug assess`'s
quality.json and `gan-aug diagnose`'s diagnosis.json, from --root (a `runs/gen_cmp` folder, or the copies kept in
benchmarks/results/gen_cmp) and prints the two tables of RESULTS.md. n = 1 generator each: measurements, no claim.

    python benchmarks/generator_compare.py                          # the kept copies
    python benchmarks/generator_compare.py --root runs/gen_cmp      # the run folders
    python benchmarks/generator_compare.py --root runs/gen_cmp --keep benchmarks/results/gen_cmp  # copy the JSONs
    python benchmarks/generator_compare.py --root benchmarks/results/gan_budget --names pix2pix_600 pix2pix_2000 \
        pix2pix_6000                                                # the pix2pix budget curve (gan_budget_hippo_f0.1)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GENERATORS = ("pix2pix", "task", "diffusion")
# (folder suffix, file) of what each table reads
FILES = (("probe_{g}", "result.json"), ("{g}", "result.json"), ("{g}", "config.json"), ("{g}_syn", "manifest.json"),
         ("{g}_assess", "quality.json"), ("{g}_syn/diagnosis", "diagnosis.json"))


COST_COLUMNS = ("generator", "training steps", "s/step, probe (result.json: start-up and last validation included)",
                "s/step, run", "training min", "synthesize s/pair")
QUALITY_COLUMNS = ("generator", "fidelity Dice: synthetic (real test)", "FID syn/real (real/real)",
                   "KID syn/real (real/real)", "near-copies", "TSTR / TRTR Dice", "TSTR/TRTR (primary)",
                   "diagnosis: synthetic (real)")


def load(root: Path, g: str) -> dict[str, Any] | None:
    """Every file of generator `g` under `root` ({(folder, file): dict}); None when its budgeted run is missing."""
    found = {}
    for folder, name in FILES:
        path = root / folder.format(g=g) / name
        if path.is_file():
            found[(folder, name)] = json.loads(path.read_text())
    return found if ("{g}", "result.json") in found else None


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def cost_row(g: str, d: dict) -> str:
    """Training steps, s/step (probe and run), training minutes, sampling s per pair."""
    probe, run = d.get(("probe_{g}", "result.json"), {}), d[("{g}", "result.json")]
    syn = d.get(("{g}_syn", "manifest.json"))
    per_pair = syn["seconds"] / syn["n"] if syn else None
    steps = f"{run['iterations']} (sample steps {syn['sample_steps']})" if syn and syn.get("sample_steps") else \
        str(run["iterations"])
    return (f"| {g} | {steps} | {_f(probe.get('s_per_iteration'), 2)} | {_f(run['s_per_iteration'], 2)} | "
            f"{run['wall_time_s'] / 60:.1f} | {_f(per_pair, 4)} |")


def quality_row(g: str, d: dict) -> str:
    """Fidelity, FID, KID, near-copies, TSTR / TRTR (the primary endpoint), and the diagnosis."""
    q, dg = d.get(("{g}_assess", "quality.json")), d.get(("{g}_syn/diagnosis", "diagnosis.json"))
    if q is None:
        return f"| {g} | not assessed | | | | | | |"
    fid, kid, t = q["fid"], q["kid"], q["tstr"]
    diag = "-"
    if dg:
        w1 = ", ".join(f"{k} {_f(v.get('wasserstein'))}" for k, v in dg["intensity_per_class"].items())
        diag = (f"edges {_f(dg['boundary_sharpness']['synthetic'], 2)} ({_f(dg['boundary_sharpness']['real'], 2)}); "
                f"flat {_f(dg['flat_block_share']['synthetic'])} ({_f(dg['flat_block_share']['real'])}); "
                f"HF {_f(dg['high_frequency_share']['synthetic'])} ({_f(dg['high_frequency_share']['real'])}); "
                f"noise-like {_f(dg['noise_like_images']['synthetic_share'])}; W1 {w1}")
        if "background_only" in dg:
            bg = dg["background_only"]
            diag += f"; background-only std {_f(bg['synthetic']['mean_std'])} ({_f(bg['real']['mean_std'])})"
            if "across_std" in bg["synthetic"]:
                diag += (f", across images {_f(bg['synthetic']['across_std'])} "
                         f"({_f(bg['real']['across_std'])})")
    return (f"| {g} | {_f(q['fidelity']['synthetic_dice'])} ({_f(q['fidelity']['real_dice'])}) | "
            f"{_f(fid['synthetic_vs_real'], 2)} ({_f(fid['real_vs_real'], 2)}) | "
            f"{_f(kid['synthetic_vs_real'])} ({_f(kid['real_vs_real'])}) | {q['memorisation']['near_copies']} | "
            f"{_f(t['synthetic_only_dice'])} / {_f(t['real_only_dice'])} | **{_f(t['ratio'])}** | {diag} |")


def keep(root: Path, dest: Path, names: list[str]) -> None:
    """Copy every file the tables read for `names` from `root` into `dest` (same relative paths)."""
    for g in names:
        for folder, name in FILES:
            src = root / folder.format(g=g) / name
            if src.is_file():
                (dest / folder.format(g=g)).mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / folder.format(g=g) / name)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=ROOT / "benchmarks" / "results" / "gen_cmp")
    p.add_argument("--keep", type=Path, help="copy the JSON files the tables read into this folder")
    p.add_argument("--names", nargs="+", default=list(GENERATORS), help="run folders to read (default: %(default)s)")
    args = p.parse_args(argv)
    data = {g: load(args.root, g) for g in args.names}
    if not any(data.values()):
        print(f"{args.root}: no generator run found (expected {', '.join(args.names)} folders); pass --root")
        return 2
    if args.keep:
        keep(args.root, args.keep, args.names)
    for columns, row in ((COST_COLUMNS, cost_row), (QUALITY_COLUMNS, quality_row)):
        print("| " + " | ".join(columns) + " |")
        print("|" + "---|" * len(columns))
        for g, d in data.items():
            print(row(g, d) if d else f"| {g} | not run |" + " |" * (len(columns) - 2))
        print()
    print(f"python benchmarks/generator_compare.py --root {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
