"""Warm start (--init-from, ablate --warm-start): the right weights reach every network, bad starts are refused."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from ssl_seg.config import RunConfig
from ssl_seg.engine.checkpoint import load_checkpoint
from ssl_seg.engine.run_models import load_run
from ssl_seg.engine.runner import check_config, run_training
from ssl_seg.errors import UserError
from ssl_seg.experiments.ablation import ablation_runs
from ssl_seg.experiments.grid import run_grid


def _start(cfg: RunConfig, tmp_path: Path) -> Path:
    """A finished supervised run to start from."""
    start = copy.deepcopy(cfg)
    start.out = str(tmp_path / "start")
    run_training(start)
    return Path(start.out)


def _warm(cfg: RunConfig, start: Path, out: Path, method: str = "mean-teacher") -> RunConfig:
    warm = copy.deepcopy(cfg)
    warm.method.name, warm.model.init_from, warm.out = method, str(start), str(out)
    return warm


def test_init_from_loads_the_chosen_network_into_student_and_teacher(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    start = _start(tiny_cfg, tmp_path)
    chosen, _, _ = load_run(start, "best")
    warm = _warm(tiny_cfg, start, tmp_path / "warm")
    warm.train.iterations, warm.train.val_every = 3, 3
    result = run_training(warm)

    history = result["val_history"]
    assert [h["step"] for h in history[:2]] == [-1, -1]  # teacher and student, validated before the first step
    start_score = json.loads((start / "result.json").read_text())["val_dice"]
    assert history[0]["dice"] == pytest.approx(start_score, abs=1e-6)
    assert result["val_dice"] >= start_score - 1e-9  # best.pt can always fall back to the start
    # the teacher started from the start too: with steps too small to move the student, it still holds the start
    tiny = _warm(tiny_cfg, start, tmp_path / "tiny")
    tiny.train.iterations, tiny.train.lr = 2, 1e-9
    run_training(tiny)
    ckpt = load_checkpoint(Path(tiny.out) / "last.pt")
    weights = {k for k, v in chosen.state_dict().items() if v.is_floating_point() and "running" not in k}
    for state in (ckpt["models"]["student"], ckpt["method"]["teacher"]):
        assert all(torch.allclose(state[k], chosen.state_dict()[k], atol=1e-5) for k in weights)


def test_warm_run_trains_from_the_start_weights_not_from_its_own_init(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    start_cfg = copy.deepcopy(tiny_cfg)
    start_cfg.train.seed = 7  # another init than the warm run's seed 0 would draw
    start = _start(start_cfg, tmp_path)
    chosen = load_run(start, "best")[0].state_dict()
    for name, init in (("warm", str(start)), ("cold", None)):
        cfg = copy.deepcopy(tiny_cfg)
        cfg.method.name, cfg.model.init_from, cfg.out = "supervised", init, str(tmp_path / name)
        cfg.train.iterations, cfg.train.lr = 1, 1e-9  # one step too small to move the weights visibly
        run_training(cfg)
    for name, expected in (("warm", True), ("cold", False)):
        after = load_checkpoint(tmp_path / name / "last.pt")["models"]["model"]
        close = all(torch.allclose(after[k].float(), chosen[k].float(), atol=1e-5) for k in after
                    if after[k].is_floating_point() and "running" not in k)
        assert close is expected, name


@pytest.mark.parametrize("change, words", [
    (lambda c: setattr(c.model, "base_channels", 8), "--base-channels 4"),
    (lambda c: setattr(c.model, "backbone", "attention_unet"), "--backbone unet"),
    (lambda c: setattr(c.data, "data", "phantom:lesion?n=24&size=32"), "num_classes"),
    (lambda c: setattr(c.data, "split_seed", 5), "label budget"),
    (lambda c: setattr(c.data, "labeled_fraction", 0.25), "label budget"),
])
def test_init_from_refuses_a_start_that_does_not_fit(tiny_cfg: RunConfig, tmp_path: Path, change, words) -> None:
    start = _start(tiny_cfg, tmp_path)
    warm = _warm(tiny_cfg, start, tmp_path / "warm")
    change(warm)
    with pytest.raises(UserError, match="--init-from") as e:
        run_training(warm)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "warm" / "last.pt").exists()


def test_init_from_refuses_a_folder_without_best_pt(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no best.pt there"):
        run_training(_warm(tiny_cfg, tmp_path / "empty", tmp_path / "warm"))


def test_init_from_refuses_a_start_that_saw_this_runs_test_images(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    start_cfg = copy.deepcopy(tiny_cfg)
    start_cfg.data.labeled_fraction = 1.0  # labels every training image: a superset of the warm run's labels
    start_cfg.data.fractions = (0.5, 0.25, 0.25)
    start = _start(start_cfg, tmp_path)
    warm = _warm(tiny_cfg, start, tmp_path / "warm")
    warm.data.labeled_fraction = 1.0
    warm.data.fractions = (0.25, 0.25, 0.5)  # the same seed's larger test part holds some of the start's training
    with pytest.raises(UserError, match="--init-from .*(trained on|learned from)"):
        run_training(warm)


def test_ablate_warm_start_trains_the_start_first_and_names_warm_cells(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    runs = ablation_runs(tiny_cfg, ["supervised", "unimatch"], [0.5], [], [0], ["unet"], full_reference=False,
                         warm_start=True)
    assert [r.name for r in runs] == ["unet__supervised__f0.5__s0", "unet__supervised+warm__f0.5__s0",
                                      "unet__unimatch+warm__f0.5__s0"]
    assert runs[2].start is runs[0] and runs[1].start is runs[0]
    # only the UniMatch cell in this shard: its start is trained first, then it starts from it
    run_grid(runs[2:], tmp_path / "grid", progress=False)
    grid = tmp_path / "grid" / "runs"
    assert (grid / "unet__supervised__f0.5__s0" / "result.json").is_file()
    warm = json.loads((grid / "unet__unimatch+warm__f0.5__s0" / "result.json").read_text())
    saved = RunConfig.load(grid / "unet__unimatch+warm__f0.5__s0" / "config.json")
    assert Path(saved.model.init_from) == (grid / "unet__supervised__f0.5__s0").resolve()
    assert warm["tags"]["method"] == "unimatch+warm" and warm["val_history"][0]["step"] == -1


class _TinyNet(torch.nn.Module):
    """A 1x1 convolution to 2 classes that accepts UniMatch's feature_dropout argument."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 1)

    def forward(self, x: torch.Tensor, feature_dropout: float = 0.0) -> torch.Tensor:
        return self.conv(torch.nn.functional.dropout(x, feature_dropout, self.training))


@pytest.mark.parametrize("frozen, labelled", [(True, 1), (False, 0)])
def test_frozen_teacher_makes_the_pseudo_labels_from_the_start(frozen: bool, labelled: int) -> None:
    from ssl_seg.methods.pseudo_labeler import PseudoLabeler
    from ssl_seg.methods.unimatch import UniMatch

    net = _TinyNet()
    with torch.no_grad():  # the start predicts class 1 everywhere
        net.conv.weight.zero_()
        net.conv.bias.copy_(torch.tensor([-10.0, 10.0]))
    method = UniMatch(net, lambda logits, mask, roi: logits.mean(), PseudoLabeler(2, 0.95, "fixed", 0.999, False),
                      cutmix_prob=0.0, feature_dropout=0.5, frozen_teacher=frozen)
    with torch.no_grad():  # the student has since moved to class 0
        net.conv.bias.copy_(torch.tensor([10.0, -10.0]))
    images = torch.rand(2, 1, 8, 8)
    batch = {"labeled": {"image": images, "mask": torch.zeros(2, 8, 8, dtype=torch.long)},
             "unlabeled": {"image": images}}
    out = method.training_step(batch, step=0)
    assert out[f"stat/confident_c{labelled}"].item() == 1.0 and out[f"stat/confident_c{1 - labelled}"].item() == 0.0
    assert set(method.state_dict()) == ({"teacher"} if frozen else set())
    assert list(method.eval_models()) == ["model"]


def test_frozen_teacher_stays_the_start_while_the_student_trains(tiny_cfg: RunConfig, tmp_path: Path) -> None:
    start = _start(tiny_cfg, tmp_path)
    chosen = load_run(start, "best")[0].state_dict()
    warm = _warm(tiny_cfg, start, tmp_path / "warm", method="unimatch")
    warm.method.options = {"frozen_teacher": True}
    warm.train.iterations, warm.train.val_every = 4, 4
    run_training(warm)
    ckpt = load_checkpoint(Path(warm.out) / "last.pt")
    teacher, student = ckpt["method"]["teacher"], ckpt["models"]["model"]
    assert all(torch.equal(teacher[k], chosen[k]) for k in chosen)  # weights and BatchNorm statistics, to the bit
    assert not all(torch.allclose(student[k], chosen[k]) for k in chosen if student[k].is_floating_point())


def test_frozen_teacher_without_init_from_is_refused_in_one_line(tiny_cfg: RunConfig) -> None:
    cfg = copy.deepcopy(tiny_cfg)
    cfg.method.name, cfg.method.options = "unimatch", {"frozen_teacher": True}
    with pytest.raises(UserError, match="--frozen-teacher .* --init-from"):
        check_config(cfg)


def test_grid_checks_a_warm_cell_as_it_will_run_with_init_from(tiny_cfg: RunConfig) -> None:
    from ssl_seg.experiments.grid import check_grid

    base = copy.deepcopy(tiny_cfg)
    base.method.options = {"frozen_teacher": True}
    check_grid(ablation_runs(base, ["unimatch"], [0.5], [], [0], ["unet"], full_reference=False, warm_start=True))
    with pytest.raises(UserError, match="unimatch__f0.5__s0: --frozen-teacher"):  # a cold cell has no start
        check_grid(ablation_runs(base, ["unimatch"], [0.5], [], [0], ["unet"], full_reference=False))


def test_a_killed_frozen_teacher_run_resumes_exactly(tiny_cfg: RunConfig, tmp_path: Path, killed_at_step) -> None:
    start = _start(tiny_cfg, tmp_path)
    warm = _warm(tiny_cfg, start, tmp_path / "straight", method="unimatch")
    warm.method.options = {"frozen_teacher": True}
    warm.train.iterations, warm.train.val_every = 8, 4
    run_training(warm)
    killed = copy.deepcopy(warm)
    killed.out = str(tmp_path / "killed")
    killed_at_step(lambda: run_training(killed), 6)
    run_training(killed, resume=True)  # rebuilt without the start: the teacher comes back from the checkpoint
    a, b = (load_checkpoint(Path(c.out) / "last.pt") for c in (warm, killed))
    for x, y in ((a["models"]["model"], b["models"]["model"]), (a["method"]["teacher"], b["method"]["teacher"])):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
