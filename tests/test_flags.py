"""Flags generated from the config dataclasses: every field has a flag, each flag lands in its field, --help says
the default and the registry's names, and a bad value is one line naming the flag."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import pytest

from gan_aug import cli as gan_cli
from gan_aug.config import GanConfig
from ssl_seg import cli
from ssl_seg.config import RunConfig
from ssl_seg.flags import Parser, add_config_flags, config_flags, given, opt


def leaf_fields(cls: type, prefix: str = "") -> dict[str, dataclasses.Field]:
    """Every leaf field of a config dataclass by 'section.name', walked here without the generator; MethodConfig's
    `options` stands for the own options of every registered method ('method.options.<name>')."""
    from ssl_seg.methods.registry import METHODS

    leaves = {}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            leaves.update(leaf_fields(type(default), f"{prefix}{f.name}."))
        elif f"{prefix}{f.name}" == "method.options":
            for method_class, _ in METHODS.values():
                if method_class.options_class:
                    leaves.update(leaf_fields(method_class.options_class, "method.options."))
        else:
            leaves[f"{prefix}{f.name}"] = f
    return leaves


def leaf_paths(cls: type) -> list[str]:
    return list(leaf_fields(cls))


def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """dest -> action of every flag."""
    return {a.dest: a for a in parser._actions if a.option_strings}


SSL_TRAIN = subparser(cli.build_parser(), "train")
GAN_TRAIN = subparser(gan_cli.build_parser(), "train")


@pytest.mark.parametrize("config, parser", [(RunConfig, SSL_TRAIN), (GanConfig, GAN_TRAIN)], ids=["ssl", "gan"])
def test_every_config_field_has_a_flag_with_help(config, parser):
    flags, fields = options(parser), leaf_fields(config)
    assert len(fields) >= 30
    missing = [p for p in fields if p not in flags]
    assert not missing, f"config fields without a flag: {missing}"
    no_help = [p for p, f in fields.items() if not f.metadata.get("help")]
    assert not no_help, f"config fields without help (write them as opt(default, help)): {no_help}"
    for path, f in fields.items():
        assert flags[path].help.startswith(f.metadata["help"])


def test_the_issue_11_fields_and_existing_spellings_are_flags():
    names = {s for a in SSL_TRAIN._actions for s in a.option_strings}
    for flag in ("--noise-std", "--cutmix-prob", "--feature-dropout", "--uncertainty-threshold", "--teacher-labels",
                 "--weight-decay", "--log-every", "--image-every", "--channels-last", "--fractions",
                 "--include-labeled-in-unlabeled",  # the eleven of issue 11, then the spellings that existed before
                 "--method", "--no-augment", "--no-pad", "--no-progress", "--deep-supervision", "--sync-bn",
                 "--config", "--resume", "--out"):
        assert flag in names, flag
    gan_names = {s for a in GAN_TRAIN._actions for s in a.option_strings}
    for flag in ("--num-d", "--noise-channel", "--feature-matching", "--no-progress", "--resume", "--lambda-l1"):
        assert flag in gan_names, flag


def _other_value(flag) -> tuple[list[str], object]:
    """Command-line words that set `flag` to a value other than its default, and that value as the config holds it."""
    kind, default = flag.kind, flag.default
    if kind is bool:
        return [("--no-" if default else "--") + flag.name[2:]], not default
    if flag.choices:
        if len(flag.choices) == 1:
            pytest.skip(f"{flag.name} has one choice only")
        value = next(c for c in reversed(flag.choices) if c != default)
        return [flag.name, str(value)], value
    if getattr(kind, "__origin__", None) is tuple:
        return [flag.name, "0.6", "0.2", "0.2"], (0.6, 0.2, 0.2)
    if getattr(kind, "__origin__", None) is list:
        return [flag.name, "a", flag.name, "b"], ["a", "b"]
    if kind is int:
        return [flag.name, "9"], 9
    if kind is float:
        return [flag.name, "0.3"], 0.3
    text = {"device": "cpu", "volume_by": r"^(\w+)_(\d+)$"}.get(flag.path.split(".")[-1], "some-text")
    return [flag.name, text], text


def _field(cfg, path: str):
    """The value at a dotted path (an own option not set: None)."""
    for part in path.split("."):
        cfg = cfg.get(part) if isinstance(cfg, dict) else getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("flag", SSL_TRAIN.get_default("config_flags"), ids=lambda f: f.path)
def test_each_ssl_flag_round_trips_into_its_field(flag):
    words, expected = _other_value(flag)
    args = SSL_TRAIN.parse_args(words)
    cfg = cli.config_from_args(args, args.config_flags)
    if flag.path in ("data.data", "data.split_file", "model.init_from"):  # paths are made absolute
        expected = os.path.abspath(expected)
    elif flag.path == "data.synthetic":
        expected = [os.path.abspath(p) for p in expected]
    default = RunConfig().with_absolute_paths()
    assert _field(cfg, flag.path) == expected != _field(default, flag.path)
    if flag.path.startswith("method.options."):  # an own option is set, not a default it was given
        assert _field(cfg, flag.path) != flag.default
    changed = {p for p in leaf_paths(RunConfig) if _field(cfg, p) != _field(default, p)}
    implied = {"data.labeled_fraction"} if flag.path == "data.labeled_cases" else set()  # cases win over fraction
    assert changed == {flag.path} | implied


@pytest.mark.parametrize("flag", GAN_TRAIN.get_default("config_flags"), ids=lambda f: f.path)
def test_each_gan_flag_round_trips_into_its_field(flag):
    words, expected = _other_value(flag)
    overrides = gan_cli.train_overrides(GAN_TRAIN.parse_args(words))
    assert overrides[flag.path] == expected != getattr(GanConfig(), flag.path)
    assert set(overrides) <= {flag.path, "labeled_fraction"}


def test_only_given_flags_override_a_config_file(tmp_path):
    base = RunConfig()
    base.method.noise_std, base.train.weight_decay, base.data.augment = 0.3, 0.0, False
    base.save(tmp_path / "config.json")
    args = SSL_TRAIN.parse_args(["--config", str(tmp_path / "config.json"), "--cutmix-prob", "0.9",
                                 "--method", "unimatch"])
    cfg = cli.config_from_args(args, args.config_flags)
    assert (cfg.method.noise_std, cfg.train.weight_decay, cfg.data.augment) == (0.3, 0.0, False)  # kept
    assert (cfg.method.cutmix_prob, cfg.method.name) == (0.9, "unimatch")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["method"]["noise_std"] == 0.3


def test_help_shows_defaults_and_every_registered_name():
    from ssl_seg.methods.registry import method_names
    from ssl_seg.models.registry import model_names

    text = " ".join(SSL_TRAIN.format_help().split())  # argparse wraps lines
    assert "uncertainty-mt" in method_names()
    for name in [*method_names(), *model_names()]:
        assert name in text, name
    # a method's options sit in a group naming the methods that read them
    assert "method: mean-teacher, uncertainty-mt only: --consistency CONSISTENCY" in text
    assert "--noise-std NOISE_STD std of the Gaussian noise on the teacher's input (default: 0.1)" in text
    assert "method: unimatch only: --feature-dropout FEATURE_DROPOUT" in text
    assert "--fractions TRAIN VAL TEST train, val and test shares of the cases (default: 0.7 0.1 0.2)" in text
    assert "--augment, --no-augment" in text and "(default: on)" in text
    gan_text = " ".join(GAN_TRAIN.format_help().split())
    assert "one of: unet, spade, diffusion (default: unet)" in gan_text and "--out OUT GAN run directory (required)" in gan_text


@pytest.mark.parametrize("argv, flag", [
    (["train", "--method", "magic"], "--method"),
    (["train", "--iterations", "many"], "--iterations"),
    (["train", "--fractions", "0.7", "0.3"], "--fractions"),
    (["train", "--loss", "focal"], "--loss"),
    (["train", "--noise-std", "-1", "--out", "x"], "--noise-std"),  # parses, then the range check names it
    (["train", "--no-such-flag"], "--no-such-flag"),
])
def test_bad_values_are_one_line_naming_the_flag(capsys, argv, flag):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and flag in err[0], err


def test_gan_bad_choice_is_one_line(capsys):
    assert gan_cli.main(["train", "--generator", "stylegan", "--out", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--generator" in err[0] and "spade" in err[0], err


@dataclasses.dataclass
class Inner:
    """Toy section."""

    alpha: float = opt(0.5, "mixing weight")


@dataclasses.dataclass
class Outer:
    """Toy config: a nested section and a list."""

    inner: Inner = dataclasses.field(default_factory=Inner)
    tags: list[str] = opt([], "repeatable tag")


def test_a_new_field_is_one_line_that_becomes_a_flag():
    p = Parser(prog="toy")
    flags = add_config_flags(p, Outer)
    assert [f.path for f in flags] == [f.path for f in config_flags(Outer)] == ["inner.alpha", "tags"]
    assert "mixing weight (default: 0.5)" in " ".join(p.format_help().split())
    assert given(p.parse_args(["--alpha", "2", "--tags", "x", "--tags", "y"]), flags) == \
        {"inner.alpha": 2.0, "tags": ["x", "y"]}
    assert given(p.parse_args([]), flags) == {}
    assert Outer().tags is not Outer().tags  # a list default is not shared between instances


@pytest.mark.parametrize("command, sets", [("ablate", "ABLATE_SETS"), ("sweep", "SWEEP_SETS")])
def test_grid_commands_take_every_run_field_they_do_not_set(command, sets):
    from ssl_seg.experiments import ablation, sweep

    grid_sets = getattr(ablation if command == "ablate" else sweep, sets)
    generated = {f.path for f in subparser(cli.build_parser(), command).get_default("config_flags")}
    assert generated | set(grid_sets) == set(leaf_paths(RunConfig)) and not generated & set(grid_sets)
    assert {"method.noise_std", "train.weight_decay", "method.loss", "train.batch_size"} <= generated


def test_grid_defaults_name_exactly_what_the_profile_sets():
    from ssl_seg.experiments.profiles import GRID_DEFAULTS, base_config, profile

    default = RunConfig()
    changed = set()
    for name in ("tiny", "realistic"):
        cfg = base_config("phantom:cardiac?n=12&size=32", profile(name), "cpu")
        changed |= {p for p in leaf_paths(RunConfig) if _field(cfg, p) != _field(default, p)}
    assert changed - {"data.data", "train.iterations", "train.device"} <= set(GRID_DEFAULTS)
    assert "train.lr_schedule" in GRID_DEFAULTS  # set by profiles whose budget names one (hand-kept, it was missing)


@pytest.mark.parametrize("command", ["ablate", "sweep"])
def test_grid_flags_reach_every_run(command, tmp_path, monkeypatch, capsys):
    from ssl_seg.experiments import ablation, sweep

    module = ablation if command == "ablate" else sweep
    grids = []
    monkeypatch.setattr(module, "run_grid", lambda runs, *a, **k: grids.append(runs) or [])
    argv = [command, "--profile", "tiny", "--methods", "supervised", "cps", "--fractions", "0.5", "--seeds", "0",
            "1", "--device", "cpu", "--out", str(tmp_path / "g"), *(["--ratios", "0"] if command == "sweep" else [])]
    assert cli.main([*argv, "--weight-decay", "0.5", "--loss", "ce", "--batch-size", "2", "--no-augment"]) == 0
    assert cli.main(argv) == 0  # without them: the profile's batch size, the config's defaults
    given_runs, plain_runs = grids
    assert len(given_runs) == len(plain_runs) >= 4
    for run in given_runs:
        assert (run.cfg.train.weight_decay, run.cfg.method.loss, run.cfg.train.batch_size, run.cfg.data.augment) \
            == (0.5, "ce", 2, False)
    for run in plain_runs:
        assert (run.cfg.train.weight_decay, run.cfg.method.loss, run.cfg.train.batch_size, run.cfg.data.augment) \
            == (1e-4, "dice_ce", 4, True)
    assert {r.cfg.method.name for r in given_runs} == {"supervised", "cps"}  # the grid still sets its own fields


def test_hand_written_grid_flags_list_the_registry_and_show_defaults():
    from ssl_seg.methods.registry import method_names

    text = " ".join(subparser(cli.build_parser(), "sweep").format_help().split())
    assert f"--methods METHOD [METHOD ...] methods to compare; one of: {', '.join(method_names())} " \
           "(default: supervised)" in text
    assert "(the GAN sees its labels) (default: 0)" in text  # a default of 0 is shown, not taken for 'unset'
    assert "--ratio-end RATIO_END final ratio of non-constant schedules (default: 0.0)" in text


@pytest.mark.parametrize("flag", SSL_TRAIN.get_default("config_flags"), ids=lambda f: f.path)
def test_as_words_gives_back_the_command_line(flag):
    from ssl_seg.flags import as_words

    words, _ = _other_value(flag)
    values = given(SSL_TRAIN.parse_args(words), [flag])
    assert given(SSL_TRAIN.parse_args(as_words([flag], values)), [flag]) == values


def test_study_takes_every_run_field_it_does_not_set_into_every_run(tmp_path, monkeypatch):
    from gan_aug import study
    from gan_aug.study_report import _run_flags

    parser = subparser(cli.build_parser(), "study")
    generated = {f.path for f in parser.get_default("config_flags")}
    assert generated | set(study.STUDY_SETS) == set(leaf_paths(RunConfig)) and not generated & set(study.STUDY_SETS)
    calls = []
    monkeypatch.setattr(study, "run_study", lambda *a: calls.append(a))
    argv = ["study", "--profile", "tiny", "--out", "s", "--device", "cpu", "--workers", "1"]
    assert cli.main([*argv, "--loss", "ce", "--no-augment", "--weight-decay", "0"]) == 0
    command, run_flags = calls[0][4], calls[0][-1]
    assert run_flags == {"method.loss": "ce", "data.augment": False, "train.weight_decay": 0.0}
    assert command.endswith("--workers 1 --no-augment --loss ce --weight-decay 0.0")  # reproduces the study
    base = study.study_base("phantom:cardiac?n=12&size=32", "tiny", "cpu", 1, run_flags)
    assert (base.method.loss, base.data.augment, base.train.weight_decay, base.train.batch_size) == \
        ("ce", False, 0.0, 4)  # the flags given, and the profile's batch size
    assert _run_flags(run_flags) == "`data.augment` = False, `method.loss` = ce, `train.weight_decay` = 0.0"


def test_every_flag_of_both_command_lines_has_help():
    undocumented = []
    for build in (cli.build_parser, gan_cli.build_parser):
        parser = build()
        for name, sub in next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices.items():
            undocumented += [f"{sub.prog} {a.option_strings[0]}" for a in sub._actions
                             if a.option_strings and a.dest != "help" and not a.help]
            assert "%%" not in sub.format_help(), f"{sub.prog}: write % in help, the formatter escapes it"
    assert not undocumented


def test_every_command_in_the_readme_parses():
    import re
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text().replace("\\\n", " ")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line.split(" # ")[0].split("&& ")[-1] for block in blocks for line in block.splitlines()]
    commands = [re.sub(r"^\S*/bin/", "", line) for line in lines if re.match(r"(\S*/bin/)?(ssl-seg|gan-aug) ", line)]
    assert len(commands) >= 12
    for command in commands:
        prog, *words = shlex.split(command)
        (cli if prog == "ssl-seg" else gan_cli).build_parser().parse_args(words)  # a bad flag raises UserError


def test_declared_checks_refuse_values_outside_their_range():
    import dataclasses

    from ssl_seg.errors import UserError
    from ssl_seg.flags import check_fields, opt

    @dataclasses.dataclass
    class ToyOptions:  # a method's own options, ranges declared beside the fields
        strength: float = opt(0.5, "how strong", used_by=("toy",), check=(lambda v: 0 <= v <= 1, "in [0, 1]"))
        passes: int = opt(2, "how many", check=(lambda v: v >= 1, "at least 1"))

    check_fields(ToyOptions())
    for bad, message in ((ToyOptions(strength=1.5), "--strength 1.5: must be in [0, 1]"),
                         (ToyOptions(strength=float("nan")), "--strength nan: must be in [0, 1]"),
                         (ToyOptions(passes=0), "--passes 0: must be at least 1")):
        with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
            check_fields(bad)
    parser = argparse.ArgumentParser()
    add_config_flags(parser, ToyOptions)
    assert "toy only:" in parser.format_help()
