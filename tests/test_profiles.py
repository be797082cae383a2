"""The one profile registry: segmentation budget, GAN budget and study plan per name; `--iterations` rescaling."""

from __future__ import annotations

from pathlib import Path

import pytest

from ssl_seg.errors import UserError
from ssl_seg.experiments.profiles import PROFILES, base_config, gan_budget, native_patch, profile, study_plan


def test_every_study_plan_has_a_gan_budget_and_a_sane_plan():
    for name, prof in PROFILES.items():
        if prof.study is not None:  # a study trains a GAN: it needs the GAN budget of the same profile
            assert gan_budget(name) is prof.gan and study_plan(name) is prof.study
            p = prof.study
            assert p.sweep_fraction in p.fractions and p.ratios[0] == 0 and "supervised" in p.methods
    assert {"tiny", "quick", "standard"} <= {n for n, p in PROFILES.items() if p.study is not None}


def test_segmentation_only_profile_and_unknown_names_fail_clearly():
    with pytest.raises(UserError, match="no study plan for it; valid: tiny, quick, standard"):
        study_plan("realistic")
    with pytest.raises(UserError, match="no GAN budget"):
        gan_budget("realistic")
    with pytest.raises(UserError, match="--profile huge: unknown; valid: tiny, quick, standard, realistic"):
        profile("huge")


def test_iterations_override_rescales_the_dependent_steps():
    cfg = base_config("phantom:cardiac?n=4&size=32", profile("quick"), "cpu")
    assert (cfg.train.iterations, cfg.train.image_every, cfg.train.val_every) == (120, 120, 60)
    cfg = base_config("phantom:cardiac?n=4&size=32", profile("quick"), "cpu", iterations=30)
    assert (cfg.train.iterations, cfg.train.image_every, cfg.train.val_every) == (30, 30, 30)
    cfg = base_config("phantom:cardiac?n=4&size=32", profile("quick"), "cpu", iterations=1000)
    assert (cfg.train.iterations, cfg.train.image_every, cfg.train.val_every) == (1000, 1000, 60)


def test_bare_phantom_gets_the_profile_size():
    assert base_config("phantom:cardiac", profile("tiny"), "cpu").data.data == "phantom:cardiac?n=24&size=32"


def test_realistic_profile_and_native_patch():
    prof = profile("realistic").seg
    assert 128 <= prof.patch_size <= 256 and 16 <= prof.base_channels <= 32
    assert 2000 <= prof.iterations <= 3000 and 100 <= prof.val_every <= 200 and prof.val_max_samples is None
    # images smaller than the profile's patch: the patch shrinks to the native size (rounded up to 16)
    assert native_patch("phantom:cardiac?n=4&size=40", 128) == 48
    assert native_patch("phantom:cardiac?n=4&size=200", 128) == 128
    cfg = base_config("phantom:cardiac?n=4&size=40", profile("realistic"), "cpu")
    assert cfg.data.patch_size == 48 and cfg.train.val_max_samples is None and cfg.train.iterations == 2000


def test_3d_patch_is_sized_on_the_volumes_and_volume_only_data_opens(tmp_path):
    from ssl_seg.cli import main
    from ssl_seg.data.h5format import write_source_to_h5
    from ssl_seg.data.volumes import LesionVolumeSource

    # (8, 16, 16) voxels of 3 x 1 x 1 mm: through-plane 24 mm, the largest extent (2D sees only the 16 px slices)
    assert native_patch("phantom:lesion_volume?n=2&size=16", 64, spatial_dims=2) == 16
    assert native_patch("phantom:lesion_volume?n=2&size=16", 64, spatial_dims=3) == 32
    assert native_patch("phantom:lesion_volume?n=2&size=16", 16, spatial_dims=3) == 16  # the profile's when smaller
    # a volume-only dataset (project HDF5 of volumes) could not be opened as 2D slices to size the patch
    vols = write_source_to_h5(LesionVolumeSource(n=4, size=16, seed=1), tmp_path / "vols.h5", {})
    cfg = base_config(str(vols), profile("standard"), "cpu", run_flags={"data.spatial_dims": 3})
    assert (cfg.data.patch_size, cfg.data.spatial_dims) == (32, 3)
    given = base_config(str(vols), profile("standard"), "cpu", run_flags={"data.spatial_dims": 3, "data.patch_size": 8})
    assert given.data.patch_size == 8
    assert main(["ablate", "--data", str(vols), "--spatial-dims", "3", "--profile", "tiny", "--methods", "supervised",
                 "--fractions", "0.5", "--seeds", "0", "--no-full-reference", "--summary-only",
                 "--out", str(tmp_path / "grid")]) == 0


def test_gan_patch_fits_inside_the_images():
    from gan_aug.provider import gan_config
    from ssl_seg.experiments.profiles import inside_patch

    # 40 px images: the segmentation patch rounds up (48, padded), the GAN's crop rounds down (32, no padding)
    assert inside_patch("phantom:cardiac?n=4&size=40", 64) == 32
    assert inside_patch("phantom:cardiac?n=4&size=64", 64) == 64  # the profile's when the images hold it
    assert inside_patch("phantom:lesion_volume?n=2&size=40", 64, spatial_dims=3) == 32  # slices of volumes
    # never below what the PatchGAN takes: 16 px slices are padded up to 32 (at 16 its last layers have 1 x 1 maps)
    assert inside_patch("phantom:lesion_volume?n=2&size=16", 64, spatial_dims=3) == 32
    assert inside_patch("phantom:cardiac?n=4&size=40", 64, minimum=48) == 48
    cfg = gan_config("phantom:cardiac?n=4&size=40", 0.5, 0, Path("gan"), "quick", "cpu")
    assert (cfg.patch_size, cfg.n_down) == (32, 4)
    assert cfg.ema_rampup == 0.05  # the quick profile's short GAN samples a ramped EMA (RESULTS, sixteenth session)
    assert gan_config("phantom:cardiac?n=4&size=40", 0.5, 0, Path("gan"), "standard", "cpu").ema_rampup == 0.0
    assert gan_config("phantom:cardiac?n=4&size=64", 0.5, 0, Path("gan"), "quick", "cpu").patch_size == 64
