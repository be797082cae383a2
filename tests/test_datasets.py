"""Batches are a pure function of (seed, step): exact composition, determinism, augmentation keeps pairs aligned."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ssl_seg.data.datasets import PairDataset, StepBatches, synthetic_count
from ssl_seg.data.mixing import build_schedule
from ssl_seg.data.sources import open_source
from ssl_seg.data.transforms import JointTransform, normalize
from ssl_seg.errors import UserError


@pytest.fixture(scope="module")
def sources():
    return open_source("phantom:cardiac?n=12&size=32"), open_source("phantom:cardiac?n=8&size=32&seed=7")


def test_same_step_same_batch(sources):
    real, _ = sources
    pairs = PairDataset(real, real.ids, JointTransform(32))
    steps = StepBatches(pairs, pairs, 3, 2, iterations=10, seed=1)
    a, b = steps[4], steps[4]
    assert torch.equal(a["labeled"]["image"], b["labeled"]["image"])
    assert torch.equal(a["unlabeled"]["image"], b["unlabeled"]["image"])
    assert not torch.equal(steps[5]["labeled"]["image"], a["labeled"]["image"])
    assert a["labeled"]["mask"].shape == (3, 32, 32) and a["unlabeled"]["image"].shape == (2, 1, 32, 32)


def test_global_rng_untouched(sources):
    real, _ = sources
    pairs = PairDataset(real, real.ids, JointTransform(32))
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    pairs.get(0, 123)
    assert torch.equal(torch.rand(3), expected)


def test_augmentation_keeps_mask_aligned():
    """Geometric augmentation moves image and mask together: a bright square stays labeled."""
    t = JointTransform(32)
    image = torch.zeros(1, 40, 40)
    image[0, 10:25, 12:30] = 1.0
    mask = (image[0] > 0.5).long()
    roi = torch.ones(40, 40, dtype=torch.bool)
    for seed in range(10):
        torch.manual_seed(seed)
        img, m, inside = t(image, mask, roi)
        bright = img[0] > img[0][inside].mean()
        agree = (bright == (m == 1))[inside].float().mean()
        assert agree > 0.95


def test_padded_patch_is_normalised_like_the_whole_image():
    """An image smaller than the patch: its real pixels get the z-scores the unpadded image gets at evaluation."""
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 20, 24, generator=g)
    mask = torch.zeros(20, 24, dtype=torch.long)
    roi = torch.ones(20, 24, dtype=torch.bool)
    img, _, inside = JointTransform(32, augment=False)(image, mask, roi)
    assert inside.sum() == 20 * 24
    # the padded patch's real pixels, as a set, equal the evaluation z-scores of the whole image
    expected = torch.sort(normalize(image).flatten()).values
    torch.testing.assert_close(torch.sort(img[0][inside]).values, expected, atol=1e-5, rtol=1e-5)
    # counting the padding (what the pipeline did before) gives other values
    padded = torch.zeros(1, 32, 32)
    padded[:, :20, :24] = image
    assert not torch.allclose(normalize(padded)[0, :20, :24], normalize(image)[0], atol=0.1)


@pytest.mark.parametrize("schedule, r0, r1", [("constant", 0.5, None), ("linear", 0.5, 0.0),
                                               ("cosine", 1.0, 0.0), ("step", 0.75, 0.25), ("warmup", 0.0, 1.0)])
def test_exact_composition_per_batch(sources, schedule, r0, r1):
    real, syn = sources
    transform = JointTransform(32)
    ratio_at = build_schedule(schedule, r0, r1, iterations=11)
    steps = StepBatches(PairDataset(real, real.ids, transform), None, 4, 0, 11, seed=0,
                        synthetic=PairDataset(syn, syn.ids, transform), ratio_at=ratio_at)
    for step in (0, 5, 10):
        expected = synthetic_count(4, ratio_at(step))
        assert steps[step]["n_synthetic"] == expected
        assert steps[step]["labeled"]["image"].shape[0] == 4


def test_schedule_values():
    lin = build_schedule("linear", 0.5, 0.0, iterations=101)
    assert lin(0) == pytest.approx(0.5) and lin(50) == pytest.approx(0.25) and lin(100) == pytest.approx(0.0)
    cos = build_schedule("cosine", 1.0, 0.0, iterations=101)
    assert cos(50) == pytest.approx(0.5) and cos(0) == pytest.approx(1.0)
    step = build_schedule("step", 0.75, 0.25, iterations=101)
    assert step(49) == 0.75 and step(50) == 0.25
    warm = build_schedule("warmup", 0.5, 0.5, iterations=101)
    assert warm(10) == 0.0 and warm(60) == pytest.approx(0.5)
    assert synthetic_count(8, 0.5) == 4 and synthetic_count(4, 0.3) == 1 and synthetic_count(4, 0.375) == 2
    with pytest.raises(UserError, match="--ratio-schedule"):
        build_schedule("zigzag", 0.5, None, 10)
    with pytest.raises(UserError, match="--synthetic-ratio"):
        build_schedule("constant", 1.5, None, 10)


def test_ratio_zero_matches_real_only(sources):
    real, syn = sources
    t = JointTransform(32)
    plain = StepBatches(PairDataset(real, real.ids, t), None, 4, 0, 5, seed=2)
    mixed = StepBatches(PairDataset(real, real.ids, t), None, 4, 0, 5, seed=2,
                        synthetic=PairDataset(syn, syn.ids, t), ratio_at=build_schedule("constant", 0.0, None, 5))
    for step in range(5):
        assert torch.equal(plain[step]["labeled"]["image"], mixed[step]["labeled"]["image"])
        assert torch.equal(plain[step]["labeled"]["mask"], mixed[step]["labeled"]["mask"])


# ------------------------------------------------------------------ the loader: cache, workers, errors

def _steps_and_cfg(workers: int | None, cache_mb: int):
    from ssl_seg.config import RunConfig
    from ssl_seg.engine.runner import build_split, step_batches

    cfg = RunConfig()
    cfg.data.data, cfg.data.patch_size = "phantom:cardiac?n=12&size=32", 32
    cfg.data.num_workers, cfg.data.cache_mb = workers, cache_mb
    cfg.method.name, cfg.train.batch_size, cfg.train.iterations, cfg.train.seed = "mean-teacher", 2, 9, 3
    source = open_source(cfg.data.data)
    return step_batches(cfg, source, build_split(cfg, source), 0), cfg


def _flat(batch: dict) -> list[torch.Tensor]:
    return [batch["labeled"][k] for k in ("image", "mask", "roi")] + [batch["unlabeled"]["image"]]


@pytest.mark.parametrize("start", [0, 5])  # 5: a resumed run starts its loader there
def test_workers_and_cache_give_the_batches_of_the_plain_path(start):
    from ssl_seg.engine.runner import loader_factory

    plain_steps, plain_cfg = _steps_and_cfg(0, 0)
    plain = [_flat(b) for b in loader_factory(plain_steps, plain_cfg)(start)]
    steps, cfg = _steps_and_cfg(2, 64)
    fast = [_flat(b) for b in loader_factory(steps, cfg)(start)]
    fast_again = [_flat(b) for b in loader_factory(steps, cfg)(start)]  # now from warm caches
    assert len(plain) == len(fast) == 9 - start
    for a, b, c in zip(plain, fast, fast_again):
        assert all(torch.equal(x, y) and torch.equal(x, z) for x, y, z in zip(a, b, c))


def test_cache_is_bounded_and_least_recently_used_goes_first():
    from ssl_seg.data.cache import CachedSource, sample_nbytes

    source = open_source("phantom:cardiac?n=6&size=32")
    one = sample_nbytes(source.load(0))
    cached = CachedSource(source, max_bytes=2 * one)
    first = cached.load(0)
    cached.load(1)
    assert cached.load(0) is first  # a hit, and 0 becomes the most recent
    cached.load(2)  # evicts 1, the least recently used
    assert list(cached._items) == [0, 2] and cached.nbytes == 2 * one
    assert cached.load(0) is first and cached.load(1) is not None
    assert CachedSource(source, 0).load(3) is not None and CachedSource(source, 0).nbytes == 0


class _BreaksAt:
    """A phantom source whose sample `bad` fails to load the way a damaged file does (UserError)."""

    def __init__(self, source, bad: int):
        self.source, self.bad = source, bad

    def __getattr__(self, name):
        return getattr(self.source, name)

    def load(self, index: int):
        if index == self.bad:
            raise UserError(f"images/s{index}.png: corrupt or truncated image; re-export or delete it")
        return self.source.load(index)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_file_read_by_a_worker_gives_the_one_line_error(workers, capsys):
    from types import SimpleNamespace

    from ssl_seg.cli import run_command
    from ssl_seg.engine.runner import loader_factory

    steps, cfg = _steps_and_cfg(workers, 0)
    source = _BreaksAt(steps.labeled.source, steps.labeled.indices[0])
    steps.labeled.source = steps.unlabeled.source = source

    def train(args):
        for _ in loader_factory(steps, cfg)(0):
            pass

    assert run_command(SimpleNamespace(func=train)) == 2  # what the CLI does with it
    err = capsys.readouterr().err
    assert err == f"error: images/s{source.bad}.png: corrupt or truncated image; re-export or delete it\n"
