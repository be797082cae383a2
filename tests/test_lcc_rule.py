"""benchmarks/lcc_rule.py pairs validation gains of the chosen filter with test changes, per minimum gain."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

_spec = importlib.util.spec_from_file_location("lcc_rule", Path(__file__).parents[1] / "benchmarks" / "lcc_rule.py")
lcc_rule = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(lcc_rule)


def _run(folder: Path, name: str, val: tuple[float, float], test: tuple[float, float], hd: tuple[float, float]) -> None:
    """A finished run whose filter on class 1 took validation Dice val[0] -> val[1] and test test[0] -> test[1]."""
    folder.mkdir(parents=True)
    (folder / "postprocessing.json").write_text(json.dumps(
        {"lcc_classes": [1], "val_dice_without": {"1": val[0]}, "val_dice_with": {"1": val[1]}}))

    def scores(dice: float, hd: float) -> dict:
        return {"per_class": {"1": {"dice": dice, "hd95": hd}}}

    (folder / "result.json").write_text(json.dumps({"data": "/x/isbi2012_em", "name": name, "test": {
        "dice": test[0], **scores(test[0], hd[0]), "postprocessed": scores(test[1], hd[1])}}))


def test_table_by_minimum_gain_counts_copies_once(tmp_path, capsys):
    _run(tmp_path / "a" / "r1", "r1", (0.800, 0.802), (0.79, 0.77), (5.0, 17.0))  # +0.2 on val, -2 on test
    _run(tmp_path / "a" / "r2", "r2", (0.700, 0.720), (0.70, 0.73), (9.0, 6.0))  # +2 on val, +3 on test
    _run(tmp_path / "b" / "r2", "r2", (0.700, 0.720), (0.70, 0.73), (9.0, 6.0))  # the same run filed twice
    assert lcc_rule.main([str(tmp_path / "a"), str(tmp_path / "b"), "--min-gains", "0", "0.5"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| isbi2012_em")]
    assert rows[0] == "| isbi2012_em | 0 | 2 / 2 | +0.50 | +4.50 | 1 |"  # (-2 + 3) / 2, (12 - 3) / 2
    assert rows[1] == "| isbi2012_em | 0.5 | 1 / 2 | +1.50 | -1.50 | 0 |"  # r1 dropped: (0 + 3) / 2, (0 - 3) / 2


def test_missing_folder_is_one_message(tmp_path, capsys):
    assert lcc_rule.main([str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err
