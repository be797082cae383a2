"""Data parallelism: torchrun's process group and DistributedDataParallel around a method's trainable networks."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import UserError


def distributed_context() -> tuple[int, int]:
    """(rank, world size); joins the torchrun process group when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank() if world > 1 else 0), world


def data_parallel(method, device: torch.device, sync_bn: bool = False) -> None:
    """Route `method`'s training forward passes through DistributedDataParallel, one wrapper per trainable net.

    DDP broadcasts rank 0's weights when it wraps a net and averages gradients during backward (bucketed,
    overlapping the backward pass). EMA teachers stay outside it: every rank updates its own copy from
    identical student weights. `method.models` keeps the bare networks for checkpoints and evaluation.
    `sync_bn` converts BatchNorm to SyncBatchNorm (batch statistics over all ranks; CUDA only in torch).
    """
    if sync_bn and device.type != "cuda":
        raise UserError("--sync-bn: torch's SyncBatchNorm runs on CUDA only; drop --sync-bn on CPU")
    ids = [device.index] if device.type == "cuda" else None

    def wrap(net: nn.Module) -> nn.Module:
        if sync_bn:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        return DistributedDataParallel(net, device_ids=ids)

    method.distribute(wrap)
    for tensor in _tensors(method.state_dict()):  # EMA teachers start from rank 0's, like the students
        dist.broadcast(tensor, src=0)


def _tensors(tree: Any) -> list[torch.Tensor]:
    """Every tensor in a nested dict/list (state dicts share storage with the live weights)."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    values = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, (list, tuple)) else []
    return [t for v in values for t in _tensors(v)]
