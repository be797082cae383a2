"""A method's own options: declared beside its class, flags grouped under its name, ranges checked from the
declaration, and a method added from outside the package (one registry line) gets all of that."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from torch import Tensor, nn

from ssl_seg import cli
from ssl_seg.config import MethodConfig, RunConfig
from ssl_seg.errors import UserError
from ssl_seg.flags import opt
from ssl_seg.methods.base import MethodBase, own_options
from ssl_seg.methods.losses import LossFn
from ssl_seg.methods.registry import METHODS, completed_options, for_method

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data", "phantom:cardiac?n=12&size=32", "--iterations", "2", "--val-every", "2", "--batch-size", "2",
        "--patch-size", "32", "--device", "cpu", "--no-progress", "--threads", "1"]


@dataclass
class ToyOptions:
    """The toy method's own options."""

    toy_scale: float = opt(1.0, "factor on the supervised loss", check=(lambda v: v > 0, "> 0, e.g. 1.0"))
    toy_repeats: int = opt(1, "forward passes per step", check=(lambda v: 1 <= v <= 4, "in 1..4"))


class ToyMethod(MethodBase):
    """Supervised training whose loss is scaled and averaged over repeated passes (reads its two options)."""

    uses_unlabeled = False
    options_class = ToyOptions

    def __init__(self, model: nn.Module, loss: LossFn, options: ToyOptions) -> None:
        super().__init__(loss)
        self.model, self.models, self.options = model, {"model": model}, options

    def training_step(self, batch: dict, step: int) -> dict[str, Tensor]:
        """{"sup"}: the scaled loss, averaged over `toy_repeats` passes."""
        labeled = batch["labeled"]
        losses = [self.supervised_loss(self.model(labeled["image"]), labeled) for _ in range(self.options.toy_repeats)]
        return {"sup": self.options.toy_scale * sum(losses) / len(losses)}


def build_toy(model: nn.Module, cfg: MethodConfig, num_classes: int, total: int, loss: LossFn) -> ToyMethod:
    """The toy method with its options from the config."""
    return ToyMethod(model, loss, own_options(cfg, ToyOptions))


@pytest.fixture
def toy(monkeypatch):
    """The toy method registered with one line, as a new method file's author would add it."""
    monkeypatch.setitem(METHODS, "toy", (ToyMethod, build_toy))


def _help(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit):
        cli.main(argv)
    return " ".join(capsys.readouterr().out.split())


def test_a_registered_method_gets_its_flags_grouped_under_its_name(toy, capsys):
    text = _help(["train", "--help"], capsys)
    assert "method: toy only: --toy-scale TOY_SCALE factor on the supervised loss (default: 1.0) " \
           "--toy-repeats TOY_REPEATS forward passes per step (default: 1)" in text
    assert "toy" in text.split("(semi-)supervised method; one of:")[1].split("(default")[0]  # a valid --method
    grid = _help(["ablate", "--help"], capsys)
    assert "method: toy only: --toy-scale" in grid


@pytest.mark.parametrize("argv, message", [
    (["--toy-scale", "0"], "--toy-scale 0.0: must be > 0, e.g. 1.0"),
    (["--toy-repeats", "9"], "--toy-repeats 9: must be in 1..4"),
    (["--toy-scale", "nan"], "--toy-scale nan: must be > 0, e.g. 1.0"),
])
def test_its_ranges_are_checked_from_the_declaration(toy, tmp_path, capsys, argv, message):
    assert cli.main(["train", "--method", "toy", *TINY, *argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {message}"]
    assert not (tmp_path / "r").exists()


def test_an_option_of_another_method_is_refused_naming_its_method(toy, tmp_path, capsys):
    assert cli.main(["train", "--method", "supervised", *TINY, "--toy-scale", "2", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == \
        "error: --toy-scale: an option of toy, not of --method supervised; drop it or choose that method"
    assert cli.main(["train", "--method", "unimatch", *TINY, "--pretrain-fraction", "0.1",
                     "--out", str(tmp_path / "r")]) == 2
    assert "--pretrain-fraction: an option of bcp, not of --method unimatch" in capsys.readouterr().err


def test_it_trains_and_saves_its_options_completed(toy, tmp_path):
    assert cli.main(["train", "--method", "toy", *TINY, "--toy-repeats", "2", "--out", str(tmp_path / "r")]) == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["method"]
    assert saved["name"] == "toy" and saved["options"] == {"toy_scale": 1.0, "toy_repeats": 2}
    assert RunConfig.load(tmp_path / "r" / "config.json").method.options == saved["options"]


def test_a_grid_gives_each_method_only_its_own_options(toy):
    both = MethodConfig(options={"toy_scale": 3.0, "pretrain_fraction": 0.1})
    assert for_method(both, "toy").options == {"toy_scale": 3.0}
    assert for_method(both, "bcp").options == {"pretrain_fraction": 0.1}
    assert for_method(both, "supervised").options == {}
    assert completed_options(for_method(both, "bcp")) == {"pretrain_fraction": 0.1, "mixed_unlabeled_weight": 0.5}


def test_wrong_type_in_a_saved_config_is_one_line(toy):
    with pytest.raises(UserError, match="ToyOptions.toy_repeats: 'two' is not of type int"):
        completed_options(MethodConfig(name="toy", options={"toy_repeats": "two"}))


def test_configs_saved_with_flat_method_options_still_load():
    """Runs saved before methods had own options (benchmarks/results) keep theirs; the other methods' are dropped."""
    saved = sorted((ROOT / "benchmarks" / "results").glob("**/unet__bcp__*/config.json"))
    if not saved:
        pytest.skip("no saved BCP run config in benchmarks/results")
    method = json.loads(saved[0].read_text())["method"]
    assert "pretrain_fraction" in method and "feature_dropout" in method  # the flat format
    cfg = RunConfig.load(saved[0])
    assert cfg.method.options == {"pretrain_fraction": method["pretrain_fraction"],
                                  "mixed_unlabeled_weight": method["mixed_unlabeled_weight"]}
    unimatch = dict(method, name="unimatch")
    assert RunConfig.from_dict({"method": unimatch}).method.options == {"feature_dropout": method["feature_dropout"]}
