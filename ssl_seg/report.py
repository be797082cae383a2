"""Evaluate a finished run on one split, write metrics_<split>.json, and format the numbers for a person."""

from __future__ import annotations

import json
from pathlib import Path

from .data.readers import open_source
from .data.splits import Split
from .device import resolve_device
from .errors import UserError
from .evaluation import evaluate_model
from .io_utils import atomic_write_json
from .runner import load_run


def split_ids(split: Split, name: str, all_ids: list[str]) -> list[str]:
    """Sample ids of split `name` ('all' = every sample of the data)."""
    if name == "all":
        return list(all_ids)
    return list(getattr(split, name))


def evaluate_run(run_dir: str | Path, checkpoint: str = "best", split: str = "test", data: str | None = None,
                 device: str = "auto", spacing: tuple[float, float] = (1.0, 1.0)) -> dict:
    """Score the run's chosen network on `split`; writes RUN_DIR/metrics_<split>.json and returns it."""
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    model, cfg, info = load_run(run_dir, checkpoint, dev)
    source = open_source(data or cfg.data.data)
    if source.num_classes != info["num_classes"] or source.in_channels != info["in_channels"]:
        raise UserError(f"{source.name}: {source.num_classes} classes / {source.in_channels} channels, but the run "
                        f"was trained on {info['num_classes']} / {info['in_channels']}; pass matching --data")
    the_split = Split.load(run_dir / "split.json")
    ids = split_ids(the_split, split, source.ids)
    known = set(source.ids)
    missing = [i for i in ids if i not in known]
    if missing:
        raise UserError(f"{source.name}: {len(missing)} sample(s) of the run's {split} split are missing "
                        f"(first: {missing[0]}); pass the run's data or use --split all")
    if not ids:
        raise UserError(f"{run_dir / 'split.json'}: the {split} split is empty; use another --split")
    metrics = evaluate_model(model, source, ids, cfg.data.patch_size, dev, spacing=spacing, progress=True)
    metrics.update({"split": split, "checkpoint": checkpoint, "data": source.name,
                    "class_names": info["class_names"], "spacing": list(spacing)})
    atomic_write_json(metrics_path(run_dir, split, checkpoint), metrics)
    return metrics


def metrics_path(run_dir: str | Path, split: str, checkpoint: str = "best") -> Path:
    """RUN_DIR/metrics_<split>.json for the best checkpoint, metrics_<split>_last.json for the last."""
    return Path(run_dir) / f"metrics_{split}{'_last' if checkpoint == 'last' else ''}.json"


def format_metrics_table(metrics: dict) -> str:
    """A plain-text table: one row per foreground class, then the mean."""
    names = metrics.get("class_names") or []
    rows = [f"{'class':<24}{'Dice':>8}{'IoU':>8}{'HD95':>9}{'ASD':>8}"]
    for cls, m in sorted(metrics["per_class"].items(), key=lambda kv: int(kv[0])):
        label = names[int(cls)] if int(cls) < len(names) else f"class {cls}"
        rows.append(f"{label:<24}{_f(m['dice']):>8}{_f(m['iou']):>8}{_f(m['hd95']):>9}{_f(m['asd']):>8}")
    rows.append(f"{'mean (foreground)':<24}{_f(metrics['dice']):>8}{_f(metrics['iou']):>8}"
                f"{_f(metrics['hd95']):>9}{_f(metrics['asd']):>8}")
    rows.append(f"{metrics.get('n_samples', '?')} samples in {metrics.get('n_cases', '?')} cases, "
                f"split {metrics.get('split', '?')}")
    volume = metrics.get("volume")
    if volume:
        rows.append(f"{'per volume (3D)':<24}{_f(volume['dice']):>8}{_f(volume['iou']):>8}{_f(volume['hd95']):>9}"
                    f"{_f(volume['asd']):>8}   ({volume['n_cases']} volumes)")
    return "\n".join(rows)


def _f(v) -> str:
    return "  n/a" if v is None else f"{v:.3f}"


def load_metrics(run_dir: str | Path, split: str = "test", checkpoint: str = "best") -> dict | None:
    """A previously written metrics_<split>[_last].json, or None."""
    path = metrics_path(run_dir, split, checkpoint)
    return json.loads(path.read_text()) if path.is_file() else None
