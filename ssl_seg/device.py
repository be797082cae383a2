"""Device choice, mixed precision and memory format: CUDA when present, CPU always works."""

from __future__ import annotations

import contextlib
import os
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


def cpu_supports_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 / AMX); elsewhere bf16 is emulated, slowly."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def amp_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """The autocast dtype for `amp` ('auto'|'bf16'|'fp16'|'off'); None means full precision.

    On CPU only an explicit 'bf16' autocasts (refused on a CPU without native bf16); 'auto' and 'fp16' stay
    float32 there, so CPU results keep their numerics unless bf16 is asked for.
    """
    if amp not in ("auto", "bf16", "fp16", "off"):
        raise UserError(f"--amp {amp}: use auto, bf16, fp16 or off")
    if device.type != "cuda":
        if amp != "bf16":
            return None
        if not cpu_supports_bf16():
            raise UserError("--amp bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX); use --amp off")
        return torch.bfloat16
    if amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager:
    """torch.autocast on `device` with `dtype`, or a no-op when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_memory_format(x: torch.Tensor | torch.nn.Module, device: torch.device, channels_last: bool,
                     on_cpu: bool = False):
    """Apply channels_last to 2-D nets and 4-D tensors when asked, on CUDA (and on CPU with `on_cpu`); else unchanged.

    `on_cpu` only where measured faster (benchmarks/RESULTS.md): a 128 px supervised U-Net step took 0.83x a bare
    contiguous step in channels_last (0.98x contiguous), but the pix2pix GAN step got slower (1.28x). Nets with
    3-D (5-D weight) convolutions stay as they are: channels_last_3d has not been measured here.
    """
    if not channels_last or not (device.type == "cuda" or (on_cpu and device.type == "cpu")):
        return x
    if isinstance(x, torch.nn.Module):
        planar = all(p.dim() != 5 for p in x.parameters())
        return x.to(memory_format=torch.channels_last) if planar else x
    return x.to(memory_format=torch.channels_last) if x.dim() == 4 else x


def cpu_cores() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_threads(requested: int | None) -> int | None:
    """torch CPU threads for a run: as asked, else this process's share of the cores, else None (torch's default).

    The share: SLURM_CPUS_PER_TASK under Slurm (grid cells submitted with --executor slurm), cores divided by
    torchrun's LOCAL_WORLD_SIZE for data-parallel processes. Two processes with 2 threads each on 2 cores ran
    2-4x slower than with 1 thread each, so processes sharing a machine must not each take all cores.
    """
    if requested is not None:
        if requested < 1:
            raise UserError(f"--threads {requested}: use at least 1")
        if requested > 4 * cpu_cores():  # oversubscribed past use, and thread pools of that size exhaust memory
            raise UserError(f"--threads {requested}: this process may run on {cpu_cores()} core(s); use at most "
                            f"{cpu_cores()} (more threads than cores only slow a run down)")
        return requested
    if os.environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return max(1, int(os.environ["SLURM_CPUS_PER_TASK"]))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, cpu_cores() // local) if local > 1 else None
