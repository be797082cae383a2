"""Splits: determinism, case grouping, fractions, nested labeled sets, split files, shipped files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ssl_seg.data.sources import open_source
from ssl_seg.data.splits import Split, make_split, resolve_split_file
from ssl_seg.errors import UserError

SPLITS = Path(__file__).resolve().parents[1] / "data_splits"


class _IdSource:
    """Ids and cases only (splitting never loads samples)."""

    def __init__(self, n_cases: int, per_case: int = 3, predefined: dict | None = None, prefix: str = "p"):
        self.name = f"fake{n_cases}"
        self.ids = [f"{prefix}{c:03d}_s{k}" for c in range(n_cases) for k in range(per_case)]
        self.cases = [i.split("_")[0] for i in self.ids]
        self.predefined_split = predefined
        self._index = {i: n for n, i in enumerate(self.ids)}

    def __len__(self):
        return len(self.ids)

    def index_of(self, id):
        return self._index[id]


def _case_sets(split: Split) -> dict[str, set[str]]:
    return {key: {i.split("_")[0] for i in getattr(split, key)} for key in ("labeled", "unlabeled", "val", "test")}


def test_same_seed_same_split_other_seed_differs():
    src = _IdSource(30)
    a = make_split(src, seed=3, labeled_fraction=0.2)
    assert a == make_split(src, seed=3, labeled_fraction=0.2)
    assert a.test != make_split(src, seed=4, labeled_fraction=0.2).test


def test_cases_never_straddle_and_every_sample_has_one_role():
    src = _IdSource(20, per_case=4)
    split = make_split(src, seed=1, labeled_fraction=0.3)
    sets = _case_sets(split)
    roles = list(sets.values())
    for i in range(4):
        for j in range(i + 1, 4):
            assert not roles[i] & roles[j]
    all_ids = split.labeled + split.unlabeled + split.val + split.test
    assert sorted(all_ids) == sorted(src.ids)
    assert all(len(getattr(split, k)) % 4 == 0 for k in ("labeled", "unlabeled", "val", "test"))


def test_fraction_counts_hand_computed():
    split = make_split(_IdSource(20), fractions=(0.7, 0.1, 0.2), labeled_fraction=0.25)
    counts = {k: len(v) for k, v in _case_sets(split).items()}
    # 20 cases -> 14 train, 2 val, 4 test; 0.25 * 14 = 3.5 -> 4 labeled (half up)
    assert counts == {"labeled": 4, "unlabeled": 10, "val": 2, "test": 4}
    assert set(split.meta["labeled_case_ids"]) == _case_sets(split)["labeled"]
    assert split.meta["seed"] == 0 and split.meta["data"] == "fake20"


def test_three_cases_each_part_non_empty_and_zero_fraction_respected():
    split = make_split(_IdSource(3), fractions=(0.9, 0.05, 0.05))
    assert [len(s) for s in _case_sets(split).values()] == [1, 0, 1, 1]
    no_test = make_split(_IdSource(10), fractions=(0.8, 0.2, 0.0))
    assert no_test.test == [] and len(_case_sets(no_test)["val"]) == 2


@pytest.mark.parametrize("fractions", [(0.7, 0.1, 0.1), (0.7, -0.1, 0.4), (0.5, 0.5), (0.0, 0.5, 0.5)])
def test_bad_fractions(fractions):
    with pytest.raises(UserError, match="--fractions"):
        make_split(_IdSource(10), fractions=fractions)


def test_labeled_sets_are_nested_across_fractions():
    src = _IdSource(100, per_case=2)
    small, mid, full = (make_split(src, seed=7, labeled_fraction=f) for f in (0.05, 0.1, 1.0))
    assert set(small.labeled) < set(mid.labeled) < set(full.labeled)
    assert len(_case_sets(small)["labeled"]) == 4 and len(_case_sets(mid)["labeled"]) == 7  # of 70 train cases
    assert small.val == mid.val == full.val and small.test == mid.test
    assert full.unlabeled == [] and set(full.labeled) == set(small.labeled + small.unlabeled)


def test_labeled_count_errors_and_labeled_cases():
    src = _IdSource(10)  # 7 train cases
    with pytest.raises(UserError, match="gives 0 labeled cases.*--labeled-cases"):
        make_split(src, labeled_fraction=0.05)
    with pytest.raises(UserError, match="--labeled-fraction"):
        make_split(src, labeled_fraction=1.5)
    with pytest.raises(UserError, match="exceeds the 7 training cases"):
        make_split(src, labeled_cases=8)
    split = make_split(src, labeled_cases=2, labeled_fraction=0.05)  # cases win over the fraction
    assert len(_case_sets(split)["labeled"]) == 2
    assert set(split.labeled) < set(make_split(src, labeled_cases=3).labeled)


def test_group_by_regex():
    src = _IdSource(12, per_case=2)
    src.cases = list(src.ids)  # the source knows no grouping; the regex supplies it
    split = make_split(src, group_by=r"^(p\d+)_", labeled_fraction=0.5)
    assert all(len(v) % 2 == 0 for v in (split.labeled, split.unlabeled, split.val, split.test))
    assert split.meta["group_by"] == r"^(p\d+)_"
    with pytest.raises(UserError, match="does not match sample id 'p000_s0'"):
        make_split(src, group_by=r"^(q\d+)")
    with pytest.raises(UserError, match="no capture group"):
        make_split(src, group_by=r"^p\d+")
    with pytest.raises(UserError, match="not a valid regular expression"):
        make_split(src, group_by=r"(")


def test_predefined_split_labels_first_cases_in_list_order():
    base = _IdSource(8, per_case=2)
    train = [i for i in base.ids if i.split("_")[0] in ("p005", "p001", "p003", "p000", "p002")]
    train = sorted(train, key=lambda i: ["p005", "p001", "p003", "p000", "p002"].index(i.split("_")[0]))
    predefined = {"train": train, "val": ["p006_s0", "p006_s1"], "test": ["p007_s0", "p007_s1", "p004_s0"]}
    src = _IdSource(8, per_case=2, predefined=predefined)
    split = make_split(src, seed=123, labeled_cases=2)
    assert split.labeled == ["p005_s0", "p005_s1", "p001_s0", "p001_s1"]  # train list order
    assert split.meta["labeled_case_ids"] == ["p005", "p001"]
    assert set(split.unlabeled) == set(train) - set(split.labeled)
    assert split.val == predefined["val"] and split.test == predefined["test"]
    assert make_split(src, seed=5, labeled_cases=2).labeled == split.labeled  # the seed plays no part
    assert _case_sets(make_split(src, labeled_fraction=0.6))["labeled"] == {"p005", "p001", "p003"}


def test_save_load_round_trip(tmp_path):
    split = make_split(_IdSource(10), seed=2, labeled_fraction=0.3)
    path = tmp_path / "s.json"
    split.save(path)
    assert Split.load(path) == split
    assert set(json.loads(path.read_text())) == {"labeled", "unlabeled", "val", "test", "meta"}


def test_resolve_expands_case_ids_and_keeps_sample_ids(tmp_path):
    src = _IdSource(5)
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"labeled": ["p000"], "unlabeled": ["p001", "p002_s1"], "val": ["p003"],
                                "test": ["p004"], "meta": {"note": "hand-made"}}))
    split = resolve_split_file(path, src)
    assert split.labeled == ["p000_s0", "p000_s1", "p000_s2"]
    assert split.unlabeled == ["p001_s0", "p001_s1", "p001_s2", "p002_s1"]
    assert split.test == ["p004_s0", "p004_s1", "p004_s2"]
    assert split.meta["note"] == "hand-made" and split.meta["split_file"] == str(path)


@pytest.mark.parametrize("content, fragment", [
    ({"labeled": ["p000", "zzz", "yyy"]}, "2 name(s) match no sample or case id"),
    ({"labeled": [], "unlabeled": ["p000"]}, "'labeled' is empty"),
    ({"labeled": ["p000"], "test": ["p000_s1"]}, "'p000_s1' is in both 'labeled' and 'test'"),
    ({"labeled": ["p000"], "unlabelled": ["p001"]}, "unknown key(s) ['unlabelled']"),
    ({"labeled": "p000"}, "'labeled' must be a list"),
])
def test_resolve_errors_name_the_file(tmp_path, content, fragment):
    path = tmp_path / "bad_split.json"
    path.write_text(json.dumps(content))
    with pytest.raises(UserError) as info:
        resolve_split_file(path, _IdSource(3))
    assert "bad_split.json" in str(info.value) and fragment in str(info.value)


def test_missing_and_invalid_json_split_files(tmp_path):
    with pytest.raises(UserError, match="nope.json: split file not found"):
        Split.load(tmp_path / "nope.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(UserError, match="broken.json: not valid JSON"):
        Split.load(tmp_path / "broken.json")


@pytest.mark.parametrize("task", ["cardiac", "lesion", "vessel"])
def test_shipped_phantom_splits_match_make_split(task):
    src = open_source(f"phantom:{task}?n=400&size=128&seed=0")
    small = resolve_split_file(SPLITS / f"phantom_{task}_5pct_labeled.json", src)
    large = resolve_split_file(SPLITS / f"phantom_{task}_10pct_labeled.json", src)
    expected = make_split(src, seed=0, fractions=(0.7, 0.1, 0.2), labeled_fraction=0.05)
    assert (small.labeled, small.unlabeled, small.val, small.test) == \
        (expected.labeled, expected.unlabeled, expected.val, expected.test)
    assert (len(small.labeled), len(large.labeled), len(large.val), len(large.test)) == (14, 28, 40, 80)
    assert set(small.labeled) < set(large.labeled)


@pytest.mark.parametrize("name, labeled", [
    ("acdc_1case.json", ["patient099"]),
    ("acdc_3cases.json", ["patient099", "patient038", "patient050"]),
    ("acdc_7cases.json", ["patient099", "patient038", "patient050", "patient100", "patient058", "patient021",
                          "patient049"]),
])
def test_shipped_acdc_splits(name, labeled):
    raw = Split.load(SPLITS / name)
    assert raw.labeled == labeled
    assert (len(raw.labeled) + len(raw.unlabeled), len(raw.val), len(raw.test)) == (70, 10, 20)
    everyone = raw.labeled + raw.unlabeled + raw.val + raw.test
    assert sorted(everyone) == [f"patient{i:03d}" for i in range(1, 101)]
    acdc = _IdSource(101, per_case=2, prefix="patient")  # patient000..patient100, two slices each
    split = resolve_split_file(SPLITS / name, acdc)
    assert len(split.labeled) == 2 * len(labeled) and len(split.test) == 40
