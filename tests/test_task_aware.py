"""Task-aware generator updates (GenSeg): the look-ahead gradient against finite differences, what a task-aware
pix2pix step changes, and a resumable run with the segmenter in its checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from gan_aug.config import GanConfig
from gan_aug.task_aware import TaskAware, lookahead_loss
from gan_aug.train import train_gan
from ssl_seg.errors import UserError

DATA = "phantom:cardiac?n=20&size=32"


def _tiny_nets() -> tuple[nn.Module, nn.Module]:
    """A 1x1-conv 'generator' (1 -> 1 channel) and a 3x3-conv segmenter (1 -> 3 classes), float64."""
    torch.manual_seed(0)
    generator = nn.Conv2d(1, 1, 1).double()
    segmenter = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 1)).double()
    return generator, segmenter


def _task_loss(generator: nn.Module, segmenter: nn.Module, data: dict[str, torch.Tensor], step: float) -> torch.Tensor:
    return lookahead_loss(segmenter, generator(data["masks"]), data["labels_a"], data["held"], data["labels_b"], step)


def test_the_lookahead_gradient_equals_finite_differences():
    generator, segmenter = _tiny_nets()
    g = torch.Generator().manual_seed(1)
    data = {"masks": torch.rand(2, 1, 5, 5, generator=g, dtype=torch.float64),
            "labels_a": torch.randint(0, 3, (2, 5, 5), generator=g),
            "held": torch.rand(2, 1, 5, 5, generator=g, dtype=torch.float64),
            "labels_b": torch.randint(0, 3, (2, 5, 5), generator=g)}
    step = 0.5
    analytic = torch.autograd.grad(_task_loss(generator, segmenter, data, step), list(generator.parameters()))
    assert all(t.abs().max() > 1e-6 for t in analytic)  # G does get a gradient through the look-ahead
    before = [p.detach().clone() for p in segmenter.parameters()]
    eps = 1e-6
    for param, grad in zip(generator.parameters(), analytic):
        flat, numeric = param.data.view(-1), torch.zeros_like(grad).view(-1)
        for i in range(flat.numel()):
            flat[i] += eps
            up = _task_loss(generator, segmenter, data, step).item()
            flat[i] -= 2 * eps
            down = _task_loss(generator, segmenter, data, step).item()
            flat[i] += eps
            numeric[i] = (up - down) / (2 * eps)
        torch.testing.assert_close(grad.view(-1), numeric, rtol=1e-5, atol=1e-8)
    assert all(torch.equal(a, b) for a, b in zip(before, segmenter.parameters()))  # S itself is not stepped
    # without the look-ahead step G's images do not reach the held-out loss: the gradient is zero
    flat = torch.autograd.grad(_task_loss(generator, segmenter, data, 0.0), list(generator.parameters()),
                               allow_unused=True)
    assert all(t is None or t.abs().max() == 0 for t in flat)


def test_the_segmenter_step_trains_on_half_a_and_every_generated_pair():
    task = TaskAware(1, 3, torch.device("cpu"), weight=1.0, step_size=0.1, base_channels=4)
    real, fake = torch.rand(4, 1, 16, 16) * 2 - 1, torch.rand(4, 1, 16, 16) * 2 - 1
    labels = torch.randint(0, 3, (4, 16, 16))
    before = [p.detach().clone() for p in task.segmenter.parameters()]
    loss = task.segmenter_step(fake.requires_grad_(), real, labels)["S"]
    assert loss.requires_grad is False and fake.grad is None  # generated pairs are detached
    assert any(not torch.equal(a, b) for a, b in zip(before, task.segmenter.parameters()))
    assert TaskAware.halves(4) == (slice(0, 2), slice(2, 4)) and TaskAware.halves(5) == (slice(0, 3), slice(3, 5))
    assert task.generator_loss(fake[:1], real[:1], labels[:1]).item() == 0.0  # one pair: nothing held out


def _tiny_cfg(out: Path, **kw) -> GanConfig:
    base = dict(data=DATA, labeled_fraction=0.3, out=str(out), iterations=4, batch_size=4, patch_size=32, ngf=8,
                ndf=8, device="cpu", progress=False, log_every=1, image_every=2, val_every=2, checkpoint_every=2)
    return GanConfig(**{**base, **kw})


def test_a_task_aware_run_logs_its_terms_and_resumes_bit_exact(tmp_path):
    whole = train_gan(_tiny_cfg(tmp_path / "whole", task_weight=1.0))
    assert whole["iterations"] == 4
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "whole" / "tb"))
    events.Reload()
    assert {"loss/G_task", "loss/S"} <= set(events.Tags()["scalars"])
    train_gan(_tiny_cfg(tmp_path / "split", task_weight=1.0, iterations=2))
    train_gan(_tiny_cfg(tmp_path / "split", task_weight=1.0, iterations=4), resume=True)
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["networks"]
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)["networks"]
    for key in ("G", "S"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    train_gan(_tiny_cfg(tmp_path / "plain"))
    plain = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=True)["networks"]
    assert "S" not in plain
    assert any(not torch.equal(plain["G"][k], a["G"][k]) for k in a["G"])  # the task term moved G
    saved = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert saved["task_weight"] == 1.0


def test_bad_task_flags_are_one_line():
    with pytest.raises(UserError, match=r"--task-weight -1.0: must be >= 0"):
        GanConfig(task_weight=-1.0).validate()
    with pytest.raises(UserError, match=r"--task-step-size 0.0: must be positive"):
        GanConfig(task_step_size=0.0).validate()
