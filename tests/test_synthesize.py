"""gan_aug.masks and gan_aug.synthesize: mask sources, reader round trips, atomicity, flat memory, user errors."""

from __future__ import annotations

import itertools
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from gan_aug import synthesize as synth_module
from gan_aug.cli import main
from gan_aug.config import GanConfig
from gan_aug.masks import DeformMasks, MixMasks, build_mask_source, min_jacobian, smooth_displacement
from gan_aug.synthesize import synthesize
from gan_aug.train import train_gan
from ssl_seg.data.phantoms import phantom_mask
from ssl_seg.data.sources import open_source
from ssl_seg.errors import UserError

DATA = "phantom:cardiac?n=20&size=32"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions: one thread is faster, and far faster on a shared, busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def gan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-step 32 px cardiac GAN (4 classes, 1 channel)."""
    out = tmp_path_factory.mktemp("gan") / "gan"
    torch.set_num_threads(1)
    train_gan(GanConfig(data=DATA, labeled_fraction=0.3, out=str(out), iterations=2, batch_size=2, patch_size=32,
                        ngf=8, ndf=8, device="cpu", progress=False))
    return out


def cardiac_masks(n: int = 6, size: int = 48) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [phantom_mask("cardiac", size, rng) for _ in range(n)]


def test_deform_keeps_labels_and_class_set_and_is_seeded() -> None:
    masks = cardiac_masks()
    out = list(itertools.islice(iter(DeformMasks(masks, 32, seed=3)), 20))
    again = list(itertools.islice(iter(DeformMasks(masks, 32, seed=3)), 20))
    other = list(itertools.islice(iter(DeformMasks(masks, 32, seed=4)), 20))
    assert all(m.shape == (32, 32) and m.dtype == np.int64 and set(np.unique(m)) <= {0, 1, 2, 3} for m in out)
    assert all(np.array_equal(a, b) for a, b in zip(out, again))
    assert not all(np.array_equal(a, b) for a, b in zip(out, other))
    src = DeformMasks(masks, 48, seed=0)
    rng = np.random.default_rng(1)
    warped = [src.deform(m, rng) for m in masks]
    assert all(np.array_equal(np.unique(w), np.unique(m)) for w, m in zip(warped, masks))
    assert sum(not np.array_equal(w, m) for w, m in zip(warped, masks)) >= 5  # they do move
    # one heart stays one connected heart
    assert all(ndimage.label(w > 0, structure=np.ones((3, 3)))[1] == 1 for w in warped)


def test_displacement_is_smooth_modest_and_fold_free() -> None:
    disp = smooth_displacement(np.random.default_rng(0), 64, amplitude=3.0, control=5)
    assert disp.shape == (2, 64, 64) and np.abs(disp).max() == pytest.approx(3.0)
    assert np.abs(np.diff(disp, axis=-1)).max() < 1.0  # neighbouring pixels move by less than a pixel apart
    assert min_jacobian(np.eye(2), disp) > 0
    assert min_jacobian(np.eye(2), np.zeros((2, 8, 8))) == 1.0
    shear = np.zeros((2, 8, 8))
    shear[1] = -2.0 * np.arange(8)[None, :]  # x_source = x - 2x: folds the image over itself
    assert min_jacobian(np.eye(2), shear) == pytest.approx(-1.0)


def test_mix_never_exceeds_the_object_count_of_the_task() -> None:
    single = MixMasks(cardiac_masks(), 48, seed=0)  # one heart per mask: only replacements allowed
    assert single.max_objects == 1
    out = list(itertools.islice(iter(single), 20))
    assert all(ndimage.label(m > 0, structure=np.ones((3, 3)))[1] <= 1 for m in out)
    a = np.zeros((32, 32), np.int64)
    a[2:6, 2:6] = 1
    b = np.zeros((32, 32), np.int64)
    b[20:24, 20:24] = 1
    b[10:12, 26:28] = 1
    multi = MixMasks([a, b], 32, seed=0)
    assert multi.max_objects == 2
    mixed = multi.mix(a, b, np.random.default_rng(0))
    assert mixed is not None and 1 <= ndimage.label(mixed > 0, structure=np.ones((3, 3)))[1] <= 2


def test_mask_source_errors_name_the_fix() -> None:
    with pytest.raises(UserError, match="4 classes but the generator was trained with 2"):
        build_mask_source("deform", data="x", num_classes=2, size=32, seed=0, masks=cardiac_masks())
    with pytest.raises(UserError, match="2 classes but the generator was trained with 4"):
        build_mask_source("phantom", data="phantom:lesion", num_classes=4, size=32, seed=0)
    with pytest.raises(UserError, match="phantom:<task>"):
        build_mask_source("phantom", data="/some/folder", num_classes=2, size=32, seed=0)
    with pytest.raises(UserError, match="deform, mix, shape, phantom"):
        build_mask_source("learned", data="x", num_classes=2, size=32, seed=0)
    phantom = build_mask_source("phantom", data="phantom:cardiac", num_classes=4, size=32, seed=0)
    assert next(iter(phantom)).shape == (32, 32)


@pytest.mark.parametrize("mask_source", ["deform", "mix", "phantom"])
def test_hdf5_and_png_round_trip_through_the_reader(gan_dir: Path, tmp_path: Path, mask_source: str) -> None:
    m_h5 = synthesize(gan_dir, 10, tmp_path / "h5", mask_source=mask_source, seed=1, fmt="hdf5", batch_size=4,
                      device="cpu", progress=False)
    synthesize(gan_dir, 10, tmp_path / "png", mask_source=mask_source, seed=1, fmt="png", batch_size=4,
               device="cpu", progress=False)
    h5 = open_source(str(tmp_path / "h5" / "synthetic.h5"))
    png = open_source(str(tmp_path / "png"))
    assert len(h5) == len(png) == 10 and h5.num_classes == 4 and h5.in_channels == 1
    assert h5.class_names == ["background", "rv_cavity", "lv_myocardium", "lv_cavity"]
    a = [h5.load(i) for i in range(10)]
    b = [png.load(png.index_of(s.id)) for s in a]
    for x, y in zip(a, b):
        assert x.image.shape == (1, 32, 32) and 0 <= x.image.min() and x.image.max() <= 1
        assert np.array_equal(x.mask, y.mask)  # same seed -> same masks and generator noise in both formats
        assert np.abs(x.image - y.image).max() <= 0.5 / 255 + 1e-6  # only the 8-bit PNG rounding differs
    counts = np.bincount(np.concatenate([s.mask.ravel() for s in a]), minlength=4)
    assert list(m_h5["class_pixel_frequency"].values()) == pytest.approx((counts / counts.sum()).tolist())
    manifest = json.loads((tmp_path / "h5" / "manifest.json").read_text())
    assert manifest["n"] == 10 and manifest["mask_source"] == mask_source and manifest["image_size"] == [32, 32]
    assert len(manifest["generator_sha256"]) == 64 and manifest["gan_config"]["ngf"] == 8
    assert (tmp_path / "h5" / "samples.png").is_file() and (tmp_path / "png" / "samples.png").is_file()


def test_seed_decides_the_output(gan_dir: Path, tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        synthesize(gan_dir, 4, tmp_path / name, seed=seed, device="cpu", progress=False)
    a, b, c = (open_source(str(tmp_path / n / "synthetic.h5")).load(0) for n in "abc")
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.image, c.image)


def test_auto_precision_is_bf16_on_a_bf16_cpu_and_close_to_float32(gan_dir: Path, tmp_path: Path) -> None:
    from ssl_seg.device import cpu_supports_bf16

    auto = synthesize(gan_dir, 4, tmp_path / "auto", seed=3, device="cpu", progress=False)
    off = synthesize(gan_dir, 4, tmp_path / "off", seed=3, device="cpu", amp="off", progress=False)
    assert (auto["dtype"], off["dtype"]) == ("bfloat16" if cpu_supports_bf16() else "float32", "float32")
    a, b = (open_source(str(tmp_path / n / "synthetic.h5")) for n in ("auto", "off"))
    for i in range(4):
        assert np.array_equal(a.load(i).mask, b.load(i).mask)
        assert np.abs(a.load(i).image - b.load(i).image).mean() < 0.01  # same pixels up to bf16 rounding


@pytest.mark.parametrize("fmt, writer", [("hdf5", "_H5Writer"), ("png", "_PngWriter")])
def test_killed_synthesis_leaves_no_output(gan_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           fmt: str, writer: str) -> None:
    cls = getattr(synth_module, writer)
    original, calls = cls.append, []

    def dies_on_second_chunk(self, images, masks, ids):
        calls.append(len(ids))
        if len(calls) == 2:
            raise KeyboardInterrupt
        original(self, images, masks, ids)

    monkeypatch.setattr(cls, "append", dies_on_second_chunk)
    parent = tmp_path / "parent"
    with pytest.raises(KeyboardInterrupt):
        synthesize(gan_dir, 12, parent / "syn", fmt=fmt, batch_size=4, device="cpu", progress=False)
    assert calls == [4, 4]
    assert list(parent.iterdir()) == []  # neither SYN_DIR nor its temp folder


def test_memory_stays_flat_as_n_grows(gan_dir: Path, tmp_path: Path) -> None:
    peaks = {}
    for n in (64, 512):
        tracemalloc.start()
        synthesize(gan_dir, n, tmp_path / f"n{n}", batch_size=16, device="cpu", progress=False)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # holding the 512 masks alone would add 4 MB (512 x 32 x 32 x int64)
    assert peaks[512] < peaks[64] * 1.1 + 256 * 1024, peaks


def test_user_errors(gan_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        synthesize(tmp_path / "missing", 4, tmp_path / "o", device="cpu")
    not_gan = tmp_path / "other.pt"
    torch.save({"format_version": 1, "models": {}}, not_gan)
    with pytest.raises(UserError, match="not a gan-aug checkpoint"):
        synthesize(not_gan, 4, tmp_path / "o", device="cpu")
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(UserError, match="unreadable"):
        synthesize(garbage, 4, tmp_path / "o", device="cpu")
    with pytest.raises(UserError, match="num_classes 2 instead of 4"):
        synthesize(gan_dir, 4, tmp_path / "o", mask_source="phantom", mask_data="phantom:lesion", device="cpu")
    synthesize(gan_dir, 2, tmp_path / "once", device="cpu", progress=False)
    with pytest.raises(UserError, match="--overwrite"):
        synthesize(gan_dir, 2, tmp_path / "once", device="cpu", progress=False)
    synthesize(gan_dir, 3, tmp_path / "once", device="cpu", progress=False, overwrite=True)
    assert len(open_source(str(tmp_path / "once" / "synthetic.h5"))) == 3
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("once")) == ["once"]


def test_cli_synthesize_and_one_line_error(gan_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["synthesize", "--checkpoint", str(gan_dir), "--n", "3", "--out", str(tmp_path / "s"),
                 "--format", "png", "--device", "cpu", "--no-progress", "--mask-source", "mix"]) == 0
    assert "pairs/s" in capsys.readouterr().out
    code = main(["synthesize", "--checkpoint", str(tmp_path / "nope"), "--n", "3", "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --checkpoint") and err.count("\n") == 1


def test_preview_batch_puts_samples_with_foreground_first() -> None:
    from types import SimpleNamespace

    from gan_aug.data import PairBank

    masks = [np.zeros((8, 8), np.int64) for _ in range(5)]
    masks[2][3:5, 3:5], masks[4][2:6, 2:6] = 1, 2  # two of five slices show a structure, the first two are empty
    samples = [SimpleNamespace(image=np.full((1, 8, 8), i / 10, np.float32), mask=m) for i, m in enumerate(masks)]
    source = SimpleNamespace(name="fake", index_of=int, load=lambda i: samples[i])
    bank = PairBank(source, ["0", "1", "2", "3", "4"])  # type: ignore[arg-type]
    mask, image = bank.preview_batch(8, 3)
    assert [int(m.max()) for m in mask] == [1, 2, 0]  # foreground in order, then the first empty one
    assert torch.allclose(image[:, 0, 0, 0], torch.tensor([0.2, 0.4, 0.0]) * 2 - 1)  # images follow their masks
    assert [int(m.max()) for m in bank.center_batch(8, 3)[0]] == [0, 0, 1]  # GAN validation keeps its order
