"""Property-based bad input (Hypothesis): flags, JSON configs and small corrupted files end in success or one clear
UserError line, never another exception, and nothing outside --out changes.

Examples are derandomized (the same on every machine) and few, so the layer stays a few seconds of the suite; a
failure prints the smallest input that triggers it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from ssl_seg.cli import main
from ssl_seg.config import RunConfig
from ssl_seg.errors import UserError

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

numbers = st.one_of(st.integers(-2**40, 2**40), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, 1, -1, 0.0, 1e-12, 2**32, 2**63]))
json_values = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=8),
                        st.lists(st.one_of(numbers, st.text(max_size=3)), max_size=3))


def _field_paths() -> list[str]:
    d = RunConfig().to_dict()
    return [f"{section}.{key}" for section, values in d.items() if isinstance(values, dict) for key in values]


@FUZZ
@given(st.dictionaries(st.sampled_from(_field_paths()), json_values, min_size=1, max_size=4))
def test_a_json_config_with_any_values_loads_or_is_one_line(changes: dict) -> None:
    d = RunConfig().to_dict()
    for path, value in changes.items():
        section, key = path.split(".")
        d[section][key] = value
    try:
        cfg = RunConfig.from_dict(d)
        cfg.validate()
    except UserError as e:
        assert "\n" not in str(e) and str(e)


FLAGS = {  # flag -> values a user may type, the wrong kinds included
    "--labeled-fraction": st.sampled_from(["0.5", "0", "-1", "1.5", "nan", "inf", "x", "1e-9"]),
    "--seed": st.sampled_from(["0", "-1", "4294967296", "1.5", "", "nan"]),
    "--batch-size": st.sampled_from(["2", "0", "-3", "1", "2.5", "1e3"]),
    "--patch-size": st.sampled_from(["32", "7", "0", "-32", "100000", "x"]),
    "--lr": st.sampled_from(["0.01", "0", "-1", "nan", "inf", "1e308"]),
    "--ema-decay": st.sampled_from(["0.99", "1", "-0.1", "nan"]),
    "--threshold": st.sampled_from(["0.95", "2", "-1", "nan"]),
    "--threshold-rule": st.sampled_from(["fixed", "freematch", "flexmatch", ""]),
    "--method": st.sampled_from(["supervised", "unimatch", "nope"]),
    "--backbone": st.sampled_from(["unet", "fcn", "monai:dynunet", "resnet"]),
    "--base-channels": st.sampled_from(["4", "0", "-4", "3.5"]),
    "--val-every": st.sampled_from(["1", "0", "-1"]),
    "--split-seed": st.sampled_from(["0", "-5", "x"]),
    "--fractions": st.sampled_from([["0.5", "0.25", "0.25"], ["0.5", "0.5"], ["nan", "0.5", "0.5"], ["1", "0", "0"]]),
}


@settings(FUZZ, max_examples=15)  # each example may train a step: few, but every flag's kinds are drawn over the suite
@given(st.dictionaries(st.sampled_from(sorted(FLAGS)), st.data(), min_size=1, max_size=3))
def test_train_flags_give_exit_0_or_one_line_and_touch_nothing_else(tmp_path_factory, capsys, picks) -> None:
    root = tmp_path_factory.mktemp("flags")
    (root / "keep.txt").write_text("mine")
    argv = ["train", "--data", "phantom:cardiac?n=12&size=32", "--iterations", "1", "--batch-size", "2",
            "--patch-size", "32", "--base-channels", "4", "--val-every", "1", "--no-progress", "--device", "cpu",
            "--out", str(root / "run")]
    for flag, data in picks.items():
        value = data.draw(FLAGS[flag])
        argv += [flag, *(value if isinstance(value, list) else [value])]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own exit for a value of the wrong type: usage + one error line
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (0, 2), err
    if code == 2:
        assert err and err[-1].startswith(("error: ", "ssl-seg train: error: ")), err
        assert "Traceback" not in "\n".join(err)
    assert sorted(p.name for p in root.iterdir()) in (["keep.txt"], ["keep.txt", "run"])
    assert (root / "keep.txt").read_text() == "mine"


# --- small corrupted files ----------------------------------------------------------------------------------------


def _corrupt(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for where, value in flips:
        out[where % len(out)] = value
    return bytes(out[:cut] if cut is not None else out)


corruptions = st.tuples(st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), max_size=6),
                        st.one_of(st.none(), st.integers(0, 4096)))


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory) -> Path:
    """A 12-pair PNG folder dataset with two classes."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for i in range(12):
        mask = np.zeros((32, 32), np.uint8)
        mask[8:20, 10:24] = 1
        for sub, array in (("images", rng.integers(0, 255, (32, 32), np.uint8)), ("masks", mask)):
            (root / sub).mkdir(exist_ok=True)
            Image.fromarray(array).save(root / sub / f"a{i:02d}.png")
    return root


@FUZZ
@given(corruptions, st.sampled_from(["images/a03.png", "masks/a03.png"]))
def test_a_corrupted_png_is_read_or_one_line(tmp_path_factory, folder_data, corruption, name) -> None:
    from ssl_seg.data.sources import open_source

    root = tmp_path_factory.mktemp("png")
    shutil.copytree(folder_data, root / "d")
    path = root / "d" / name
    path.write_bytes(_corrupt(path.read_bytes(), *corruption))
    try:
        source = open_source(str(root / "d"))
        for i in range(len(source.ids)):
            source.load(i)
    except UserError as e:
        assert "\n" not in str(e)


@pytest.fixture(scope="module")
def run_files(tmp_path_factory) -> Path:
    """A finished 1-step run: its checkpoint, config.json, split.json and result.json."""
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", "--data", "phantom:cardiac?n=12&size=32", "--iterations", "1", "--batch-size", "2",
                 "--patch-size", "32", "--base-channels", "4", "--no-progress", "--device", "cpu",
                 "--out", str(out)]) == 0
    return out


@FUZZ
@given(corruptions, st.sampled_from(["last.pt", "config.json", "split.json"]))
def test_a_corrupted_run_file_is_read_or_one_line(tmp_path_factory, run_files, corruption, name) -> None:
    from ssl_seg.data.splits import Split
    from ssl_seg.engine.checkpoint import load_checkpoint

    path = tmp_path_factory.mktemp("bad") / name
    path.write_bytes(_corrupt((run_files / name).read_bytes(), *corruption))
    read = {"last.pt": load_checkpoint, "config.json": RunConfig.load, "split.json": Split.load}[name]
    try:
        read(path)
    except UserError as e:
        assert "\n" not in str(e)


@pytest.fixture(scope="module")
def h5_bytes(tmp_path_factory) -> bytes:
    """A 6-pair phantom dataset in the package's .h5 format."""
    path = tmp_path_factory.mktemp("h5") / "p.h5"
    assert main(["make-phantoms", "--n", "6", "--size", "32", "--out", str(path)]) == 0
    return path.read_bytes()


@FUZZ
@given(corruptions)
def test_a_corrupted_h5_dataset_is_read_or_one_line(tmp_path_factory, h5_bytes, corruption) -> None:
    from ssl_seg.data.sources import open_source

    path = tmp_path_factory.mktemp("h5") / "p.h5"
    path.write_bytes(_corrupt(h5_bytes, *corruption))
    try:
        source = open_source(str(path))
        for i in range(len(source.ids)):
            source.load(i)
    except UserError as e:
        assert "\n" not in str(e)


def test_fuzz_helpers_corrupt_as_asked() -> None:
    assert _corrupt(b"abcdef", [(1, ord("X")), (8, ord("Y"))], None) == b"aXYdef"  # offsets wrap around
    assert _corrupt(b"abcdef", [], 2) == b"ab"
