"""--volume-by: a PNG folder of slices scored per stacked 3D volume, checked against a hand-stacked reference."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ssl_seg.cli import main
from ssl_seg.data.sources import open_source
from ssl_seg.data.splits import Split, make_split
from ssl_seg.engine.report import evaluate_run
from ssl_seg.engine.runner import run_training
from ssl_seg.errors import UserError
from ssl_seg.evaluation.metrics import evaluate_case
from ssl_seg.evaluation.scoring import evaluate_model
from ssl_seg.experiments.grid import GridRun, run_one

VOLUME_BY = r"^(patient\d+_frame\d+)_slice(\d+)$"
SLICES = 11  # slice10 sorts before slice2 by name: the order must come from the parsed index


def write_slice_folder(root: Path, patients: int = 6, frames: int = 2, size: int = 32) -> Path:
    """patientP_frameF_sliceK.png images and masks: a sphere-like blob whose radius follows K (3D structure)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for p in range(patients):
        for f in range(frames):
            cy, cx = rng.integers(10, size - 10, 2)
            for k in range(SLICES):
                radius = 2 + 7 * np.sin(np.pi * (k + 0.5) / SLICES) * (0.7 + 0.1 * f)
                mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2).astype(np.uint8)
                image = np.clip(60 + 120 * mask + rng.normal(0, 25, mask.shape), 0, 255).astype(np.uint8)
                stem = f"patient{p:03d}_frame{f:02d}_slice{k}"
                Image.fromarray(image).save(root / "images" / f"{stem}.png")
                Image.fromarray(mask * 255).save(root / "masks" / f"{stem}.png")
    return root


@pytest.fixture
def slice_folder(tmp_path: Path) -> Path:
    return write_slice_folder(tmp_path / "slices")


def test_volumes_ordered_by_parsed_slice_index(slice_folder: Path) -> None:
    source = open_source(str(slice_folder), volume_by=VOLUME_BY)
    assert source.volumetric and len(set(source.cases)) == 12
    first = [i for i, c in zip(source.ids, source.cases) if c == "patient000_frame00"]
    assert first == [f"patient000_frame00_slice{k}" for k in range(SLICES)]  # not slice0, slice1, slice10, ...
    sample = source.load(source.index_of("patient003_frame01_slice7"))
    assert sample.case == "patient003_frame01" and sample.mask.shape == (32, 32)


def test_split_keeps_volumes_whole_and_matches_group_by(slice_folder: Path) -> None:
    wrapped = open_source(str(slice_folder), volume_by=VOLUME_BY)
    split = make_split(wrapped, seed=3, labeled_cases=2)
    role = {}
    for name in ("labeled", "unlabeled", "val", "test"):
        for i in getattr(split, name):
            role.setdefault(re.match(VOLUME_BY, i).group(1), set()).add("train" if name in ("labeled", "unlabeled")
                                                                       else name)
    assert all(len(r) == 1 for r in role.values())
    # what the GAN of a study sees: the plain folder grouped by the same regex draws the same split
    plain = make_split(open_source(str(slice_folder)), seed=3, labeled_cases=2, group_by=VOLUME_BY)
    for name in ("labeled", "val", "test"):
        assert sorted(getattr(plain, name)) == sorted(getattr(split, name))


@pytest.mark.parametrize("pattern, message", [
    (r"^(patient\d+)", "needs two groups"),
    (r"^(patient\d+)_frame(\d+)", "are both slice"),  # frames collide: volume patient000, slice 0 twice
    (r"^(patient\d+_frame\d+)_(slice)\d+", "must be the slice index"),
    (r"^(case\d+)_(\d+)", "does not match sample id"),
    (r"^(patient[", "not a valid regular expression"),
])
def test_bad_volume_by_is_one_line(slice_folder: Path, pattern: str, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        open_source(str(slice_folder), volume_by=pattern)


def test_split_file_straddling_a_volume_is_refused(slice_folder: Path, tmp_path: Path, tiny_cfg) -> None:
    ids = sorted(p.stem for p in (slice_folder / "images").glob("*.png"))
    leak = [i for i in ids if i.startswith("patient000_frame00")]
    split = {"labeled": leak[:5], "unlabeled": [], "val": leak[5:] + ids[40:60], "test": ids[60:]}
    (tmp_path / "split.json").write_text(json.dumps(split))
    tiny_cfg.data.data, tiny_cfg.data.volume_by = str(slice_folder), VOLUME_BY
    tiny_cfg.data.split_file = str(tmp_path / "split.json")
    with pytest.raises(UserError, match="volume .patient000_frame00. has samples in both train and val"):
        run_training(tiny_cfg)


class Threshold(torch.nn.Module):
    """A fixed 'network': foreground where the image is above its mean (noisy: Dice and HD95 far from trivial)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([-x, x], dim=1) * 20  # x is z-scored per image: foreground above the image's mean


def test_stacked_volume_scores_equal_a_hand_stacked_3d_score(slice_folder: Path) -> None:
    source = open_source(str(slice_folder), volume_by=VOLUME_BY)
    test_ids = [i for i in source.ids if i.startswith(("patient001", "patient004"))]
    rng = np.random.default_rng(1)
    test_ids = list(rng.permutation(test_ids))  # the order given must not matter
    metrics = evaluate_model(Threshold(), source, test_ids, 32, torch.device("cpu"))
    plain = open_source(str(slice_folder))
    volumes: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {}
    for sample_id in test_ids:  # by hand: threshold each slice, stack by the index in its file name
        sample = plain.load(plain.index_of(sample_id))
        image = torch.from_numpy(sample.image[0])
        pred = (image > image.mean()).numpy().astype(np.uint8)
        volume, k = re.match(VOLUME_BY, sample_id).groups()
        volumes.setdefault(volume, []).append((int(k), pred, sample.mask))
    assert set(metrics["volume"]["per_case"]) == set(volumes) and len(volumes) == 4
    dices = []
    for volume, slices in volumes.items():
        slices.sort(key=lambda s: s[0])
        pred, truth = np.stack([s[1] for s in slices]) == 1, np.stack([s[2] for s in slices]) == 1
        dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
        hd95 = evaluate_case(pred.astype(np.uint8), truth.astype(np.uint8), 2, spacing=(1.0, 1.0, 1.0))["hd95"]
        got = metrics["volume"]["per_case"][volume]
        assert 0.3 < dice < 0.99 and hd95 > 0
        assert got["dice"] == pytest.approx(dice, abs=1e-9)
        assert got["hd95"] == pytest.approx(hd95, abs=1e-9)
        dices.append(dice)
    assert metrics["volume"]["dice"] == pytest.approx(np.mean(dices), abs=1e-9)
    assert metrics["n_cases"] == 4  # the slice means are grouped by volume too
    # stacked in name order (slice10 after slice1) the 3D score would differ
    volume, slices = next(iter(volumes.items()))
    by_name = sorted(slices, key=lambda s: str(s[0]))
    shuffled = evaluate_case(np.stack([s[1] for s in by_name]), np.stack([s[2] for s in slices]), 2)
    assert shuffled["dice"] != pytest.approx(metrics["volume"]["per_case"][volume]["dice"])


def test_validation_chooses_on_the_volume_score(slice_folder: Path, tiny_cfg, tmp_path: Path, capsys) -> None:
    cfg = tiny_cfg
    cfg.data.data, cfg.data.volume_by, cfg.data.patch_size = str(slice_folder), VOLUME_BY, 32
    cfg.train.iterations, cfg.train.val_every = 4, 2
    result = run_one(GridRun("cell", cfg), tmp_path / "grid")  # as ablate / sweep / study run a cell
    run = Path(result["run_dir"])
    val = evaluate_run(run, split="val", device="cpu", postprocess=False, progress=False)
    assert "volume" in val
    assert result["val_dice"] == pytest.approx(val["volume"]["dice"], abs=1e-6)
    test = evaluate_run(run, split="test", device="cpu", postprocess=False, progress=False)
    # grids and reports read the per-volume test score of the run's result.json (their vol_dice column)
    assert result["test"]["volume"]["dice"] == pytest.approx(test["volume"]["dice"], abs=1e-9)
    main(["evaluate", "--run", str(run), "--no-postprocess", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "volumes)" in out and "per volume (3D)" in out


def test_volume_by_with_3d_data_is_refused(tiny_cfg) -> None:
    tiny_cfg.data.volume_by, tiny_cfg.data.spatial_dims = VOLUME_BY, 3
    with pytest.raises(UserError, match="drop --volume-by"):
        tiny_cfg.validate()
