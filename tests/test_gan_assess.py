"""gan_aug.assess: FID/KID and nearest-neighbour maths on known answers, memorised copies caught, full report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gan_aug.assess import (assess, fid, frechet_distance, kid, memorisation, mmd2_polynomial, nearest_cosine,
                             segmenter_patch)
from gan_aug.cli import main
from gan_aug.config import GanConfig
from gan_aug.data import gan_split
from gan_aug.synthesize import synthesize
from gan_aug.train import train_gan
from ssl_seg.data.h5format import H5DatasetWriter
from ssl_seg.data.sources import open_source
from ssl_seg.errors import UserError

DATA = "phantom:cardiac?n=24&size=32"



def test_frechet_distance_of_diagonal_gaussians() -> None:
    mu1, mu2 = np.array([0.0, 1.0]), np.array([3.0, 5.0])
    s1, s2 = np.diag([4.0, 1.0]), np.diag([1.0, 9.0])
    # |dmu|^2 + sum (sqrt a - sqrt b)^2 = 25 + (2 - 1)^2 + (1 - 3)^2
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(30.0)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_fid_of_a_shifted_copy_is_the_squared_shift() -> None:
    x = np.random.default_rng(0).normal(size=(50, 3))
    assert fid(x, x + np.array([1.0, 2.0, 2.0])) == pytest.approx(9.0, rel=1e-6)
    few = np.random.default_rng(1).normal(size=(5, 8))  # fewer samples than features: singular covariances
    assert np.isfinite(fid(few, few + 1.0)) and fid(few, few + 1.0) == pytest.approx(8.0, rel=1e-3)


def test_kid_unbiased_polynomial_mmd_hand_value() -> None:
    x, y = np.array([[0.0], [1.0]]), np.array([[2.0], [3.0]])
    # k = (ab + 1)^3: off-diagonal k_xx = 1, k_yy = 343, cross mean (1 + 1 + 27 + 64) / 4
    assert mmd2_polynomial(x, y) == pytest.approx(1 + 343 - 2 * 93 / 4)
    mean, std = kid(x, y, subsets=3, subset_size=2)
    assert mean == pytest.approx(297.5) and std == pytest.approx(0.0)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 4)), rng.normal(size=(200, 4))
    same, _ = kid(a, b, subsets=5, subset_size=100)
    shifted, _ = kid(a, b + 1.0, subsets=5, subset_size=100)
    assert abs(same) < 0.05 < shifted


def test_nearest_cosine_and_near_copy_flags() -> None:
    sims, idx = nearest_cosine(np.array([[1.0, 0.0], [1.0, 1.0]]), np.array([[0.0, 2.0], [3.0, 0.0]]))
    assert idx.tolist() == [1, 0] and sims == pytest.approx([1.0, 1 / np.sqrt(2)])
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(40, 16)), rng.normal(size=(40, 16))
    copies = np.concatenate([train[:5], rng.normal(size=(15, 16))])
    report, sim_syn, _ = memorisation(copies, [f"s{i}" for i in range(20)], train, [f"t{i}" for i in range(40)], test)
    assert report["near_copies"] == 5
    assert {f["synthetic"] for f in report["flagged"]} == {f"s{i}" for i in range(5)}
    assert {(f["synthetic"], f["train"]) for f in report["flagged"]} == {(f"s{i}", f"t{i}") for i in range(5)}
    assert sim_syn[:5] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def syn_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32 px cardiac GAN (a few steps) and 12 synthetic pairs from it."""
    root = tmp_path_factory.mktemp("assess")
    train_gan(GanConfig(data=DATA, labeled_fraction=0.3, out=str(root / "gan"), iterations=3, batch_size=2,
                        patch_size=32, ngf=8, ndf=8, device="cpu", progress=False))
    synthesize(root / "gan", 12, root / "syn", batch_size=6, device="cpu", progress=False)
    return root / "syn"


def test_assess_writes_a_complete_report_and_reuses_its_segmenters(syn_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "quality"
    report = assess(syn_dir, out=out, device="cpu", iterations=4, max_samples=8, progress=False)
    saved = json.loads((out / "quality.json").read_text())
    assert (out / "quality.png").stat().st_size > 0
    assert set(saved) >= {"fidelity", "fid", "kid", "memorisation", "tstr"}
    f = report["fidelity"]
    assert 0 <= f["synthetic_dice"] <= 1 and 0 <= f["real_dice"] <= 1 and f["n_synthetic"] == 8
    assert report["fid"]["synthetic_vs_real"] >= 0 and report["fid"]["real_vs_real"] >= 0
    assert report["fid"]["n_per_set"] == 8  # 16 real crops split in halves, 8 synthetic
    m = report["memorisation"]
    assert 0 <= m["near_copies"] <= 8 and m["expected_fraction"] == 0.01
    t = report["tstr"]
    assert t["ratio"] == pytest.approx(t["synthetic_only_dice"] / t["real_only_dice"])
    stamp = (out / "segmenter_real" / "result.json").stat().st_mtime_ns
    again = assess(syn_dir, out=out, device="cpu", iterations=4, max_samples=8, progress=False)
    assert (out / "segmenter_real" / "result.json").stat().st_mtime_ns == stamp
    assert again["fidelity"] == report["fidelity"] and again["fid"] == report["fid"]
    # a given segmenter is used for fidelity and features
    given = assess(syn_dir, segmenter=out / "segmenter_synthetic", out=out, device="cpu", iterations=4,
                   max_samples=8, progress=False)
    assert given["segmenter"] == str(out / "segmenter_synthetic")


def test_copies_of_training_images_are_flagged(syn_dir: Path, tmp_path: Path) -> None:
    manifest = json.loads((syn_dir / "manifest.json").read_text())
    real = open_source(DATA)
    labeled = gan_split(GanConfig.from_dict(manifest["gan_config"]), real).labeled
    copies = tmp_path / "copies"
    copies.mkdir()
    samples = [real.load(real.index_of(i)) for i in labeled]
    with H5DatasetWriter(copies / "synthetic.h5", 1, 32, 32, 4, real.class_names, {}) as w:
        w.append(np.stack([s.image for s in samples]), np.stack([s.mask for s in samples]),
                 [f"copy_{s.id}" for s in samples], [f"copy_{s.id}" for s in samples])
    (copies / "manifest.json").write_text(json.dumps({**manifest, "n": len(samples)}))
    report = assess(copies, out=tmp_path / "q", device="cpu", iterations=4, max_samples=8, progress=False)
    assert report["memorisation"]["near_copies"] == len(samples)  # every copy beats real test images
    assert {f["train"] for f in report["memorisation"]["flagged"]} == set(labeled)


def test_assess_user_errors(syn_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(UserError, match="manifest.json"):
        assess(tmp_path, device="cpu")
    with pytest.raises(UserError, match="classes"):
        assess(syn_dir, data="phantom:lesion?n=12&size=32", out=tmp_path / "q", device="cpu")
    code = main(["assess", "--synthetic", str(tmp_path / "nothing"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --synthetic") and err.count("\n") == 1


class _Background(torch.nn.Module):
    """Predicts background everywhere (a segmenter that learned nothing)."""

    stride = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 3, *x.shape[2:])
        logits[:, 0] = 10.0
        return logits


def test_tstr_on_volume_slices_scores_whole_volumes_not_empty_slices(tmp_path: Path) -> None:
    """A segmenter that predicts nothing scores 0 on slices of volumes, where the slice mean gave it Dice 1 on
    every empty slice (2 of each volume's 3 here: 0.67); the test ids are cut at whole volumes."""
    nib = pytest.importorskip("nibabel")
    from gan_aug.assess import train_synthetic_test_real, whole_cases

    root = tmp_path / "msd"
    meta = {"name": "t", "labels": {"0": "background", "1": "head", "2": "tail"}, "modality": {"0": "MRI"},
            "training": []}
    for case in ("v0", "v1"):
        label = np.zeros((8, 8, 3), np.uint8)
        label[2:4, 2:4, 0], label[4:6, 4:6, 0] = 1, 2  # foreground in the first slice only
        for folder, array in (("imagesTr", label.astype(np.float32) * 50 + 10), ("labelsTr", label)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(array, np.eye(4)), str(root / folder / f"{case}.nii.gz"))
        meta["training"].append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps(meta))
    real = open_source(str(root))
    assert whole_cases(real, real.ids, 4) == real.ids[:3] and whole_cases(real, real.ids, 1) == real.ids[:3]
    report = train_synthetic_test_real(_Background(), _Background(), 8, real, real.ids, torch.device("cpu"))
    assert report["synthetic_only_dice"] == pytest.approx(0.0) and report["real_only_dice"] == pytest.approx(0.0)


def test_segmenters_crop_like_ssl_seg_even_when_the_gan_crops_inside_small_images() -> None:
    def gan(data: str, patch: int) -> GanConfig:
        return GanConfig(data=data, patch_size=patch, out="g", device="cpu")

    # a 32 px GAN crop inside 40 px images: its segmenters still see whole images (48, padded), as ssl-seg would
    assert segmenter_patch(gan("phantom:cardiac?n=4&size=40", 32), "phantom:cardiac?n=4&size=40") == 48
    assert segmenter_patch(gan("phantom:cardiac?n=4&size=32", 32), "phantom:cardiac?n=4&size=32") == 32
    assert segmenter_patch(gan("phantom:cardiac?n=4&size=128", 64), "phantom:cardiac?n=4&size=128") == 64
    assert segmenter_patch(gan("phantom:cardiac?n=4&size=128", 128), "phantom:cardiac?n=4&size=128") == 128
