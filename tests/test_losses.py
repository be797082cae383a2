"""Losses: hand-computed values, roi masking, empty roi, optimisation and the registry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssl_seg.errors import UserError
from ssl_seg.methods.losses import build_loss, cross_entropy, soft_dice_loss

NAMES = ["ce", "dice", "dice_ce"]


def _target(seed: int = 0, shape: tuple[int, int, int] = (2, 8, 8), k: int = 3) -> torch.Tensor:
    """Random hard labels (B, H, W) in 0..k-1."""
    return torch.randint(0, k, shape, generator=torch.Generator().manual_seed(seed))


def _logits(seed: int = 1, shape: tuple[int, int, int, int] = (2, 3, 8, 8)) -> torch.Tensor:
    """Random logits (B, K, H, W)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_ce_equals_torch_without_roi() -> None:
    logits, target = _logits(), _target()
    assert torch.allclose(cross_entropy(logits, target), F.cross_entropy(logits, target))


def test_ce_with_roi_is_mean_inside() -> None:
    logits, target = _logits(), _target()
    roi = _target(5, k=2).bool()
    expected = F.cross_entropy(logits, target, reduction="none")[roi].mean()
    assert torch.allclose(cross_entropy(logits, target, roi), expected)


def test_dice_hand_computed() -> None:
    # Zero logits -> p = 0.5 everywhere on 4 pixels with one foreground pixel.
    # Foreground: I = 0.5, sum p = 2, sum g = 1 -> Dice = 1/3.  Background: I = 1.5, 2 + 3 -> Dice = 3/5.
    logits = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[1, 0], [0, 0]]])
    assert soft_dice_loss(logits, target).item() == pytest.approx(1 - 1 / 3, abs=1e-5)
    both = soft_dice_loss(logits, target, include_background=True).item()
    assert both == pytest.approx(1 - (1 / 3 + 3 / 5) / 2, abs=1e-5)


def test_dice_is_pooled_over_the_batch() -> None:
    logits, target = _logits(), _target()
    side_by_side = soft_dice_loss(torch.cat(list(logits), -1)[None], torch.cat(list(target), -1)[None])
    assert torch.allclose(soft_dice_loss(logits, target), side_by_side)
    per_sample = torch.stack([soft_dice_loss(logits[i : i + 1], target[i : i + 1]) for i in range(2)]).mean()
    assert not torch.allclose(soft_dice_loss(logits, target), per_sample)


@pytest.mark.parametrize("name", NAMES)
def test_perfect_logits_near_zero(name: str) -> None:
    target = _target()
    logits = 30.0 * F.one_hot(target, 3).permute(0, 3, 1, 2).float()
    assert build_loss(name)(logits, target, None).item() < 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_loss_decreases_under_gradient_steps(name: str) -> None:
    target = _target()
    logits = torch.zeros(2, 3, 8, 8, requires_grad=True)
    loss_fn = build_loss(name)
    optimizer = torch.optim.Adam([logits], lr=0.1)
    first = loss_fn(logits, target, None).item()
    for _ in range(20):
        optimizer.zero_grad()
        loss = loss_fn(logits, target, None)
        loss.backward()
        optimizer.step()
    assert loss_fn(logits, target, None).item() < 0.5 * first


@pytest.mark.parametrize("name", NAMES)
def test_roi_masks_outside(name: str) -> None:
    logits, target = _logits(), _target()
    roi = torch.zeros(2, 8, 8, dtype=torch.bool)
    roi[:, 2:6, 1:7] = True
    changed = logits.clone()
    changed[~roi.unsqueeze(1).expand_as(logits)] = 50.0 * torch.randn(int((~roi).sum()) * 3)
    changed_target = torch.where(roi, target, (target + 1) % 3)
    loss_fn = build_loss(name)
    assert torch.allclose(loss_fn(logits, target, roi), loss_fn(changed, changed_target, roi))
    assert not torch.allclose(loss_fn(logits, target, None), loss_fn(changed, target, None))


@pytest.mark.parametrize("name", NAMES)
def test_empty_roi_gives_zero_and_finite_grad(name: str) -> None:
    logits = _logits().requires_grad_()
    loss = build_loss(name)(logits, _target(), torch.zeros(2, 8, 8, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_low_precision_logits_give_float32(name: str) -> None:
    logits, target = _logits(), _target()
    low = build_loss(name)(logits.bfloat16(), target, None)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(build_loss(name)(logits, target, None).item(), rel=2e-2)


def test_unknown_loss_lists_names() -> None:
    with pytest.raises(UserError, match="ce, dice, dice_ce"):
        build_loss("focal")
