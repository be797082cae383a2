"""gan_aug.diagnose: each measure on hand-made images, then `gan-aug diagnose` on a tiny synthesized set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi

from gan_aug.cli import main
from gan_aug.config import GanConfig
from gan_aug.diagnose import (background_only_texture, boundary_sharpness, class_values, compare, flat_block_share,
                              high_frequency_share, noise_like_share, radial_spectra, radial_spectrum)
from gan_aug.synthesize import synthesize
from gan_aug.train import train_gan


def test_class_values_and_intensity_distance_by_hand() -> None:
    masks = np.zeros((2, 8, 8), np.int64)
    masks[:, 2:6, 2:6] = 1
    real = np.where(masks == 1, 0.8, 0.2)[:, None].astype(np.float32)
    values = class_values(real, masks, 3)
    assert values[0].size == 2 * 48 and values[1].size == 2 * 16 and values[2].size == 0
    assert np.allclose(values[0], 0.2) and np.allclose(values[1], 0.8)
    shifted = real + 0.1  # every grey level 0.1 brighter: the 1-Wasserstein distance of each class is 0.1
    report, _ = compare((real, masks), (shifted, masks), ["bg", "fg", "absent"])
    rows = report["intensity_per_class"]
    assert rows["bg"]["wasserstein"] == pytest.approx(0.1) and rows["fg"]["synthetic_mean"] == pytest.approx(0.9)
    assert "wasserstein" not in rows["absent"] and rows["absent"]["real_pixels"] == 0


def test_spectrum_tells_noise_from_smooth_images() -> None:
    rng = np.random.default_rng(0)
    noise = rng.random((16, 1, 32, 32))
    smooth = ndi.gaussian_filter(noise, sigma=(0, 0, 2, 2))
    white = radial_spectrum(noise)
    assert white.shape == (17,) and white[0] == pytest.approx(0, abs=1e-9)  # the mean is removed
    assert high_frequency_share(white) > 0.5 > high_frequency_share(radial_spectrum(smooth))
    # a pure horizontal cosine of 4 cycles puts all its power at radius 4
    x = np.cos(2 * np.pi * 4 * np.arange(32) / 32)
    cosine = radial_spectrum(np.broadcast_to(x, (1, 1, 32, 32)))
    assert np.argmax(cosine) == 4 and cosine[4] > 1e3 * np.delete(cosine, 4).max()
    # 3 of 12 synthetic images are white noise among smooth ones: a quarter is noise-like against smooth real crops
    mixed = np.concatenate([smooth[:9], noise[:3]])
    found = noise_like_share(radial_spectra(smooth), radial_spectra(mixed))
    assert found["synthetic_share"] == 0.25
    assert noise_like_share(radial_spectra(smooth), radial_spectra(smooth[:8]))["synthetic_share"] <= 0.125


def test_boundary_sharpness_and_flat_blocks_by_hand() -> None:
    masks = np.zeros((1, 16, 16), np.int64)
    masks[:, :, 8:] = 1
    step = masks[:, None].astype(np.float64)  # a grey-level step exactly on the class boundary
    blurred = ndi.gaussian_filter(step, sigma=(0, 0, 2, 2))
    # Sobel (1, 2, 1) x (-1, 0, 1) on a unit step: magnitude 4 on both boundary columns
    assert boundary_sharpness(step, masks) == pytest.approx(4.0)
    assert boundary_sharpness(blurred, masks) < 0.5 * boundary_sharpness(step, masks)
    assert np.isnan(boundary_sharpness(step, np.zeros_like(masks)))
    assert flat_block_share(step) == 1.0  # every 4x4 tile is constant (the step lies on a tile edge)
    assert flat_block_share(np.random.default_rng(0).random((2, 1, 16, 16))) == 0.0
    half = np.random.default_rng(0).random((1, 1, 16, 16))
    half[..., :8, :] = 0  # black top half: 8 of 16 tiles flat
    assert flat_block_share(half) == 0.5
    # background-only texture: two of three masks are empty; their images are a flat grey and a 0/1 checkerboard
    images = np.stack([np.full((1, 4, 4), 0.5), np.indices((4, 4)).sum(0)[None] % 2, np.zeros((1, 4, 4))])
    masks = np.zeros((3, 4, 4), np.int64)
    masks[2, 0, 0] = 1
    # across the two: per pixel the values are {0.5, 0} or {0.5, 1}, std 0.25 at every pixel
    assert background_only_texture(images, masks) == {"images": 2, "mean_std": 0.25, "across_std": 0.25}
    copies = background_only_texture(np.repeat(images[1:2], 3, axis=0), np.zeros((3, 4, 4), np.int64))
    assert copies["mean_std"] == 0.5 and copies["across_std"] == 0.0  # textured, but the same image three times
    assert np.isnan(background_only_texture(images[2:], masks[2:])["mean_std"])
    assert np.isnan(background_only_texture(images[1:], masks[1:])["across_std"])  # one image: no spread


def test_cli_diagnose_writes_report_and_figure(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gan = tmp_path / "gan"
    train_gan(GanConfig(data="phantom:cardiac?n=20&size=32", labeled_fraction=0.3, out=str(gan), iterations=2,
                        batch_size=2, patch_size=32, ngf=8, ndf=8, device="cpu", progress=False))
    syn = tmp_path / "syn"
    synthesize(gan, 6, syn, device="cpu", progress=False)
    assert main(["diagnose", "--synthetic", str(syn), "--max-samples", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("real / synthetic: boundary sharpness") and out.count("\n") == 1
    report = json.loads((syn / "diagnosis" / "diagnosis.json").read_text())
    assert report["n"] == 4 and report["crop_size"] == 32 and len(report["intensity_per_class"]) == 4
    assert 0 <= report["flat_block_share"]["synthetic"] <= 1 and (syn / "diagnosis" / "diagnosis.png").stat().st_size
    bad = (([str(tmp_path / "nothing")], "--synthetic"), ([str(syn), "--max-samples", "0"], "--max-samples"))
    for argv, flag in bad:
        assert main(["diagnose", "--synthetic", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {flag}") and err.count("\n") == 1, err
