"""Backbone registry: name -> constructor, `build_model` that checks the name and options, and `backbone_options`
that reads --backbone-options."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

from ..errors import UserError
from .attention_unet import AttentionUNet
from .blocks import SegmentationNet
from .fcn import FCN8s
from .monai_transformers import MonaiSwinUNETR, MonaiUNETR
from .monai_unets import MonaiBasicUNet, MonaiDynUNet, MonaiSegResNet
from .unet import UNet
from .unetpp import UNetPlusPlus

MODELS: dict[str, Callable[..., SegmentationNet]] = {
    "unet": UNet,
    "unetpp": UNetPlusPlus,
    "attention_unet": AttentionUNet,
    "fcn": FCN8s,
    # MONAI's networks (imported when built); "monai:" keeps their names apart from the package's own
    "monai:dynunet": MonaiDynUNet,
    "monai:basicunet": MonaiBasicUNet,
    "monai:segresnet": MonaiSegResNet,
    "monai:unetr": MonaiUNETR,
    "monai:swinunetr": MonaiSwinUNETR,
}

# arguments build_model fills itself: not options a user sets
_FILLED = {"in_channels", "num_classes", "base_channels", "patch_size", "spatial_dims"}


def model_names() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(MODELS)


def volumetric_model_names() -> list[str]:
    """Backbones that also build for volumes (spatial_dims=3), sorted; the others say why in their docstring."""
    return sorted(name for name, builder in MODELS.items() if "spatial_dims" in inspect.signature(builder).parameters)


def _options(name: str) -> dict[str, inspect.Parameter]:
    """The options of backbone `name` (its constructor's keywords but the ones build_model fills), by name."""
    params = inspect.signature(MODELS[name]).parameters
    return {key: p for key, p in params.items() if key not in _FILLED}


def _parse_value(text: str, default: Any) -> Any:
    """`text` as the type of `default` (bool, int, float or str); ValueError if it is not one."""
    if isinstance(default, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(text)
        return text.lower() in ("true", "1")
    return type(default)(text)


def backbone_options(name: str, text: str | None) -> dict[str, Any]:
    """--backbone-options 'key=value,...' of backbone `name` as typed keyword arguments (UserError if invalid)."""
    if not text:
        return {}
    if name not in MODELS:
        raise UserError(f"unknown model '{name}' (--backbone); valid: {', '.join(model_names())}")
    options, values = _options(name), {}
    for item in text.split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or key not in options:
            raise UserError(f"--backbone-options {text}: '{item}' is not key=value with a key of {name}; its keys: "
                            f"{', '.join(sorted(options))}")
        default = options[key].default
        try:
            values[key] = _parse_value(value, default)
        except ValueError:
            raise UserError(f"--backbone-options {text}: {key}={value} is not of type {type(default).__name__}, "
                            f"e.g. {key}={default}") from None
    return values


def build_model(
    name: str, in_channels: int, num_classes: int, base_channels: int = 32, spatial_dims: int = 2,
    patch_size: int | Sequence[int] | None = None, **kw: Any
) -> SegmentationNet:
    """Build backbone `name` mapping (B, in_channels, *S) to logits (B, num_classes, *S).

    `spatial_dims` is 2 (S = H, W) or 3 (S = D, H, W; see `volumetric_model_names`). `patch_size` (the training
    patch, an int per axis or one for all) goes to the backbones that need it (monai:unetr, monai:swinunetr).
    `kw` are the backbone's own options (depth, dropout, deep_supervision, ...). `deep_supervision=False` is
    accepted by every backbone so a caller can pass ModelConfig through unchanged.
    """
    if name not in MODELS:
        raise UserError(f"unknown model '{name}' (model.backbone); valid: {', '.join(model_names())}")
    if base_channels < 1:
        raise UserError(f"model.base_channels must be a positive integer, got {base_channels}")
    if spatial_dims not in (2, 3):
        raise UserError(f"spatial_dims must be 2 (images) or 3 (volumes), got {spatial_dims}")
    builder = MODELS[name]
    params = inspect.signature(builder).parameters
    if spatial_dims == 3:
        if name not in volumetric_model_names():
            raise UserError(
                f"model '{name}' (model.backbone) is 2D only; for volumes use one of: "
                f"{', '.join(volumetric_model_names())}"
            )
        kw = {**kw, "spatial_dims": 3}
    if "patch_size" in params and patch_size is not None:
        kw = {**kw, "patch_size": (patch_size,) * spatial_dims if isinstance(patch_size, int) else tuple(patch_size)}
    options = set(params) - {"in_channels", "num_classes", "base_channels"}
    if "deep_supervision" not in options and kw.get("deep_supervision") is False:
        kw = {k: v for k, v in kw.items() if k != "deep_supervision"}
    unknown = sorted(set(kw) - options)
    if unknown:
        valid = ", ".join(sorted(options))
        raise UserError(f"model '{name}' has no option(s) {', '.join(unknown)}; its options: {valid}")
    return builder(in_channels, num_classes, base_channels=base_channels, **kw)
