"""What a study's numbers say, with their uncertainty: choices made on validation, gains with 95 % intervals,
and OUT/report.md (findings, tables, figures, only links that exist, no absolute paths)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ssl_seg.experiments.profiles import SegBudget
from ssl_seg.experiments.results import by_seed, choose_on_validation, paired, validation_means
from ssl_seg.experiments.stats import fmt_family, fmt_mean_std
from ssl_seg.experiments.summary import group
from ssl_seg.experiments.sweep_report import is_real_only, reported_scores

Rows = list[dict[str, Any]]
ORACLE_LABEL = "oracle: phantom masks"


# ---------------------------------------------------------------- choices (validation only)


def best_ssl_method(low_rows: Rows, labels: str) -> str | None:
    """The SSL method with the best mean validation Dice at `labels` (never chosen on test)."""
    chosen = choose_on_validation([r for r in low_rows if r["labels"] == labels and r["method"] != "supervised"],
                                  ("method",), lambda k: k)
    return chosen[0] if chosen else None


def chosen_ratio(sweep: Rows, method: str, labels: str) -> float | None:
    """The non-zero constant ratio with the best mean validation Dice (ties: the smaller ratio)."""
    rows = [r for r in sweep if (r["method"], r["labels"], r["schedule"]) == (method, labels, "constant")
            and r["ratio"] > 0]
    chosen = choose_on_validation(rows, ("ratio",), lambda k: -k[0])
    return chosen[0] if chosen else None


# ---------------------------------------------------------------- paired comparisons (test)


def _real_only(sweep: Rows, method: str, labels: str) -> dict[int, float]:
    """seed -> test Dice of the real-only runs of `method` at `labels`."""
    return by_seed([r for r in sweep if is_real_only(r["schedule"], r["ratio"])], method=method, labels=labels)


def _at_ratio(rows: Rows, method: str, labels: str, ratio: float) -> dict[int, float]:
    """seed -> test Dice of the constant-ratio runs of `method` at `labels`."""
    return by_seed(rows, method=method, labels=labels, schedule="constant", ratio=ratio)


# ---------------------------------------------------------------- findings


class Gain(str):
    """A placeholder in a finding's text: the key of its gain in the findings' family."""


def findings(low_rows: Rows, sweep: Rows, oracle: Rows, labels: str, decisions: dict[str, Any]) -> list[str]:
    """Markdown bullets: each conclusion with its interval, Holm-adjusted over every gain the findings state, and
    whether it is established."""
    out: list[list[str | Gain]] = []
    family: dict[str, list[float]] = {}

    def gain(key: str, diffs: list[float]) -> Gain:
        family[key] = diffs
        return Gain(key)

    for lab in sorted({r["labels"] for r in low_rows} - {"f1"}, key=lambda k: float(k[1:])):
        sup = by_seed(low_rows, method="supervised", labels=lab)
        n_lab = int(np.mean([r["n_labeled"] for r in low_rows if r["labels"] == lab]))
        text: list[str | Gain] = [f"- **Semi-supervised vs supervised, labels {lab}** ({n_lab} labeled; supervised "
                                  f"test Dice {fmt_mean_std(sup.values())})."]
        for method in sorted({r["method"] for r in low_rows if r["labels"] == lab} - {"supervised"}):
            diffs = paired(by_seed(low_rows, method=method, labels=lab), sup)
            text += [f" {method} - supervised: ", gain(f"{method} {lab}", diffs), "."]
        best = best_ssl_method(low_rows, lab)
        if best is not None:
            text.append(f" Best SSL method on validation: {best}.")
        out.append(text)
    full = by_seed(low_rows, method="supervised", labels="f1")
    if full:
        out.append([f"- Full-label supervised reference: test Dice {fmt_mean_std(full.values())}."])
    ratio = decisions.get("ratio")
    base = _real_only(sweep, "supervised", labels)
    if ratio is not None:
        masks = decisions.get("mask_source", "deform")
        val = {k[0]: m for k, m in validation_means([r for r in sweep if r["method"] == "supervised"
                                                      and r["labels"] == labels and r["schedule"] == "constant"],
                                                     ("ratio",)).items()}
        prefers = "above" if val.get(ratio, -1) > val.get(0.0, np.inf) else "not above"
        diffs = paired(_at_ratio(sweep, "supervised", labels, ratio), base)
        out.append([f"- **Synthetic pairs from `{masks}` masks** (new masks made from the labeled ones only), "
                    f"supervised, labels {labels}: ratio {ratio:g} chosen on validation (validation Dice "
                    f"{val.get(ratio, float('nan')):.3f}, {prefers} real only's {val.get(0.0, float('nan')):.3f}); "
                    "test Dice gain over real only: ", gain("synthetic", diffs), "."])
        if oracle:
            o = _at_ratio(oracle, "supervised", labels, ratio)
            out.append([f"- **Oracle upper bound, not a result**: the same GAN fed `phantom` masks, drawn by the "
                        f"generator that made the test set (no real dataset has one), at ratio {ratio:g}: gain over "
                        "real only ", gain("oracle", paired(o, base)), f"; oracle minus `{masks}` masks ",
                        gain("oracle - masks", paired(o, _at_ratio(sweep, "supervised", labels, ratio))),
                        ". This is how much of a phantom-mask gain is the oracle."])
    leg = decisions.get("ssl_with_synthetic")
    if leg:
        m = leg["method"]
        diffs = paired(_at_ratio(sweep, m, labels, leg["ratio"]), _real_only(sweep, m, labels))
        out.append([f"- **{m} with synthetic pairs** (ratio {leg['ratio']:g}, chosen for supervised on validation) "
                    f"vs {m} on real pairs only: ", gain("leg", diffs), "."])
    formatted = fmt_family(family)
    lines = ["".join(formatted[t] if isinstance(t, Gain) else t for t in text) for text in out]
    lines.append("- How to read these: mean +- std over seeds (seed s of the ablation also draws split s); a gain is "
                 "a paired difference per seed (test Dice, the primary endpoint of benchmarks/PROTOCOL.md) with its "
                 f"t-interval, Holm-adjusted over the {len(formatted)} gains above (m); \"not established\" means "
                 "the interval includes 0 or n = 1. Ratios and methods are chosen on validation and reported on test.")
    return lines


# ---------------------------------------------------------------- tables


def low_label_table(low_rows: Rows) -> list[str]:
    """method | labels | n labeled | val Dice | test Dice | gain over supervised (paired by seed, Holm over the
    table)."""
    lines = ["| method | labels | n labeled | val Dice | test Dice | test gain over supervised | n |",
             "|---|---|---|---|---|---|---|"]
    cells = group(low_rows, ("method", "labels"))
    gains = fmt_family({key: paired(by_seed(cell), by_seed(low_rows, method="supervised", labels=key[1]))
                        for key, cell in cells.items() if key[0] != "supervised"})
    for (method, labels) in sorted(cells, key=lambda k: (float(k[1][1:]), k[0] != "supervised", k[0])):
        cell = cells[(method, labels)]
        gain = gains.get((method, labels), "-")
        n_lab = int(np.mean([r["n_labeled"] for r in cell]))
        lines.append(f"| {method} | {labels} | {n_lab} | {fmt_mean_std([r['val_dice'] for r in cell], False)} | "
                     f"{fmt_mean_std([r['dice'] for r in cell], False)} | {gain} | {len(cell)} |")
    return lines


def sweep_table(sweep: Rows, oracle: Rows, labels: str, chosen: float | None, masks: str) -> list[str]:
    """One row per (method, masks, ratio): val and test Dice, the paired test gain over real only (Holm over the
    table)."""
    lines = ["| method | masks | ratio | val Dice | test Dice | test gain over real only | n |",
             "|---|---|---|---|---|---|---|"]
    sets = [(masks, [r for r in sweep if r["labels"] == labels and r["schedule"] == "constant"])]
    if oracle:
        sets.append(("phantom (oracle)", [r for r in oracle if r["labels"] == labels]))
    gains = fmt_family({(mask_name, method, ratio): paired(by_seed(cell), _real_only(sweep, method, labels))
                        for mask_name, rows in sets for (method, ratio), cell in group(rows, ("method", "ratio")).items()
                        if ratio != 0})
    for mask_name, rows in sets:
        for (method, ratio), cell in sorted(group(rows, ("method", "ratio")).items(),
                                            key=lambda kv: (kv[0][0] != "supervised", kv[0])):
            gain = gains.get((mask_name, method, ratio), "-")
            name = "real only" if ratio == 0 else mask_name
            mark = " (chosen on validation)" if (method, ratio) == ("supervised", chosen) and mask_name == masks else ""
            lines.append(f"| {method} | {name} | {ratio:g}{mark} | {fmt_mean_std([r['val_dice'] for r in cell], False)}"
                         f" | {fmt_mean_std([r['dice'] for r in cell], False)} | {gain} | {len(cell)} |")
    return lines


# ---------------------------------------------------------------- the report


def _links(out: Path, entries: list[tuple[str, str]]) -> list[str]:
    """'- [rel](rel): what' for the entries that exist under out."""
    return [f"- [{rel}]({rel}): {what}" for rel, what in entries if (out / rel).exists()]


def _run_flags(values: dict[str, Any]) -> str:
    """'`method.loss` = ce, `train.weight_decay` = 0.0': the run-config fields a study's flags set."""
    return ", ".join(f"`{path}` = {value}" for path, value in values.items())


def _image(out: Path, rel: str, alt: str) -> list[str]:
    return [f"![{alt}]({rel})", ""] if (out / rel).is_file() else []


def report_markdown(out: Path, study: dict[str, Any], prof: SegBudget, low_rows: Rows, sweep: Rows, oracle: Rows,
                    syn_rel: str) -> str:
    """OUT/report.md: findings with their uncertainty, tables, figures, the synthetic set, where files lie."""
    p, decisions = study["plan"], study.get("decisions", {})
    labels = f"f{p['sweep_fraction']:g}"
    syn_dir = out / syn_rel
    gan_rel = (syn_dir.parent / "gan").relative_to(out).as_posix()
    manifest = json.loads((syn_dir / "manifest.json").read_text())
    gan = json.loads((out / gan_rel / "result.json").read_text())
    val_l1 = "n/a" if gan["val_l1"] is None else f"{gan['val_l1']:.3f}"
    iterations = p["iterations"] or prof.iterations
    seeds = ", ".join(map(str, p["seeds"]))
    scores_key, _, scores_meaning = reported_scores(low_rows + sweep)
    lines = [f"# Study: scarce labels and synthetic pairs on `{study['data']}`", "",
             f"Profile `{study['profile']}`: U-Net, {iterations} iterations ({prof.optimizer}, lr {prof.lr:g}), "
             f"batch {prof.batch_size}, {prof.patch_size} px patches, {prof.base_channels} base channels; "
             f"device `{study['device']}`. Re-run the same command to resume; finished work is skipped. "
             "OUT is this report's folder.", "",
             *([f"Test Dice and HD95 below: {scores_meaning.lower()}.", ""] if scores_key != "dice" else []),
             *([f"Every run also has {_run_flags(study['run_flags'])}, over the profile's settings above.", ""]
               if study.get("run_flags") else []),
             "```", study["command"], "```", "", "## Findings", "",
             *findings(low_rows, sweep, oracle, labels, decisions), "",
             "## 1. Low-label ablation", "",
             f"Methods {', '.join(p['methods'])} at labeled fractions {', '.join(f'{f:g}' for f in p['fractions'])}, "
             f"seeds {seeds} (seed s also draws split s, so methods are compared on the same labeled set), and "
             "the full-label supervised reference. Gains are paired by seed, with 95 % t-intervals.", "",
             *low_label_table(low_rows), "",
             *_image(out, "low_label/dice_vs_labels.png", "test Dice against labeled fraction"),
             *_image(out, "low_label/gap_recovery.png", "share of the label gap recovered"),
             "## 2. Synthetic pairs", "",
             f"A pix2pix GAN trained for {gan['iterations']} steps on the {gan['n_labeled']} labeled pairs of split "
             f"{decisions.get('split_seed', 0)} at labeled fraction {p['sweep_fraction']:g} (validation L1 {val_l1}, "
             f"{gan['wall_time_s']:.0f} s), then {manifest['n']} pairs generated from `{manifest['mask_source']}` "
             "masks, made from the labeled masks only. Rows: held-out real masks, their real images, what the "
             "GAN draws for those masks, then new masks and their generated images.", "",
             *_image(out, f"{syn_rel}/samples.png", "real and synthetic pairs"),
             "## 3. Real-vs-synthetic ratio sweep", "",
             f"Supervised at labeled fraction {p['sweep_fraction']:g} on the GAN's split, ratios "
             f"{', '.join(f'{r:g}' for r in p['ratios'])} (share of synthetic pairs in each labeled batch), seeds "
             f"{', '.join(map(str, p['sweep_seeds']))}. The ratio is chosen on validation Dice and reported on test."
             + (" The oracle row uses masks no user has; it bounds what perfect masks could add." if oracle else ""),
             "", *sweep_table(sweep, oracle, labels, decisions.get("ratio"), manifest["mask_source"]), "",
             *_image(out, "ratio_sweep/dice_vs_ratio.png", "test Dice against synthetic ratio"),
             "## Artefacts", "",
             "Every run folder holds `curves.png` (losses, learning rate, validation scores), `config.json`, "
             "`split.json`, checkpoints, `tb/` and `result.json`.", ""]
    lines += _links(out, [
        ("study.json", "the study's profile, data, plan and decisions"),
        ("low_label/summary.md", "ablation table (all scores)"), ("low_label/summary.csv", "one row per ablation run"),
        ("low_label/runs", "one folder per ablation run"),
        (gan_rel, "the GAN run"), (f"{gan_rel}/curves.png", "GAN losses and validation L1"),
        (f"{syn_rel}/synthetic.h5", "the synthetic pairs (project HDF5; pass to --synthetic)"),
        (f"{syn_rel}/manifest.json", "how they were made"),
        ("ratio_sweep/summary.md", "sweep table (all scores)"), ("ratio_sweep/summary.csv", "one row per sweep run"),
        ("ratio_sweep/runs", "one folder per sweep run"), ("oracle/runs", "the oracle runs (phantom masks)"),
    ])
    return "\n".join(lines) + "\n"

