"""--weight-ema: an EMA of the trained network's weights, evaluated and checkpointed, never fed back into training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ssl_seg.engine.checkpoint import load_checkpoint
from ssl_seg.engine.hooks import BaseHook
from ssl_seg.engine.run_models import load_run
from ssl_seg.engine.runner import run_training
from ssl_seg.engine.trainer import Trainer, constant_lr
from ssl_seg.engine.weight_ema import WeightEMA
from ssl_seg.methods.losses import cross_entropy
from ssl_seg.methods.supervised import Supervised


class RecordLive(BaseHook):
    """Keeps a copy of the live network's state after every step."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def after_step(self, trainer: Trainer) -> None:
        self.states.append({k: v.clone() for k, v in trainer.method.model.state_dict().items()})


def _train_tiny(decay: float | None, steps: int = 4) -> tuple[dict, list[dict], dict | None]:
    """(initial state, live states after each step, final EMA state) of a conv + BatchNorm net trained by SGD."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    batches = [{"labeled": {"image": torch.randn(2, 1, 6, 6, generator=gen) * 3 + 1,
                            "mask": torch.randint(0, 3, (2, 6, 6), generator=gen)}, "unlabeled": None}
               for _ in range(steps)]
    method = Supervised(model, cross_entropy)
    record = RecordLive()
    ema = WeightEMA(model, decay) if decay is not None else None
    trainer = Trainer(method, torch.optim.SGD(model.parameters(), lr=0.5), constant_lr(0.5),
                      lambda start: batches[start:], steps, torch.device("cpu"), hooks=[record], weight_ema=ema)
    trainer.fit()
    return initial, record.states, None if ema is None else ema.state_dict()


def test_weight_ema_equals_a_hand_computed_ema_of_weights_and_batchnorm_statistics():
    decay = 0.6
    initial, live, ema = _train_tiny(decay)
    expected = dict(initial)
    for step, state in enumerate(live):
        d = min(decay, 1 - 1 / (step + 1))  # 0, 0.5, then the cap 0.6
        expected = {k: (d * expected[k] + (1 - d) * v) if v.is_floating_point() else v for k, v in state.items()}
    assert ema.keys() == expected.keys()
    for k in expected:
        assert torch.allclose(ema[k], expected[k], rtol=1e-6, atol=1e-7), k
    # it is an average, neither the live network nor its initial state: running statistics included
    for k in ("0.weight", "1.running_mean", "1.running_var"):
        assert not torch.allclose(ema[k], live[-1][k], atol=1e-4), k
    assert torch.equal(ema["1.num_batches_tracked"], live[-1]["1.num_batches_tracked"])


def test_weight_ema_leaves_training_bit_identical():
    _, with_ema, _ = _train_tiny(0.6)
    _, without, _ = _train_tiny(None)
    for a, b in zip(with_ema, without, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_run_evaluates_checkpoints_and_loads_the_weight_ema(tiny_cfg, tmp_path):
    plain = run_training(tiny_cfg)
    tiny_cfg.out, tiny_cfg.train.weight_ema = str(tmp_path / "ema"), 0.9
    result = run_training(tiny_cfg)
    assert result["best_model"] == "weight_ema"
    assert {h["model"] for h in result["val_history"]} == {"weight_ema", "model"}  # the live net is still scored
    last, plain_last = load_checkpoint(Path(tiny_cfg.out) / "last.pt"), load_checkpoint(Path(plain["run_dir"]) / "last.pt")
    assert "weight_ema" not in plain_last  # off: the checkpoint holds what it held before
    for k, v in plain_last["models"]["model"].items():  # the trained network does not notice the EMA
        assert torch.equal(last["models"]["model"][k], v), k
    for name in ("best", "last"):
        ckpt = load_checkpoint(Path(tiny_cfg.out) / f"{name}.pt")
        model, cfg, _ = load_run(tiny_cfg.out, name)
        assert cfg.train.weight_ema == 0.9
        loaded = model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in ckpt["weight_ema"].items())
        assert any(not torch.equal(loaded[k], ckpt["models"]["model"][k]) for k in loaded)


def test_with_a_mean_teacher_the_weight_ema_follows_the_student_and_is_evaluated_first():
    from ssl_seg.config import MethodConfig
    from ssl_seg.engine.weight_ema import averaged_network, evaluated_networks
    from ssl_seg.methods import build_method

    method = build_method("mean-teacher", nn.Conv2d(1, 3, 1), MethodConfig(name="mean-teacher"), 3, 10, cross_entropy)
    ema = WeightEMA(averaged_network(method), 0.999)
    assert averaged_network(method) is method.models["student"]
    assert list(evaluated_networks(method, ema)) == ["weight_ema", "teacher", "student"]
    assert list(evaluated_networks(method, None)) == ["teacher", "student"]
