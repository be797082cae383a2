"""Seeded, case-grouped train/val/test splits with a labeled subset, and JSON split files.

Slices of one case never straddle train/val/test. The labeled cases are a prefix of one seeded
permutation of the training cases, so for one seed the labeled set of a smaller fraction is a subset of
that of a larger one (nested ablations). A source with a `predefined_split` (SSL4MIS lists) keeps its
train/val/test, and the labeled cases are the first N training cases in list order: the SSL4MIS
protocol (its `labeled_num` patients are the first slices of train_slices.list); the seed is then unused.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..io_utils import atomic_write_json
from .sample import SampleSource

SPLIT_KEYS = ("labeled", "unlabeled", "val", "test")


@dataclass
class Split:
    """Sample ids per role; `meta` records how the split was made (seed, fractions, data, ...)."""

    labeled: list[str]
    unlabeled: list[str]
    val: list[str]
    test: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def roles(self) -> dict[str, list[str]]:
        """Sample ids per role a case must not straddle: train (labeled + unlabeled), val, test."""
        return {"train": self.labeled + self.unlabeled, "val": self.val, "test": self.test}

    def save(self, path: str | Path) -> None:
        """Write as JSON (atomically): the four lists and `meta`."""
        atomic_write_json(path, {**{key: getattr(self, key) for key in SPLIT_KEYS}, "meta": self.meta})

    @classmethod
    def load(cls, path: str | Path) -> "Split":
        """Read a split JSON as written; its names may be sample ids or case ids (see `resolve_split_file`)."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: split file not found; check --split-file (shipped ones are in data_splits/)")
        try:
            obj = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: not valid JSON ({e}); fix the file or re-create the split") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}: expected a JSON object with keys {', '.join(SPLIT_KEYS)}")
        unknown = sorted(set(obj) - {*SPLIT_KEYS, "meta"})
        if unknown:
            raise UserError(f"{path}: unknown key(s) {unknown}; valid: {', '.join(SPLIT_KEYS)}, meta")
        lists = {}
        for key in SPLIT_KEYS:
            value = obj.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise UserError(f"{path}: '{key}' must be a list of sample or case ids (strings)")
            lists[key] = value
        meta = obj.get("meta", {})
        if not isinstance(meta, dict):
            raise UserError(f"{path}: 'meta' must be a JSON object")
        return cls(**lists, meta=meta)


def make_split(source: SampleSource, seed: int = 0, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
               group_by: str | None = None, labeled_fraction: float | None = None,
               labeled_cases: int | None = None) -> Split:
    """Split `source` by case into labeled/unlabeled/val/test sample ids.

    `group_by` is a regex whose first group, searched in each sample id, is its case (default: source.cases).
    `labeled_cases` (N cases) wins over `labeled_fraction` (round-half-up of f * training cases);
    with neither, every training case is labeled.
    """
    fractions = _check_fractions(fractions)
    if labeled_cases is not None and labeled_cases < 1:
        raise UserError(f"--labeled-cases must be >= 1, got {labeled_cases}")
    if labeled_cases is None and labeled_fraction is not None and not 0 < labeled_fraction <= 1:
        raise UserError(f"--labeled-fraction must be in (0, 1], got {labeled_fraction}")
    if len(source) == 0:
        raise UserError(f"{source.name}: no samples to split")
    cases = case_ids(source, group_by)
    by_id = dict(zip(source.ids, cases))
    predefined = source.predefined_split
    if predefined is not None:
        train_ids, val_ids, test_ids = (list(predefined.get(key, [])) for key in ("train", "val", "test"))
        train_cases = list(dict.fromkeys(by_id[i] for i in train_ids))
    else:
        train_cases, train_ids, val_ids, test_ids = _random_roles(source.ids, cases, seed, fractions)
    labeled_set = set(train_cases[:_n_labeled(len(train_cases), labeled_fraction, labeled_cases)])
    meta = {"data": source.name, "seed": seed, "fractions": list(fractions), "group_by": group_by,
            "labeled_fraction": labeled_fraction, "labeled_cases": labeled_cases,
            "predefined": predefined is not None, "labeled_case_ids": [c for c in train_cases if c in labeled_set]}
    return Split(labeled=[i for i in train_ids if by_id[i] in labeled_set],
                 unlabeled=[i for i in train_ids if by_id[i] not in labeled_set],
                 val=val_ids, test=test_ids, meta=meta)


def _random_roles(ids: list[str], cases: list[str], seed: int, fractions: tuple[float, float, float]
                  ) -> tuple[list[str], list[str], list[str], list[str]]:
    """Shuffle the cases with `seed`, cut by `fractions` -> (train cases in shuffled order, train, val, test ids)."""
    unique = sorted(set(cases))
    order = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
    n_train, n_val, _ = _allocate(len(order), fractions)
    role = {case: ("train" if k < n_train else "val" if k < n_train + n_val else "test")
            for k, case in enumerate(order)}
    by_role = {r: [i for i, c in zip(ids, cases) if role[c] == r] for r in ("train", "val", "test")}
    return order[:n_train], by_role["train"], by_role["val"], by_role["test"]


def check_groups_whole(roles: dict[str, list[str]], group_of: dict[str, str], what: str, fix: str) -> None:
    """Refuse a split that puts samples of one group (a --group-by case, a --volume-by volume) into two roles."""
    role_of: dict[str, str] = {}
    for role, ids in roles.items():
        for sample_id in ids:
            group = group_of.get(sample_id)
            if group is not None and role_of.setdefault(group, role) != role:
                raise UserError(f"{what} '{group}' has samples in both {role_of[group]} and {role}; {fix}")


def compile_groups(flag: str, pattern: str, groups: int, too_few: str) -> re.Pattern:
    """A flag's regex compiled, with at least `groups` capture groups; else a UserError ending in `too_few`."""
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise UserError(f"{flag} {pattern!r} is not a valid regular expression ({e})") from None
    if regex.groups < groups:
        raise UserError(f"{flag} {pattern!r} {too_few}")
    return regex


def case_ids(source: SampleSource, group_by: str | None) -> list[str]:
    """Case id per sample: the first group of regex `group_by` searched in the id, or `source.cases`."""
    if group_by is None:
        return list(source.cases)
    pattern = compile_groups("--group-by", group_by, 1, "has no capture group; e.g. '^(patient\\d+)' makes the "
                                                       "group the case id")
    out = []
    for sample_id in source.ids:
        match = pattern.search(sample_id)
        if match is None or not match.group(1):
            raise UserError(f"--group-by {group_by!r} does not match sample id '{sample_id}'; fix the regex")
        out.append(match.group(1))
    return out


def resolve_split_file(path: str | Path, source: SampleSource, group_by: str | None = None) -> Split:
    """Load a split file and expand its names against `source`: a case id (from `group_by`, else the
    source's cases) stands for all of its samples, so a protocol listing patients works on a folder of slices."""
    raw = Split.load(path)
    known = set(source.ids)
    by_case: dict[str, list[str]] = defaultdict(list)
    for sample_id, case in zip(source.ids, case_ids(source, group_by)):
        by_case[case].append(sample_id)
    lists: dict[str, list[str]] = {}
    unknown: list[str] = []
    for key in SPLIT_KEYS:
        ids: list[str] = []
        for name in getattr(raw, key):
            if name in known:
                ids.append(name)
            elif name in by_case:
                ids.extend(by_case[name])
            else:
                unknown.append(name)
        lists[key] = list(dict.fromkeys(ids))
    if unknown:
        raise UserError(f"{path}: {len(unknown)} name(s) match no sample or case id of {source.name}, first "
                        f"{unknown[:3]}; was this split made for this DATA?")
    if not lists["labeled"]:
        raise UserError(f"{path}: 'labeled' is empty; list at least one labeled sample or case id")
    _check_disjoint(lists, Path(path))
    return Split(**lists, meta={**raw.meta, "split_file": str(path), "data": source.name,
                                       **({"group_by": group_by} if group_by else {})})


def _check_fractions(fractions: tuple[float, ...]) -> tuple[float, float, float]:
    """(train, val, test) fractions: three numbers >= 0 summing to 1, train > 0."""
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or not all(math.isfinite(v) and v >= 0 for v in values) or abs(sum(values) - 1) > 1e-6 \
            or values[0] <= 0:
        raise UserError(f"--fractions {list(fractions)} must be three numbers >= 0 (train > 0) summing to 1, "
                        "e.g. 0.7 0.1 0.2")
    return values  # type: ignore[return-value]


def _round(x: float) -> int:
    """Round half up (Python's round() rounds half to even)."""
    return int(math.floor(x + 0.5))


def _allocate(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Case counts (train, val, test): at least 1 train; val/test non-empty when n >= 3 and their fraction > 0."""
    _, f_val, f_test = fractions
    n_val, n_test = _round(f_val * n), _round(f_test * n)
    if n >= 3:
        n_val, n_test = max(n_val, int(f_val > 0)), max(n_test, int(f_test > 0))
    while n - n_val - n_test < 1:
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n - n_val - n_test, n_val, n_test


def _n_labeled(n_train: int, labeled_fraction: float | None, labeled_cases: int | None) -> int:
    """How many training cases are labeled; errors name the flag to change."""
    if labeled_cases is not None:
        if labeled_cases > n_train:
            raise UserError(f"--labeled-cases {labeled_cases} exceeds the {n_train} training cases; lower it")
        return labeled_cases
    if labeled_fraction is None:
        return n_train
    n = _round(labeled_fraction * n_train)
    if n == 0:
        raise UserError(f"--labeled-fraction {labeled_fraction} of {n_train} training cases gives 0 labeled cases; "
                        "raise the fraction or use --labeled-cases")
    return n


def _check_disjoint(lists: dict[str, list[str]], path: Path) -> None:
    """No sample may sit in two roles (that would leak labels into evaluation)."""
    owner: dict[str, str] = {}
    for key in SPLIT_KEYS:
        for sample_id in lists[key]:
            if sample_id in owner:
                raise UserError(f"{path}: sample '{sample_id}' is in both '{owner[sample_id]}' and '{key}'; "
                                "each sample may have one role")
            owner[sample_id] = key
