"""Evaluate a finished run on one split, write metrics_<split>.json, and format the numbers for a person."""

from __future__ import annotations

from pathlib import Path

from ..data.sources import open_source
from ..data.slice_volumes import check_volumes_whole
from ..data.splits import Split
from ..device import resolve_device
from ..errors import UserError
from ..evaluation.scoring import evaluate_model
from ..io_utils import atomic_write_json, read_json
from ..evaluation.postprocess import LCC_MIN_GAIN, choose_lcc_classes
from .run_models import load_run
from .runner import patch_for


def split_ids(split: Split, name: str, all_ids: list[str]) -> list[str]:
    """Sample ids of split `name` ('all' = every sample of the data)."""
    if name == "all":
        return list(all_ids)
    return list(getattr(split, name))


def evaluate_run(run_dir: str | Path, checkpoint: str = "best", split: str = "test", data: str | None = None,
                 device: str = "auto", spacing: tuple[float, float] = (1.0, 1.0), postprocess: bool = True,
                 progress: bool = True, downscale: int = 1, volume_by: str | None = None) -> dict:
    """Score the run's chosen network on `split`; writes RUN_DIR/metrics_<split>[_last][_downscaleN].json, returns it.

    With `postprocess`, `postprocessed` also holds the scores after the largest-component filter chosen on the
    run's validation split (`postprocessing_choice`). With `downscale` N (a run trained on an `ssl-seg downscale
    --factor N` copy, scored on the full-size `data`), images are shrunk by N for the network and the scores are
    at full size. `volume_by` (else the run's --volume-by) groups 2D slices into volumes, scored per stacked volume.
    """
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    model, cfg, info = load_run(run_dir, checkpoint, dev)
    check_downscale(downscale, cfg.data.spatial_dims)
    source = open_source(data or cfg.data.data, cfg.data.spatial_dims, volume_by or cfg.data.volume_by)
    if source.num_classes != info["num_classes"] or source.in_channels != info["in_channels"]:
        raise UserError(f"{source.name}: {source.num_classes} classes / {source.in_channels} channels, but the run "
                        f"was trained on {info['num_classes']} / {info['in_channels']}; pass matching --data")
    the_split = Split.load(run_dir / "split.json")
    check_volumes_whole(the_split.roles(), source)
    ids = split_ids(the_split, split, source.ids)
    known = set(source.ids)
    missing = [i for i in ids if i not in known]
    if missing:
        raise UserError(f"{source.name}: {len(missing)} sample(s) of the run's {split} split are missing "
                        f"(first: {missing[0]}); pass the run's data or use --split all")
    if not ids:
        raise UserError(f"{run_dir / 'split.json'}: the {split} split is empty; use another --split")
    patch = patch_for(cfg, source)
    lcc = (postprocessing_choice(run_dir, checkpoint, model, source, the_split, patch, dev, spacing, downscale)
           if postprocess else None)
    metrics = evaluate_model(model, source, ids, patch, dev, spacing=spacing, progress=progress,
                             lcc_classes=lcc, downscale=downscale)
    metrics.update({"split": split, "checkpoint": checkpoint, "data": source.name,
                    "class_names": info["class_names"], "spacing": list(spacing), "downscale": downscale})
    atomic_write_json(metrics_path(run_dir, split, checkpoint, downscale), metrics)
    return metrics


def check_downscale(factor: int, spatial_dims: int) -> None:
    """Refuse a --downscale factor below 1, or above 1 for a volume run (`ssl-seg downscale` copies 2D folders)."""
    if factor < 1:
        raise UserError(f"--downscale {factor}: use the integer >= 1 the run's data was downscaled by (1: not at all)")
    if factor > 1 and spatial_dims == 3:
        raise UserError(f"--downscale {factor}: a volume run (--spatial-dims 3) cannot be fed downscaled images; "
                        "drop --downscale")


def postprocessing_path(run_dir: str | Path, checkpoint: str = "best") -> Path:
    """RUN_DIR/postprocessing.json (best checkpoint) or postprocessing_last.json: the filter chosen on validation."""
    return Path(run_dir) / f"postprocessing{'_last' if checkpoint == 'last' else ''}.json"


def load_postprocessing(run_dir: str | Path, checkpoint: str = "best") -> list[int] | None:
    """The classes whose largest component is kept, as chosen for this checkpoint; None when not chosen yet."""
    path = postprocessing_path(run_dir, checkpoint)
    if not path.is_file():
        return None
    record = read_json(path, "delete it: `ssl-seg evaluate` chooses again on validation")
    try:
        return [int(c) for c in record["lcc_classes"]]
    except (TypeError, KeyError, ValueError):
        raise UserError(f"{path}: no list of class indices under 'lcc_classes'; delete it: `ssl-seg evaluate` "
                        "chooses again on validation") from None


def postprocessing_choice(run_dir: str | Path, checkpoint: str, model, source, split: Split,
                          patch_size: int | tuple[int, ...],
                          device, spacing: tuple[float, float], downscale: int = 1) -> list[int]:
    """Classes whose largest-component filter raises validation Dice (per volume where scored): any rise.

    Chosen once per checkpoint on the whole validation split and stored in `postprocessing_path`; a stored choice is
    reused at any `downscale`, and one made first under `--downscale N` is made on full-size validation scores.
    """
    chosen = load_postprocessing(run_dir, checkpoint)
    if chosen is not None:
        return chosen
    record: dict = {"lcc_classes": [], "checkpoint": checkpoint}
    if split.val:
        foreground = list(range(1, source.num_classes))
        val = evaluate_model(model, source, list(split.val), patch_size, device, spacing=spacing,
                             lcc_classes=foreground, downscale=downscale)
        scored = "volume" if "volume" in val else "case"
        without = (val["volume"] if scored == "volume" else val)["per_class"]
        with_ = (val["postprocessed"]["volume"] if scored == "volume" else val["postprocessed"])["per_class"]
        dice_without = {int(c): m["dice"] for c, m in without.items()}
        dice_with = {int(c): m["dice"] for c, m in with_.items()}
        record.update({"lcc_classes": choose_lcc_classes(dice_without, dice_with), "scored_on": f"val, {scored} Dice",
                       "min_gain": LCC_MIN_GAIN,
                       "val_dice_without": dice_without, "val_dice_with": dice_with})
    else:
        record["scored_on"] = "no validation split: nothing chosen"
    atomic_write_json(postprocessing_path(run_dir, checkpoint), record)
    return record["lcc_classes"]


def metrics_path(run_dir: str | Path, split: str, checkpoint: str = "best", downscale: int = 1) -> Path:
    """RUN_DIR/metrics_<split>.json for the best checkpoint, ..._last.json for the last, ..._downscaleN at full size."""
    last = "_last" if checkpoint == "last" else ""
    scale = f"_downscale{downscale}" if downscale > 1 else ""
    return Path(run_dir) / f"metrics_{split}{last}{scale}.json"


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
    if metrics.get("downscale", 1) > 1:
        rows.append(f"scored at full size; the network saw each image downscaled by {metrics['downscale']}")
    volume = metrics.get("volume")
    if volume:
        rows.append(_row("per volume (3D)", volume) + f"   ({volume['n_cases']} volumes)")
    post = metrics.get("postprocessed")
    if post is not None:
        rows.append(f"post-processing chosen on validation: keep the largest component of classes "
                    f"{post['lcc_classes'] or 'none'}")
        rows.append(_row("mean, post-processed", post))
        if post.get("volume"):
            rows.append(_row("per volume, post-proc.", post["volume"]))
    return "\n".join(rows)


def _row(label: str, m: dict) -> str:
    return f"{label:<24}{_f(m['dice']):>8}{_f(m['iou']):>8}{_f(m['hd95']):>9}{_f(m['asd']):>8}"


def _f(v) -> str:
    return "  n/a" if v is None else f"{v:.3f}"

