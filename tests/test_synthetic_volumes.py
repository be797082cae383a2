"""Synthetic volumes: a 2D GAN on the slices of the lesion_volume phantom, slice-consistent masks, shared noise,
`synthesize --format nifti` as an MSD folder read back by open_source(..., spatial_dims=3), and 3D training
mixing it in."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel
import numpy as np
import pytest
import torch

from gan_aug.cli import main as gan_main
from gan_aug.config import GanConfig
from gan_aug.data import PairBank, gan_source, gan_split
from gan_aug.masks import DeformVolumes
from gan_aug.networks import AlwaysDropout, UnetGenerator, one_hot, shared_noise
from gan_aug.synthesize import synthesize
from gan_aug.train import train_gan
from gan_aug.volumes import SHARES, adjacent_correlation, fit_noise_share
from ssl_seg.cli import main as ssl_main
from ssl_seg.data.sample import task_differences
from ssl_seg.data.sources import open_source
from ssl_seg.errors import UserError
from ssl_seg.experiments.synthesis import SynthesisRequest

DATA = "phantom:lesion_volume?n=6&size=16"  # (8, 16, 16) voxels of 3 x 1 x 1 mm, 3 classes


@pytest.fixture(scope="module")
def gan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-step 16 px GAN on the slices of 2 labeled phantom volumes."""
    out = tmp_path_factory.mktemp("gan3d") / "gan"
    result = train_gan(GanConfig(data=DATA, spatial_dims=3, labeled_cases=2, out=str(out), iterations=3,
                                 batch_size=4, patch_size=16, ngf=4, ndf=4, n_layers=2, device="cpu",
                                 progress=False))
    assert result["n_labeled"] == 2 and np.isfinite(result["val_l1"])
    return out


def test_volume_pairs_are_the_slices_of_the_labeled_volumes() -> None:
    cfg = GanConfig(data=DATA, spatial_dims=3, labeled_cases=2)
    source = gan_source(cfg)
    labeled = gan_split(cfg, source).labeled
    bank = PairBank(source, labeled)
    volume = source.load(source.index_of(labeled[1]))
    depth = volume.mask.shape[0]
    assert len(bank) == 2 * depth and bank.ids == labeled
    assert np.array_equal(bank.masks[depth + 3], volume.mask[3])
    assert np.array_equal(bank.images[depth + 3], volume.image[:, 3])
    assert bank.showcase == [depth // 2, depth + depth // 2]  # validation shows middle slices, not empty tops


def test_deform_volumes_warps_every_slice_alike() -> None:
    source = open_source(DATA, spatial_dims=3)
    masks = [source.load(i).mask for i in range(3)]
    it = iter(DeformVolumes(masks, seed=0))
    for _ in range(4):
        k, warped = next(it)
        assert warped.shape == masks[k].shape and warped.dtype == np.int64
        assert set(np.unique(warped)) == set(np.unique(masks[k]))  # the class set is kept
    # a through-plane constant mask stays constant through the plane: one warp for all slices
    column = np.zeros((5, 16, 16), np.int64)
    column[:, 4:11, 5:12] = 1
    _, warped = next(iter(DeformVolumes([column], seed=3)))
    assert all(np.array_equal(warped[0], s) for s in warped[1:]) and not np.array_equal(warped[0], column[0])
    a, b = (next(iter(DeformVolumes(masks, seed=5)))[1] for _ in range(2))
    assert np.array_equal(a, b)  # seeded


@torch.no_grad()
def test_shared_noise_gives_every_batch_element_the_same_noise() -> None:
    torch.manual_seed(0)
    g = UnetGenerator(num_classes=2, out_channels=1, ngf=4, n_down=3, noise_channel=True).eval()
    x = one_hot(torch.zeros(3, 16, 16, dtype=torch.long), 2)  # three identical masks
    out = g(x)
    assert not torch.allclose(out[0], out[1])  # independent dropout and noise: they differ
    with shared_noise(g, 1.0, seed=7):
        out = g(x)
    assert torch.allclose(out[0], out[1]) and torch.allclose(out[0], out[2])
    with shared_noise(g, 1.0, seed=7):  # the same seed in another chunk (of another size): the same noise
        assert torch.allclose(g(x[:1])[0], out[0])
    with shared_noise(g, 0.5, seed=7):  # half shared: closer to each other than independent draws, not equal
        half = g(x)
    independent = g(x)
    assert 0 < float((half[0] - half[1]).abs().mean()) < float((independent[0] - independent[1]).abs().mean())
    with pytest.raises(UserError, match="--slice-noise-share"):
        with shared_noise(g, 1.5, seed=0):
            pass


def test_auto_share_matches_the_real_adjacent_slice_correlation() -> None:
    """A "generator" that is pure dropout noise: adjacent slices correlate by about share**2 (both units shared)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 1, 1, bias=False)
    torch.nn.init.constant_(conv.weight, 1.0)
    noise = torch.nn.Sequential(conv, AlwaysDropout(0.5)).requires_grad_(False)
    mask = np.zeros((8, 64, 64), np.int64)
    rng = np.random.default_rng(0)
    flat = (mask[None].astype(np.float32), mask)
    iid = (rng.random((1, 8, 64, 64)).astype(np.float32), mask)  # independent voxels: correlation ~0
    same = (np.repeat(rng.random((1, 1, 64, 64)), 8, axis=1).astype(np.float32), mask)  # identical slices: 1
    fit = fit_noise_share(noise, [iid, iid], 2, 4, torch.device("cpu"), None, False)
    assert fit["share"] == 0.0 and abs(fit["real_adjacent_corr"]) < 0.2
    assert fit_noise_share(noise, [same], 2, 4, torch.device("cpu"), None, False)["share"] == 1.0
    corr = fit["generated_adjacent_corr"]
    assert corr["0.0"] < corr["0.5"] < corr["0.9"] < corr["1.0"] == pytest.approx(1.0)
    assert np.isnan(adjacent_correlation(flat[0][0]))  # constant slices carry no correlation


def test_nifti_round_trip_through_the_volume_reader(gan_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "syn"
    m = synthesize(gan_dir, 3, out, fmt="nifti", batch_size=4, device="cpu", amp="off", progress=False)
    assert m["format"] == "nifti" and m["n"] == 3 and (out / "samples.png").is_file()
    assert m["slice_noise_share"] == m["slice_noise_fit"]["share"] in SHARES  # auto by default
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"0": "background", "1": "organ", "2": "lesion"} and meta["numTraining"] == 3
    real = open_source(DATA, spatial_dims=3)
    syn = open_source(str(out), spatial_dims=3)
    assert task_differences(real, syn) == [] and len(syn) == 3
    for case in syn.cases:
        assert syn.shapes[case] == real.shapes[real.cases[0]] == (8, 16, 16)  # (D, H, W) of the source volumes
        assert syn.spacing[case] == pytest.approx((3.0, 1.0, 1.0))
        assert np.allclose(syn.affine[case], real.affine[real.cases[0]])
        label = nibabel.load(out / "labelsTr" / f"{case}.nii.gz")
        assert label.shape == (16, 16, 8) and np.allclose(label.header.get_zooms(), (1.0, 1.0, 3.0))
    sample = syn.load(0)
    assert sample.image.shape == (1, 8, 16, 16) and sample.mask.shape == (8, 16, 16)
    assert set(np.unique(sample.mask)) <= {0, 1, 2} and 0 <= sample.image.min() <= sample.image.max() <= 1
    # the existing folder rules of synthesize: no silent overwrite, --overwrite replaces its own output
    with pytest.raises(UserError, match="already exists"):
        synthesize(gan_dir, 1, out, fmt="nifti", device="cpu", progress=False)
    m = synthesize(gan_dir, 1, out, fmt="nifti", device="cpu", amp="off", overwrite=True, progress=False)
    assert len(open_source(str(out), spatial_dims=3)) == 1
    assert not list(tmp_path.glob("syn.tmp-*")) and not list(tmp_path.glob("syn.old-*"))


def test_volume_run_mixes_in_the_synthetic_volumes(gan_dir: Path, tmp_path: Path, capsys) -> None:
    syn = tmp_path / "syn"
    synthesize(gan_dir, 2, syn, fmt="nifti", device="cpu", amp="off", progress=False)
    out = tmp_path / "run"
    argv = ["train", "--data", DATA, "--spatial-dims", "3", "--patch-size", "16", "--labeled-cases", "2",
            "--iterations", "3", "--batch-size", "2", "--base-channels", "4", "--val-every", "3", "--no-progress",
            "--num-workers", "0", "--synthetic", str(syn), "--synthetic-ratio", "0.5", "--out", str(out)]
    assert ssl_main(argv) == 0
    result = json.loads((out / "result.json").read_text())
    assert 0 < result["synthetic_ratio_mean"] <= 1  # synthetic volumes were in the labeled batches
    other = tmp_path / "other"  # another task: a one-line error
    synthesize(gan_dir, 1, other, fmt="nifti", device="cpu", amp="off", progress=False)
    meta = json.loads((other / "dataset.json").read_text())
    meta["labels"] = {"0": "background", "1": "organ"}
    (other / "dataset.json").write_text(json.dumps(meta))
    capsys.readouterr()
    assert ssl_main(argv[:-3] + [str(other), "--synthetic-ratio", "0.5", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--synthetic" in err


def test_bad_inputs_are_one_line_errors(gan_dir: Path, tmp_path: Path, capsys) -> None:
    gan2d = tmp_path / "gan2d"
    train_gan(GanConfig(data="phantom:lesion?n=8&size=32", out=str(gan2d), iterations=1, batch_size=2,
                        patch_size=32, ngf=4, ndf=4, n_layers=2, device="cpu", progress=False))
    cases = [
        (["--checkpoint", str(gan2d), "--format", "nifti"], "--format nifti writes volumes"),
        (["--checkpoint", str(gan_dir), "--format", "hdf5"], "use --format nifti"),
        (["--checkpoint", str(gan_dir), "--format", "nifti", "--mask-source", "mix"], "'deform' only"),
        (["--checkpoint", str(gan_dir), "--format", "nifti", "--slice-noise-share", "1.5"], "--slice-noise-share"),
    ]
    for extra, message in cases:
        capsys.readouterr()
        assert gan_main(["synthesize", "--n", "1", "--out", str(tmp_path / "x"), "--no-progress", *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and "Traceback" not in err
        assert not (tmp_path / "x").exists()
    assert gan_main(["train", "--data", DATA, "--spatial-dims", "3", "--pseudo-labels", str(tmp_path),
                     "--out", str(tmp_path / "g"), "--iterations", "1"]) == 2
    assert "2D data only" in capsys.readouterr().err


def test_sweep_trains_a_gan_and_mixes_synthetic_volumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gan_aug import provider

    out = tmp_path / "sweep"
    argv = ["sweep", "--data", DATA, "--spatial-dims", "3", "--profile", "tiny", "--train-gan", "--fractions", "0.5",
            "--ratios", "0.5", "--methods", "supervised", "--seeds", "0", "--device", "cpu", "--out", str(out)]
    assert ssl_main(argv) == 0
    syn = out / "synthetic" / "f0.5" / "synthetic_deform"
    source = open_source(str(syn), spatial_dims=3)
    assert len(source) == 2  # the tiny profile's 16 pairs as slices of 8-slice volumes
    ratios = sorted(json.loads(p.read_text())["synthetic_ratio_mean"] for p in out.glob("runs/*/result.json"))
    assert ratios == [0.0, 0.5]
    monkeypatch.setattr(provider, "train_gan", lambda *a, **k: pytest.fail("finished work must be reused"))
    request = SynthesisRequest(DATA, 0.5, 0, out / "synthetic" / "f0.5", "tiny", "cpu", spatial_dims=3)
    assert provider.train_and_synthesize(request) == syn


def test_cli_trains_a_volume_gan(tmp_path: Path, capsys) -> None:
    argv = ["train", "--data", DATA, "--spatial-dims", "3", "--labeled-cases", "2", "--iterations", "1",
            "--patch-size", "16", "--ngf", "4", "--ndf", "4", "--n-layers", "2", "--no-progress", "--device", "cpu",
            "--out", str(tmp_path / "gan")]
    assert gan_main(argv) == 0
    assert "2 labeled volumes" in capsys.readouterr().out
    assert json.loads((tmp_path / "gan" / "config.json").read_text())["spatial_dims"] == 3
