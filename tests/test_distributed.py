"""Data parallelism (DistributedDataParallel): torchrun end to end, and two forked gloo ranks against one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssl_seg.engine.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_torchrun_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "ssl_seg.cli", "train", "--data", "phantom:cardiac?n=16&size=32", "--labeled-fraction", "0.5",
           "--iterations", "4", "--batch-size", "2", "--patch-size", "32", "--base-channels", "4",
           "--val-every", "2", "--device", "cpu", "--no-progress", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["world_size"] == 2
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["state"]["step"] == 3
    assert all(torch.isfinite(v).all() for v in next(iter(ckpt["models"].values())).values() if v.is_floating_point())


def _tiny_net() -> torch.nn.Module:
    """Two convolutions, no BatchNorm: per-rank batch statistics would make the union-batch check meaningless."""
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 3, 1))


def _union_batch(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, 1, 16, 16, generator=g), torch.randint(0, 3, (n, 16, 16), generator=g)


def _labeled(x: torch.Tensor, y: torch.Tensor) -> dict:
    return {"labeled": {"image": x, "mask": y, "roi": torch.ones_like(y, dtype=torch.bool)}, "unlabeled": None}


def _one_step(method) -> None:
    from ssl_seg.engine.trainer import Trainer, constant_lr

    optimizer = torch.optim.SGD(list(method.parameters()), lr=0.5, momentum=0.9)
    x, y = _union_batch()
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else None
    part = slice(None) if rank is None else slice(2 * rank, 2 * rank + 2)  # each rank: its half of the union
    Trainer(method, optimizer, constant_lr(0.5), lambda s: [], 1, torch.device("cpu")).train_step(
        0, _labeled(x[part], y[part]))


def _rank(rank: int, world: int, init_file: str, out: str) -> None:
    from ssl_seg.config import MethodConfig
    from ssl_seg.engine.distributed import data_parallel
    from ssl_seg.methods.losses import build_loss
    from ssl_seg.methods import build_method
    from ssl_seg.models import build_model
    from ssl_seg.engine.trainer import Trainer, constant_lr

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    tiny = build_method("supervised", _tiny_net(), MethodConfig(), 3, 1, build_loss("ce"))
    data_parallel(tiny, cpu)
    _one_step(tiny)
    torch.manual_seed(rank)  # different initial weights per rank: DDP and data_parallel start all from rank 0's
    unet = build_model("unet", 1, 3, base_channels=4)
    mt = build_method("mean-teacher", unet, MethodConfig(name="mean-teacher", ema_decay=0.5), 3, 3, build_loss("dice_ce"))
    data_parallel(mt, cpu)
    optimizer = torch.optim.SGD(list(mt.parameters()), lr=0.1, momentum=0.9)
    trainer = Trainer(mt, optimizer, constant_lr(0.1), lambda s: [], 3, cpu)
    x, y = _union_batch(8)
    for step in range(3):  # every rank its own images
        batch = _labeled(x[rank::2][:2], y[rank::2][:2])
        batch["unlabeled"] = {"image": x[rank::2][2:] + step}
        trainer.train_step(step, batch)
    models = mt.eval_models()
    torch.save({"tiny": dict(tiny.models["model"].named_parameters()),
                "student": dict(models["student"].named_parameters()),
                "teacher": dict(models["teacher"].named_parameters())}, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_ddp_ranks_agree_and_equal_one_process_on_the_union_batch(tmp_path):
    import torch.multiprocessing as mp

    from ssl_seg.config import MethodConfig
    from ssl_seg.methods.losses import build_loss
    from ssl_seg.methods import build_method

    import torch._dynamo  # noqa: F401  (DDP's constructor imports it: once here, not in both forked ranks)

    mp.start_processes(_rank, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="fork")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for net in ("tiny", "student", "teacher"):
        assert r0[net].keys() == r1[net].keys()
        assert all(torch.equal(r0[net][k], r1[net][k]) for k in r0[net]), net
    torch.manual_seed(0)
    single = build_method("supervised", _tiny_net(), MethodConfig(), 3, 1, build_loss("ce"))
    _one_step(single)
    torch.manual_seed(0)
    start = dict(_tiny_net().named_parameters())
    for name, value in single.models["model"].named_parameters():
        assert not torch.equal(value, start[name])  # the step moved the weights
        torch.testing.assert_close(r0["tiny"][name], value.detach(), rtol=1e-5, atol=1e-6)


def test_sync_bn_on_cpu_is_a_clear_error():
    from ssl_seg.config import MethodConfig
    from ssl_seg.engine.distributed import data_parallel
    from ssl_seg.errors import UserError
    from ssl_seg.methods.losses import build_loss
    from ssl_seg.methods import build_method

    method = build_method("supervised", _tiny_net(), MethodConfig(), 3, 1, build_loss("ce"))
    with pytest.raises(UserError, match="--sync-bn"):
        data_parallel(method, torch.device("cpu"), sync_bn=True)
