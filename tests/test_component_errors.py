"""benchmarks/component_errors.py: the post-processed variants of a prediction on a hand-made mask."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location(
    "component_errors", Path(__file__).parents[1] / "benchmarks" / "component_errors.py")
component_errors = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(component_errors)


def test_variants_fill_holes_and_keep_the_largest_component_of_one_class_only() -> None:
    pred = np.zeros((9, 9), np.uint8)
    pred[1:6, 1:6] = 1
    pred[3, 3] = 0  # a hole in the big ring-like blob
    pred[8, 8] = 1  # a one-pixel fragment
    pred[0, 8] = 2  # another class, left alone
    v = component_errors.variants(pred, 1)
    assert np.array_equal(v["as predicted"], pred)
    assert v["holes filled"][3, 3] == 1 and v["holes filled"][8, 8] == 1
    assert v["LCC"][3, 3] == 0 and v["LCC"][8, 8] == 0 and v["LCC"][1:6, 1].all()
    both = v["LCC + holes filled"]
    assert both[3, 3] == 1 and both[8, 8] == 0 and int((both == 1).sum()) == 25
    assert all(x[0, 8] == 2 for x in v.values())
