"""Backbone registry: name -> constructor, and `build_model` that checks the name and options."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from ..errors import UserError
from .attention_unet import AttentionUNet
from .blocks import SegmentationNet
from .fcn import FCN8s
from .unet import UNet
from .unetpp import UNetPlusPlus

MODELS: dict[str, Callable[..., SegmentationNet]] = {
    "unet": UNet,
    "unetpp": UNetPlusPlus,
    "attention_unet": AttentionUNet,
    "fcn": FCN8s,
}


def model_names() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(MODELS)


def build_model(name: str, in_channels: int, num_classes: int, base_channels: int = 32, **kw: Any) -> SegmentationNet:
    """Build backbone `name` mapping (B, in_channels, H, W) to logits (B, num_classes, H, W).

    `kw` are the backbone's own options (depth, dropout, deep_supervision). `deep_supervision=False` is
    accepted by every backbone so a caller can pass ModelConfig through unchanged.
    """
    if name not in MODELS:
        raise UserError(f"unknown model '{name}' (model.backbone); valid: {', '.join(model_names())}")
    if base_channels < 1:
        raise UserError(f"model.base_channels must be a positive integer, got {base_channels}")
    builder = MODELS[name]
    options = set(inspect.signature(builder).parameters) - {"in_channels", "num_classes", "base_channels"}
    if "deep_supervision" not in options and kw.get("deep_supervision") is False:
        kw = {k: v for k, v in kw.items() if k != "deep_supervision"}
    unknown = sorted(set(kw) - options)
    if unknown:
        valid = ", ".join(sorted(options))
        raise UserError(f"model '{name}' has no option(s) {', '.join(unknown)}; its options: {valid}")
    return builder(in_channels, num_classes, base_channels=base_channels, **kw)
