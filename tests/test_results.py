"""The result-row operations every table is made of, on hand-made rows."""

from __future__ import annotations

import pytest

from ssl_seg.experiments.results import by_seed, choose_on_validation, paired, validation_means, wins

ROWS = [
    {"method": "supervised", "labels": "c2", "seed": 0, "dice": 0.60, "val_dice": 0.50},
    {"method": "supervised", "labels": "c2", "seed": 1, "dice": 0.70, "val_dice": 0.70},
    {"method": "unimatch", "labels": "c2", "seed": 0, "dice": 0.65, "val_dice": 0.80},
    {"method": "unimatch", "labels": "c2", "seed": 1, "dice": 0.68, "val_dice": 0.60},
    {"method": "unimatch", "labels": "c2", "seed": 2, "dice": None, "val_dice": None},  # unscored: left out
]


def test_by_seed_paired_and_wins():
    sup, uni = by_seed(ROWS, method="supervised"), by_seed(ROWS, method="unimatch")
    assert uni == {0: 0.65, 1: 0.68}
    assert paired(uni, sup) == pytest.approx([0.05, -0.02])
    assert wins(uni, sup) == (1, 2)
    assert by_seed(ROWS, "val_dice", where=lambda r: r["seed"] > 0, method="unimatch") == {1: 0.60}


def test_choices_use_validation_means_only():
    assert validation_means(ROWS, ("method",)) == {("supervised",): pytest.approx(0.60),
                                                   ("unimatch",): pytest.approx(0.70)}
    assert choose_on_validation(ROWS, ("method",)) == ("unimatch",)  # test Dice would have picked the same here
    rows = [{**r, "dice": 1.0 - (r["dice"] or 0)} for r in ROWS]  # test scores reversed: the choice does not move
    assert choose_on_validation(rows, ("method",)) == ("unimatch",)
    tie = [{"k": a, "val_dice": 0.5, "seed": 0} for a in (1, 2)]
    assert choose_on_validation(tie, ("k",), lambda k: -k[0]) == (1,)
    assert choose_on_validation([], ("k",)) is None
