"""Summary rows of finished grid runs and the statistics over them: grouping, mean +- std over seeds, paired
differences with the supervised run of the same seed, share of the label gap recovered."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, TypedDict

import numpy as np


class ResultRow(TypedDict, total=False):
    """One finished run as a flat row (what summary.csv holds). Test scores are of the checkpoint chosen on
    validation; `vol_*` per stacked 3D volume, `*_pp` after the largest-component filter, `*_last` of the last
    checkpoint, each where the run has them (None where undefined); a grid's own tags (e.g. a sweep's `schedule`
    and `ratio`) follow."""

    name: str
    backbone: str
    method: str
    labels: str  # label budget key: fX (fraction) or cN (cases)
    fraction: float | None
    cases: int | None
    seed: int
    n_labeled: int
    dice: float | None
    hd95: float | None
    iou: float | None
    asd: float | None
    dice_pp: float | None
    hd95_pp: float | None
    dice_last: float | None
    hd95_last: float | None
    dice_pp_last: float | None
    hd95_pp_last: float | None
    vol_dice: float | None
    vol_hd95: float | None
    vol_dice_pp: float | None
    vol_hd95_pp: float | None
    vol_dice_last: float | None
    vol_hd95_last: float | None
    vol_dice_pp_last: float | None
    vol_hd95_pp_last: float | None
    val_dice: float | None
    best_step: int | None  # -1: the warm start itself
    best_model: str
    iterations: int
    s_per_iteration: float
    wall_time_s: float
    schedule: str  # sweep tags
    ratio: float
    realised_ratio: float | None


def summary_rows(results: list[dict[str, Any]]) -> list[ResultRow]:
    """One flat row per run (what summary.csv holds)."""
    rows: list[ResultRow] = []
    for r in results:
        t = r["tags"]
        rows.append({"name": r["name"], "backbone": t["backbone"], "method": t["method"], "labels": t["labels"],
                     "fraction": t["fraction"], "cases": t["cases"], "seed": t["seed"],
                     "n_labeled": r["n_labeled"], "dice": r["test"]["dice"], "hd95": r["test"]["hd95"],
                     "iou": r["test"]["iou"], "asd": r["test"]["asd"], **_extra_scores(r), "val_dice": r["val_dice"],
                     "best_step": r.get("best_step"),
                     "best_model": r["best_model"], "iterations": r["iterations"],
                     "s_per_iteration": r["s_per_iteration"], "wall_time_s": r["wall_time_s"],
                     **{k: v for k, v in t.items() if k not in ("backbone", "method", "labels", "fraction",
                                                                "cases", "seed")}})
    return rows


def _extra_scores(result: dict[str, Any]) -> dict[str, Any]:
    """Per-volume (vol_*), post-processed (*_pp) and last-checkpoint (*_last) test scores, where present."""
    out: dict[str, Any] = {}
    for suffix, key in (("", "test"), ("_last", "test_last")):
        test = result.get(key)
        if test is None:
            continue
        for pp, scores in (("", test), ("_pp", test.get("postprocessed"))):
            if scores is None:
                continue
            if suffix or pp:
                out.update({f"dice{pp}{suffix}": scores["dice"], f"hd95{pp}{suffix}": scores["hd95"]})
            if "volume" in scores:
                out.update({f"vol_dice{pp}{suffix}": scores["volume"]["dice"],
                            f"vol_hd95{pp}{suffix}": scores["volume"]["hd95"]})
    return out


def label_order(key: str) -> tuple[int, float]:
    """Sort key of a label budget: fractions (fX) by value, then case counts (cN) by value."""
    return (0, float(key[1:])) if key.startswith("f") else (1, float(key[1:]))


def group(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple, list[dict[str, Any]]]:
    """Rows grouped by the values of `keys`."""
    out: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        out[tuple(row[k] for k in keys)].append(row)
    return out


def mean_std(values: list[float | None]) -> tuple[float, float, int]:
    """(mean, sample std, n) over the defined values (NaN when none)."""
    v = np.array([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def gap_recovery(rows: list[dict[str, Any]], backbone: str, key: str = "dice") -> dict[tuple[str, str], float]:
    """(method, labels) -> (SSL - supervised) / (full-label supervised - supervised), from seed means of `key`."""
    full = mean_std([r.get(key) for r in rows if r["backbone"] == backbone and r["method"] == "supervised"
                     and r["labels"] == "f1"])[0]
    means = {k: mean_std([r.get(key) for r in v])[0] for k, v in group(
        [r for r in rows if r["backbone"] == backbone], ("method", "labels")).items()}
    out = {}
    for (method, labels), m in means.items():
        sup = means.get(("supervised", labels))
        if method == "supervised" or sup is None or labels == "f1" or not np.isfinite(full) or full - sup <= 0:
            continue
        out[(method, labels)] = (m - sup) / (full - sup)
    return out


def gap_recovery_per_seed(rows: list[dict[str, Any]], backbone: str) -> dict[tuple[str, str], list[float]]:
    """(method, labels) -> per seed (SSL - supervised of that seed) / (full-label mean - supervised mean)."""
    full = mean_std([r["dice"] for r in rows if r["backbone"] == backbone and r["method"] == "supervised"
                     and r["labels"] == "f1"])[0]
    sub = [r for r in rows if r["backbone"] == backbone and r["dice"] is not None]
    out = {}
    for (method, labels), cell in group(sub, ("method", "labels")).items():
        sup = {r["seed"]: r["dice"] for r in sub if r["method"] == "supervised" and r["labels"] == labels}
        gap = full - mean_std(list(sup.values()))[0]
        if method == "supervised" or labels == "f1" or not np.isfinite(gap) or gap <= 0:
            continue
        values = [(r["dice"] - sup[r["seed"]]) / gap for r in cell if r["seed"] in sup]
        if values:
            out[(method, labels)] = values
    return out
