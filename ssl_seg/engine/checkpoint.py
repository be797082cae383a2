"""Checkpoints as one plain dict (format version, config, networks, optimizer, scaler, step, RNG), atomic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..io_utils import atomic_torch_save

FORMAT_VERSION = 1


def rng_state() -> dict[str, Any]:
    """torch CPU (and CUDA) generator states; batches are seeded per step, so nothing else is needed."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write `payload` plus the format version atomically."""
    atomic_torch_save({"format_version": FORMAT_VERSION, **payload}, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with weights_only=True; missing or corrupt files raise UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found; train first or pick --checkpoint best|last that exists")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged file fails anywhere in the unpickler (IndexError, KeyError, ...);
        # weights_only=True means nothing in it ran
        raise UserError(f"{path}: unreadable checkpoint ({type(e).__name__}); delete it and re-train or resume") from None
    if not isinstance(ckpt, dict) or ckpt.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: not a medseg-lab checkpoint of format {FORMAT_VERSION}")
    return ckpt
