"""Device choice, mixed precision and memory format: CUDA when present, CPU always works."""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from .errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda' without a GPU is a UserError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is visible; use --device cpu (or auto)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UserError(f"--device {name}: unknown device; use auto, cpu or cuda")
    return torch.device(name)


def amp_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """The autocast dtype for `amp` ('auto'|'bf16'|'fp16'|'off'); None means full precision (always on CPU)."""
    if amp not in ("auto", "bf16", "fp16", "off"):
        raise UserError(f"--amp {amp}: use auto, bf16, fp16 or off")
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager:
    """torch.autocast on `device` with `dtype`, or a no-op when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_memory_format(x: torch.Tensor | torch.nn.Module, device: torch.device, channels_last: bool):
    """Apply channels_last on CUDA 4-D tensors/modules when asked; unchanged otherwise."""
    if channels_last and device.type == "cuda":
        if isinstance(x, torch.nn.Module) or x.dim() == 4:
            return x.to(memory_format=torch.channels_last)
    return x
