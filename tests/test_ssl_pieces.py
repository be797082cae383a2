"""Shared SSL pieces: EMA, ramp-ups, confidence masking, CutMix and strong augmentation, on hand-made tensors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from ssl_seg.errors import UserError
from ssl_seg.methods.confidence import masked_cross_entropy
from ssl_seg.methods.pseudo_labeler import PseudoLabeler
from ssl_seg.methods.cutmix import cutmix, cutmix_boxes, paste
from ssl_seg.methods.ema import EMATeacher, ema_decay_at, ema_update, ramped_ema_decay
from ssl_seg.methods.rampup import sigmoid_rampup
from ssl_seg.methods.strong_aug import gaussian_blur, photometric_jitter, strong_augment


class _Scalar(nn.Module):
    """One parameter and one buffer, to check EMA arithmetic by hand."""

    def __init__(self, w: float, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([w]))
        self.register_buffer("stat", torch.tensor([b]))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- EMA -------------------------------------------------------------------------------------------------


def test_ema_update_matches_formula_and_keeps_own_buffers() -> None:
    teacher, student = _Scalar(1.0, 5.0), _Scalar(3.0, 7.0)
    ema_update(teacher, student, decay=0.9)
    assert teacher.w.item() == pytest.approx(0.9 * 1.0 + 0.1 * 3.0)
    assert teacher.stat.item() == 5.0  # BN statistics come from the teacher's own forward passes
    assert student.w.item() == 3.0


def test_ema_warmup_decay_values() -> None:
    assert ema_decay_at(0.99, 0) == 0.0
    assert ema_decay_at(0.99, 1) == pytest.approx(0.5)
    assert ema_decay_at(0.99, 9) == pytest.approx(0.9)
    assert ema_decay_at(0.99, 10_000) == 0.99


def test_generator_ema_half_life_is_capped_at_a_share_of_the_steps_taken() -> None:
    # 0.999 has a half-life of ln 0.5 / ln 0.999 = 692.8 steps; at step 599 the cap is 0.05 x 600 = 30 steps
    assert ramped_ema_decay(0.999, 599, 0.05) == pytest.approx(0.5 ** (1 / 30))  # 0.97716
    assert ramped_ema_decay(0.999, 0, 0.05) == pytest.approx(0.5 ** 20)  # the first step copies the generator
    assert ramped_ema_decay(0.999, 20_000, 0.05) == 0.999  # cap 1000 steps > 692.8: the plain decay
    assert ramped_ema_decay(0.0, 5, 0.05) == 0.0
    assert ramped_ema_decay(0.999, 599, 0.0) == ema_decay_at(0.999, 599)  # no ramp: the mean-teacher warm-up

    def lag(rule) -> float:  # how far an EMA of weights w_t = t trails the last weight after 600 steps
        ema = 0.0
        for t in range(600):
            beta = rule(0.999, t)
            ema = beta * ema + (1 - beta) * t
        return 599 - ema

    assert lag(ema_decay_at) == pytest.approx(299.5)  # the mean-teacher warm-up: the uniform mean of the whole path
    assert lag(lambda d, t: ramped_ema_decay(d, t, 0.05)) < 60  # the ramp: about the last 30-step half-life's worth


def test_ema_teacher_follows_student_with_warmup() -> None:
    student = _Scalar(1.0, 0.0)
    teacher = EMATeacher(student, decay=0.99)
    assert not any(p.requires_grad for p in teacher.module.parameters())
    with torch.no_grad():
        student.w.fill_(2.0)
    teacher.update(student, step=0)  # decay 0: an exact copy
    assert teacher.module.w.item() == 2.0
    with torch.no_grad():
        student.w.fill_(4.0)
    teacher.update(student, step=1)  # decay 0.5
    assert teacher.module.w.item() == pytest.approx(3.0)


def test_ema_teacher_rejects_bad_decay() -> None:
    with pytest.raises(UserError, match="ema_decay"):
        EMATeacher(_Scalar(0.0, 0.0), decay=1.0)


# --- ramp-up ---------------------------------------------------------------------------------------------


def test_sigmoid_rampup_values() -> None:
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5.0))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-5.0 * 0.25))
    assert sigmoid_rampup(100, 100) == 1.0
    assert sigmoid_rampup(500, 100) == 1.0
    assert sigmoid_rampup(3, 0) == 1.0


# --- confidence ------------------------------------------------------------------------------------------


def test_confidence_mask_on_hand_made_probabilities() -> None:
    # (1, 2, 2, 2): class-1 probabilities per pixel; class 0 is the complement.
    p1 = torch.tensor([[0.03, 0.40], [0.98, 0.55]])
    probs = torch.stack([1 - p1, p1])[None]
    labels, mask = PseudoLabeler(2, threshold=0.95)(probs)
    assert labels.tolist() == [[[0, 0], [1, 1]]]
    assert mask.tolist() == [[[True, False], [True, False]]]


def test_masked_cross_entropy_averages_over_all_pixels() -> None:
    logits = torch.zeros(1, 2, 2, 2)  # p = 0.5 -> CE = ln 2 per pixel
    labels = torch.tensor([[[0, 1], [1, 0]]])
    mask = torch.tensor([[[True, False], [False, False]]])
    assert masked_cross_entropy(logits, labels, mask).item() == pytest.approx(math.log(2) / 4)
    assert masked_cross_entropy(logits, labels, torch.zeros_like(mask)).item() == 0.0


# --- CutMix ----------------------------------------------------------------------------------------------


def test_cutmix_boxes_are_single_rectangles_within_area_bounds() -> None:
    boxes = cutmix_boxes(64, 32, 40, "cpu", p=1.0, generator=_gen())
    assert boxes.shape == (64, 32, 40) and boxes.dtype == torch.bool
    for box in boxes:
        rows, cols = box.any(dim=1), box.any(dim=0)
        assert torch.equal(box, rows[:, None] & cols[None, :])  # a product of intervals
        r, c = rows.nonzero().flatten(), cols.nonzero().flatten()
        assert r.numel() == r[-1] - r[0] + 1 and c.numel() == c[-1] - c[0] + 1  # contiguous
        assert 0 < box.sum() <= 0.4 * 32 * 40 + 1e-6


def test_cutmix_boxes_probability_and_determinism() -> None:
    assert not cutmix_boxes(16, 8, 8, "cpu", p=0.0, generator=_gen()).any()
    same_seed = [cutmix_boxes(8, 16, 16, "cpu", generator=_gen(3)) for _ in range(2)]
    assert torch.equal(*same_seed)
    share = cutmix_boxes(400, 8, 8, "cpu", p=0.5, generator=_gen(1)).flatten(1).any(dim=1).float().mean()
    assert 0.4 < share < 0.6


def test_cutmix_pastes_exactly_the_box_and_keeps_labels_aligned() -> None:
    images = torch.rand(4, 3, 16, 16, generator=_gen(2))
    labels = (images[:, 0] > 0.5).long()
    confident = images[:, 1] > 0.3
    boxes = cutmix_boxes(4, 16, 16, "cpu", p=1.0, generator=_gen(4))
    mixed = cutmix(images, boxes)
    source = images.roll(1, dims=0)
    inside = boxes[:, None].expand_as(images)
    assert torch.equal(mixed[inside], source[inside])
    assert torch.equal(mixed[~inside], images[~inside])
    assert torch.equal(cutmix(labels, boxes), (mixed[:, 0] > 0.5).long())
    assert torch.equal(cutmix(confident, boxes), mixed[:, 1] > 0.3)
    assert torch.equal(paste(labels, labels, boxes), labels)


# --- strong augmentation ---------------------------------------------------------------------------------


def test_photometric_jitter_range_and_probability() -> None:
    images = torch.rand(8, 1, 16, 16, generator=_gen(5))
    assert torch.equal(photometric_jitter(images, p=0.0, generator=_gen()), images)
    out = photometric_jitter(images, p=1.0, generator=_gen())
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out, images)


def test_photometric_jitter_brightness_only_is_a_scale() -> None:
    images = torch.full((2, 1, 4, 4), 0.4)
    out = photometric_jitter(images, p=1.0, brightness=(1.5, 1.5), contrast=(1.0, 1.0), gamma=(1.0, 1.0))
    assert torch.allclose(out, torch.full_like(images, 0.6))


def test_gaussian_blur_matches_scipy() -> None:
    image = torch.rand(2, 1, 12, 12, generator=_gen(6))
    out = gaussian_blur(image, p=1.0, sigma=(1.0, 1.0), generator=_gen())
    expected = np.stack([gaussian_filter(im[0].numpy(), 1.0, mode="nearest", truncate=3.0) for im in image])
    assert np.allclose(out[:, 0].numpy(), expected, atol=1e-5)
    assert torch.equal(gaussian_blur(image, p=0.0, generator=_gen()), image)


def test_gaussian_blur_stays_float32_under_autocast() -> None:
    image = torch.rand(2, 1, 12, 12, generator=_gen(8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gaussian_blur(image, p=1.0, sigma=(1.0, 1.0), generator=_gen())
    assert out.dtype == torch.float32
    assert torch.equal(out, gaussian_blur(image, p=1.0, sigma=(1.0, 1.0), generator=_gen()))


def test_strong_augment_keeps_shape_and_each_samples_range() -> None:
    images = torch.rand(4, 2, 20, 24, generator=_gen(7))
    out = strong_augment(images, generator=_gen())
    assert out.shape == images.shape and torch.isfinite(out).all()
    assert out.min() >= -1e-6 and out.max() <= 1 + 1e-6


def test_strong_augment_works_on_z_scored_images() -> None:
    # the pipeline delivers z-scored images: the strong view must keep their scale, not clamp them to [0, 1]
    images = torch.randn(6, 1, 16, 16, generator=_gen(9))
    out = strong_augment(images, generator=_gen())
    low, high = images.amin(dim=(1, 2, 3)), images.amax(dim=(1, 2, 3))
    assert (out.amin(dim=(1, 2, 3)) >= low - 1e-5).all() and (out.amax(dim=(1, 2, 3)) <= high + 1e-5).all()
    assert (out < 0).float().mean() > 0.2  # below-mean pixels survive
    assert torch.corrcoef(torch.stack([out.flatten(), images.flatten()]))[0, 1] > 0.5  # still the same images
