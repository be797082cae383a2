"""Data-parallel training through torchrun: two CPU processes on the gloo backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from ssl_seg.checkpoint import load_checkpoint

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
