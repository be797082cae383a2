"""CPU fast path: bf16 autocast on request, channels_last U-Nets, thread counts for processes sharing a machine."""

from __future__ import annotations

import pytest
import torch

from ssl_seg.device import amp_dtype, cpu_supports_bf16, resolve_threads
from ssl_seg.errors import UserError
from ssl_seg.engine.run_models import build_method_for
from ssl_seg.engine.runner import run_training

CPU = torch.device("cpu")


def test_cpu_autocasts_only_on_an_explicit_bf16():
    assert amp_dtype(CPU, "auto") is None and amp_dtype(CPU, "fp16") is None and amp_dtype(CPU, "off") is None
    if cpu_supports_bf16():
        assert amp_dtype(CPU, "bf16") is torch.bfloat16
    else:
        with pytest.raises(UserError, match="--amp bf16"):
            amp_dtype(CPU, "bf16")
    with pytest.raises(UserError, match="--amp fp8"):
        amp_dtype(CPU, "fp8")


@pytest.mark.skipif(not cpu_supports_bf16(), reason="this CPU has no native bfloat16")
def test_bf16_training_on_cpu_runs_in_bf16_and_stays_finite(tiny_cfg):
    tiny_cfg.train.amp, tiny_cfg.method.name = "bf16", "mean-teacher"
    seen = set()
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: seen.add(out.dtype) if isinstance(module, torch.nn.Conv2d) else None)
    try:
        result = run_training(tiny_cfg)
    finally:
        hook.remove()
    assert torch.bfloat16 in seen and result["val_dice"] is not None and 0.0 <= result["val_dice"] <= 1.0


def test_unet_is_channels_last_on_cpu_and_computes_the_same(tiny_cfg):
    info = {"in_channels": 1, "num_classes": 4}
    torch.manual_seed(0)
    fast = build_method_for(tiny_cfg, info, CPU).models["model"]
    tiny_cfg.train.channels_last = False
    torch.manual_seed(0)
    plain = build_method_for(tiny_cfg, info, CPU).models["model"]
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(fast(x.to(memory_format=torch.channels_last)), plain(x), rtol=1e-4, atol=1e-4)


def test_threads_per_process(monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert resolve_threads(3) == 3 and resolve_threads(None) is None
    monkeypatch.setattr("ssl_seg.device.cpu_cores", lambda: 8)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert resolve_threads(None) == 2  # torchrun: the cores split between the local processes
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "5")
    assert resolve_threads(None) == 5
    with pytest.raises(UserError, match="--threads 0"):
        resolve_threads(0)


def test_volumetric_nets_and_tensors_keep_their_layout():
    from ssl_seg.device import to_memory_format
    from ssl_seg.models import build_model

    try:
        net = build_model("unet", 1, 2, base_channels=4, spatial_dims=3)
    except TypeError:
        pytest.skip("no 3-D U-Net in this tree")
    net = to_memory_format(net, CPU, True, on_cpu=True)
    x = to_memory_format(torch.randn(2, 1, 16, 16, 16), CPU, True, on_cpu=True)
    assert x.is_contiguous() and net(x).shape == (2, 2, 16, 16, 16)
