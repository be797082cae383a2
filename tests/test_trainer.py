"""The training loop end to end on tiny phantoms: outputs, exact resume, non-finite guard, evaluation, predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_seg.engine.checkpoint import load_checkpoint
from ssl_seg.errors import UserError
from ssl_seg.engine.report import evaluate_run
from ssl_seg.engine.predict import predict_folder
from ssl_seg.engine.runner import run_training
from ssl_seg.engine.trainer import Trainer


def test_run_writes_all_outputs(tiny_cfg):
    result = run_training(tiny_cfg)
    out = Path(tiny_cfg.out)
    for name in ("config.json", "split.json", "best.pt", "last.pt", "result.json"):
        assert (out / name).is_file(), name
    assert list((out / "tb").glob("events.out.tfevents*"))
    assert result["iterations"] == 6 and result["best_step"] in (2, 5)
    assert 0.0 <= result["val_dice"] <= 1.0
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["backbone"] == "unet" and saved["train"]["iterations"] == 6
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["state"]["step"] == 5 and ckpt["config"]["data"]["patch_size"] == 32


def test_existing_run_requires_resume(tiny_cfg):
    run_training(tiny_cfg)
    with pytest.raises(UserError, match="--resume"):
        run_training(tiny_cfg)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    models = load_checkpoint(path)["models"]
    return next(iter(models.values()))


@pytest.mark.parametrize("method, weight_ema", [("supervised", None), ("mean-teacher", None), ("supervised", 0.9)])
def test_resume_is_exact(tiny_cfg, tmp_path, killed_at_step, method, weight_ema):
    tiny_cfg.method.name = method
    tiny_cfg.train.weight_ema = weight_ema
    tiny_cfg.train.iterations = 8
    tiny_cfg.train.val_every = 4
    tiny_cfg.data.num_workers, tiny_cfg.data.cache_mb = 0, 0  # the plain path: no workers, no cache
    straight = run_training(tiny_cfg)

    tiny_cfg.out = str(tmp_path / "killed")
    tiny_cfg.data.num_workers, tiny_cfg.data.cache_mb = 2, 64  # killed and resumed with prefetching and a cache
    killed_at_step(lambda: run_training(tiny_cfg), 6)
    assert load_checkpoint(Path(tiny_cfg.out) / "last.pt")["state"]["step"] == 3
    resumed = run_training(tiny_cfg, resume=True)

    a, b = _weights(Path(straight["run_dir"]) / "last.pt"), _weights(Path(resumed["run_dir"]) / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    if weight_ema is not None:
        a, b = (load_checkpoint(Path(r["run_dir"]) / "last.pt")["weight_ema"] for r in (straight, resumed))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert straight["best_model"] == resumed["best_model"] == "weight_ema"
    assert resumed["val_dice"] == pytest.approx(straight["val_dice"])


def test_non_finite_loss_stops_with_clear_error(tiny_cfg, monkeypatch):
    from ssl_seg.methods.supervised import Supervised

    monkeypatch.setattr(Supervised, "training_step", lambda self, batch, step: {"sup": torch.tensor(float("nan"))})
    with pytest.raises(UserError, match="non-finite loss"):
        run_training(tiny_cfg)


def test_training_learns_on_phantoms(tiny_cfg):
    # Judged on the training data: validation Dice of so tiny a run (2-3 validation cases) moved between 0.05 and
    # 0.39 with seeds and float rounding; the loss and the Dice on the labeled images move the same way every time.
    from ssl_seg.engine.curves import read_scalars

    tiny_cfg.model.base_channels = 8
    tiny_cfg.train.optimizer = "adamw"
    tiny_cfg.train.lr = 3e-3
    tiny_cfg.train.iterations = 1
    run_training(tiny_cfg)
    before = evaluate_run(tiny_cfg.out, checkpoint="last", split="labeled", device="cpu", postprocess=False)["dice"]
    tiny_cfg.out = tiny_cfg.out + "_long"
    tiny_cfg.train.iterations = 150
    tiny_cfg.train.val_every = 150
    run_training(tiny_cfg)
    after = evaluate_run(tiny_cfg.out, checkpoint="last", split="labeled", device="cpu", postprocess=False)["dice"]
    _, losses = read_scalars(Path(tiny_cfg.out) / "tb")["loss/sup"]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10  # seeds 0-2: 2.1-2.5 -> 0.8-1.0
    assert last < 0.6 * first, (first, last)
    assert after > before + 0.1, (before, after)  # seeds 0-2: 0.01-0.02 -> 0.15-0.67


def test_evaluate_and_predict(tiny_cfg, tmp_path):
    run_training(tiny_cfg)
    metrics = evaluate_run(tiny_cfg.out, split="test", device="cpu")
    for key in ("dice", "iou", "hd95", "asd", "per_class", "per_case"):
        assert key in metrics
    assert set(metrics["per_class"]) == {"1", "2", "3"}
    written = json.loads((Path(tiny_cfg.out) / "metrics_test.json").read_text())
    assert written["dice"] == pytest.approx(metrics["dice"])

    from skimage import io as skio

    inp = tmp_path / "imgs"
    inp.mkdir()
    rng = np.random.default_rng(0)
    for i, shape in enumerate([(32, 32), (45, 70)]):
        skio.imsave(inp / f"im{i}.png", (rng.random(shape) * 255).astype(np.uint8), check_contrast=False)
    n = predict_folder(tiny_cfg.out, inp, tmp_path / "pred", overlay=True, device="cpu")
    assert n == 2
    pred = skio.imread(tmp_path / "pred" / "im1.png")
    assert pred.shape == (45, 70) and pred.max() <= 3
    assert skio.imread(tmp_path / "pred" / "overlay" / "im1.png").shape == (45, 70, 3)


def test_batch_composition_rules(tiny_cfg):
    from ssl_seg.engine.runner import _batch_sizes

    tiny_cfg.train.batch_size = 8
    assert _batch_sizes(tiny_cfg, ssl=False) == (8, 0)
    assert _batch_sizes(tiny_cfg, ssl=True) == (8, 8)  # same labeled images per step as supervised
    tiny_cfg.train.labeled_batch_size = 3
    assert _batch_sizes(tiny_cfg, ssl=True) == (3, 5)
    tiny_cfg.train.labeled_batch_size = 8
    with pytest.raises(UserError, match="--labeled-batch-size"):
        _batch_sizes(tiny_cfg, ssl=True)


class _HalvesDistance:
    """A self-updating method: w <- w - 0.25 * d/dw (w - 3)^2, which halves the distance to 3 every step."""

    def __init__(self, blow_up_at: int | None = None, value: float = float("nan")):
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.models = {"w": torch.nn.ParameterList([self.w])}
        self.opt = torch.optim.SGD([self.w], lr=0.25)
        self.blow_up_at, self.value = blow_up_at, value

    def optimization_step(self, batch: dict, step: int) -> dict[str, torch.Tensor]:
        loss = (self.w - 3) ** 2
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        if step == self.blow_up_at:
            loss = torch.tensor(self.value)
        return {"dist2": loss.detach(), "w": self.w.detach().clone()}

    def eval_models(self) -> dict:
        return self.models


def test_self_updating_method_runs_in_the_loop_with_its_hooks():
    from ssl_seg.engine.hooks import BaseHook, due

    seen = []

    class Record(BaseHook):
        def after_step(self, trainer):
            seen.append((trainer.state.step, trainer.losses["w"], due(trainer, 2), due(trainer, 0)))

    method = _HalvesDistance()
    batches = lambda start: ({"labeled": {"image": torch.zeros(1, 1, 2, 2)}} for _ in range(start, 3))
    trainer = Trainer(method, None, lambda s: 0.25, batches, 3, torch.device("cpu"), hooks=[Record()])
    trainer.fit()
    # hand values: w = 1.5, 2.25, 2.625; due every 2 at step 1 and at the last step; every 0 never
    assert seen == [(0, 1.5, False, False), (1, 2.25, True, False), (2, 2.625, True, False)]
    assert trainer.losses == {"dist2": 0.5625, "w": 2.625}  # (2.25 - 3)^2 before the last update; no "total"
    with pytest.raises(TypeError, match="optimization_step"):
        Trainer(object(), None, lambda s: 0.0, batches, 3, torch.device("cpu"))


@pytest.mark.parametrize("value, message", [(float("inf"), r"non-finite loss \['dist2'\] at step 1; try this"),
                                            (5e6, r"diverged at step 1 \(dist2 = 5e\+06, above 1e\+06\); try this")])
def test_guard_stops_a_self_updating_method(value, message):
    method = _HalvesDistance(blow_up_at=1, value=value)
    batches = lambda start: ({"labeled": {"image": torch.zeros(1, 1, 2, 2)}} for _ in range(start, 3))
    trainer = Trainer(method, None, lambda s: 0.25, batches, 3, torch.device("cpu"), loss_limit=1e6, advice="try this")
    with pytest.raises(UserError, match=message):
        trainer.fit()
    assert trainer.state.step == 0  # the bad step is not counted, so no hook checkpoints it
    method = _HalvesDistance(blow_up_at=1, value=value)
    nan_image = {"labeled": {"image": torch.full((1, 1, 2, 2), float("nan"))}}
    with pytest.raises(UserError, match="data problem"):
        Trainer(method, None, lambda s: 0.25, lambda start: [nan_image] * 3, 3, torch.device("cpu"),
                loss_limit=1e6).fit()


@pytest.mark.parametrize("schedule", [None, "constant", "poly"])
def test_learning_rate_schedule_reaches_the_optimizer(tiny_cfg, schedule):
    from ssl_seg.engine.curves import read_scalars

    tiny_cfg.train.optimizer, tiny_cfg.train.lr, tiny_cfg.train.lr_schedule = "adamw", 1e-2, schedule
    tiny_cfg.train.log_every = 1
    run_training(tiny_cfg)
    steps, lrs = read_scalars(Path(tiny_cfg.out) / "tb")["lr"]
    # poly: 1e-2 * (1 - step / 6) ** 0.9 by hand at steps 0..5; AdamW's default (None) is constant
    expected = [1e-2 * (1 - s / 6) ** 0.9 if schedule == "poly" else 1e-2 for s in steps]
    assert list(steps) == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)
    if schedule == "poly":
        assert lrs[5] == pytest.approx(1e-2 * (1 / 6) ** 0.9) and lrs[5] < 0.2e-2


def test_unknown_learning_rate_schedule_is_a_user_error(tiny_cfg):
    tiny_cfg.train.lr_schedule = "cosine"
    with pytest.raises(UserError, match="--lr-schedule cosine: unknown; valid: constant, poly"):
        run_training(tiny_cfg)


def test_build_optimizer_defaults_and_schedules() -> None:
    from ssl_seg.config import TrainConfig
    from ssl_seg.engine.optim import build_optimizer

    params = [torch.nn.Parameter(torch.zeros(2))]
    sgd, lr_at = build_optimizer(TrainConfig(iterations=100), params)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    assert lr_at(0) == pytest.approx(0.01) and lr_at(50) == pytest.approx(0.01 * 0.5 ** 0.9)  # poly by default
    adamw, lr_at = build_optimizer(TrainConfig(optimizer="adamw", iterations=100, weight_decay=0.0), params)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["weight_decay"] == 0.0
    assert lr_at(0) == lr_at(99) == pytest.approx(1e-3)  # constant by default
    _, lr_at = build_optimizer(TrainConfig(optimizer="adamw", lr=2e-3, lr_schedule="poly", iterations=10), params)
    assert lr_at(5) == pytest.approx(2e-3 * 0.5 ** 0.9)
