"""JSON-safe values: the one NaN-to-None helper behind metrics_*.json and quality.json."""

from __future__ import annotations

import json

import numpy as np

from ssl_seg.io_utils import atomic_write_json, jsonable


def test_jsonable_makes_strict_json(tmp_path):
    raw = {1: np.float32(0.5), "nan": float("nan"), "inf": np.float64(-np.inf), "n": np.int64(3),
           "nested": [(np.float32(np.nan), 2.0)], "text": "a", "none": None, "flag": True}
    safe = jsonable(raw)
    assert safe == {"1": 0.5, "nan": None, "inf": None, "n": 3, "nested": [[None, 2.0]], "text": "a",
                    "none": None, "flag": True}
    assert type(safe["n"]) is int and type(safe["1"]) is float
    atomic_write_json(tmp_path / "x.json", safe)
    assert json.loads((tmp_path / "x.json").read_text(), parse_constant=lambda c: 1 / 0) == safe  # no NaN tokens
