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


def volumetric_model_names() -> list[str]:
    """Backbones that also build for volumes (spatial_dims=3), sorted; the others say why in their docstring."""
    return sorted(name for name, builder in MODELS.items() if "spatial_dims" in inspect.signature(builder).parameters)


def build_model(
    name: str, in_channels: int, num_classes: int, base_channels: int = 32, spatial_dims: int = 2, **kw: Any
) -> SegmentationNet:
    """Build backbone `name` mapping (B, in_channels, *S) to logits (B, num_classes, *S).

    `spatial_dims` is 2 (S = H, W) or 3 (S = D, H, W; unet and attention_unet only). `kw` are the
    backbone's own options (depth, dropout, deep_supervision). `deep_supervision=False` is accepted by
    every backbone so a caller can pass ModelConfig through unchanged.
    """
    if name not in MODELS:
        raise UserError(f"unknown model '{name}' (model.backbone); valid: {', '.join(model_names())}")
    if base_channels < 1:
        raise UserError(f"model.base_channels must be a positive integer, got {base_channels}")
    if spatial_dims not in (2, 3):
        raise UserError(f"spatial_dims must be 2 (images) or 3 (volumes), got {spatial_dims}")
    builder = MODELS[name]
    if spatial_dims == 3:
        if name not in volumetric_model_names():
            raise UserError(
                f"model '{name}' (model.backbone) is 2D only; for volumes use one of: "
                f"{', '.join(volumetric_model_names())}"
            )
        kw = {**kw, "spatial_dims": 3}
    options = set(inspect.signature(builder).parameters) - {"in_channels", "num_classes", "base_channels"}
    if "deep_supervision" not in options and kw.get("deep_supervision") is False:
        kw = {k: v for k, v in kw.items() if k != "deep_supervision"}
    unknown = sorted(set(kw) - options)
    if unknown:
        valid = ", ".join(sorted(options))
        raise UserError(f"model '{name}' has no option(s) {', '.join(unknown)}; its options: {valid}")
    return builder(in_channels, num_classes, base_channels=base_channels, **kw)
