"""The networks of a run: built from its config, started from another run's weights (--init-from), and loaded
back from a finished run's checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .checkpoint import load_checkpoint
from ..config import RunConfig, flatten
from ..data.splits import Split
from ..device import to_memory_format
from ..errors import UserError
from ..methods import build_method
from ..methods.losses import build_loss
from ..models import build_model
from ..models.registry import backbone_options
from .weight_ema import WeightEMA, averaged_network, evaluated_networks

# what a start run must share with the run it starts: (config path, its flag)
SAME_NETWORK = (("model.backbone", "--backbone"), ("model.base_channels", "--base-channels"),
                ("model.backbone_options", "--backbone-options"), ("model.deep_supervision", "--deep-supervision"),
                ("data.spatial_dims", "--spatial-dims"))


def build_method_for(cfg: RunConfig, info: dict[str, Any], device: torch.device,
                     start: dict[str, Tensor] | None = None):
    """Model + method on `device`, from the config (used for training and for loading runs).

    With `start` (a network state dict, see `start_weights`) the network holds those weights before the method
    copies it, so teachers start from them too; CPS's second network stays freshly initialised (two different
    starts are the method).
    """
    model = build_model(cfg.model.backbone, info["in_channels"], info["num_classes"],
                        base_channels=cfg.model.base_channels, spatial_dims=cfg.data.spatial_dims,
                        patch_size=info.get("patch") or cfg.data.patch_size,
                        **backbone_options(cfg.model.backbone, cfg.model.backbone_options),
                        **({"deep_supervision": True} if cfg.model.deep_supervision else {}))
    if start is not None:
        model.load_state_dict(start)
    model = to_memory_format(model.to(device), device, cfg.train.channels_last, on_cpu=True)
    loss = build_loss(cfg.method.loss)
    method = build_method(cfg.method.name, model, cfg.method, info["num_classes"], cfg.train.iterations, loss)
    for m in method.models.values():
        m.to(device)
    return method


def build_weight_ema(cfg: RunConfig, method) -> WeightEMA | None:
    """The EMA of the trained network's weights that --weight-ema asks for (None without it); built before the
    first step, from the network as initialised."""
    decay = cfg.train.weight_ema
    return None if decay is None else WeightEMA(averaged_network(method), decay)


def load_run(run_dir: str | Path, checkpoint: str = "best", device: torch.device | str = "cpu"):
    """(model, RunConfig, info) of a finished run; the model is the network chosen as best (eval mode)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: run directory not found; pass the --out of an 'ssl-seg train' run")
    if checkpoint not in ("best", "last"):
        raise UserError(f"--checkpoint {checkpoint}: use best or last")
    device = torch.device(device)
    ckpt = load_checkpoint(run_dir / f"{checkpoint}.pt", map_location=device)
    cfg = RunConfig.from_dict(ckpt["config"])
    info = ckpt["info"]
    method = build_method_for(cfg, info, device)
    for name, m in method.models.items():
        m.load_state_dict(ckpt["models"][name])
    method.load_state_dict(ckpt["method"])
    weight_ema = build_weight_ema(cfg, method)
    if weight_ema is not None:
        weight_ema.load_state_dict(ckpt["weight_ema"])
    models = evaluated_networks(method, weight_ema)
    chosen = ckpt["state"].get("best_model") or next(iter(models))
    model = models[chosen]
    model.eval()
    return model, cfg, info


def start_weights(cfg: RunConfig, info: dict[str, Any], split: Split) -> dict[str, Tensor]:
    """The weights --init-from names: its run's network chosen as best, checked to fit this run.

    Refused in one line: another backbone, width, class count or channel count; and, on the same data, a start
    run that learned from labels this run counts as unlabeled, or trained or chose its checkpoint on images this
    run validates or tests on (either would leak).
    """
    run_dir = Path(cfg.model.init_from)
    flag = f"--init-from {run_dir}"
    if not (run_dir / "best.pt").is_file():
        raise UserError(f"{flag}: no best.pt there; give the folder of a finished 'ssl-seg train' run")
    with torch.random.fork_rng():  # building the start run's networks must not move this run's random streams
        model, start_cfg, start_info = load_run(run_dir, "best")
    ours, theirs = flatten(cfg.to_dict()), flatten(start_cfg.to_dict())
    for path, name in SAME_NETWORK:
        if ours[path] != theirs[path]:
            raise UserError(f"{flag}: that run was trained with {name} {theirs[path]}, this one asks for "
                            f"{ours[path]}; start from a run of the same network or give the same {name}")
    for key in ("num_classes", "in_channels"):
        if start_info[key] != info[key]:
            raise UserError(f"{flag}: that run's data has {key} {start_info[key]}, this run's {info[key]}; start "
                            "from a run on data with the same classes and channels")
    if start_info.get("data") == info["data"]:
        _check_no_leak(flag, Split.load(run_dir / "split.json"), split)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _check_no_leak(flag: str, start: Split, split: Split) -> None:
    """The start run's labeled images are labeled here; its training and validation images are not tested here."""
    extra_labels = sorted(set(start.labeled) - set(split.labeled))
    if extra_labels:
        raise UserError(f"{flag}: that run learned from the labels of {len(extra_labels)} image(s) this run does not "
                        f"count as labeled (e.g. {extra_labels[0]}), which would break the label budget; start from a "
                        "run on the same split (same --split-seed, --labeled-* and --group-by / --volume-by)")
    trained, chose = set(start.labeled) | set(start.unlabeled), set(start.val)
    checks = (("trained on", trained, "validates", split.val), ("trained on", trained, "tests", split.test),
              ("chose its checkpoint on", chose, "tests", split.test))
    for did, ids, role, ours in checks:
        common = sorted(ids & set(ours))
        if common:
            raise UserError(f"{flag}: that run {did} {len(common)} image(s) this run {role} on (e.g. {common[0]}); "
                            "start from a run on the same split")
