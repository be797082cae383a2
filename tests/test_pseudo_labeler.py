"""Pseudo-label rules: FreeMatch's self-adaptive threshold and distribution alignment on hand-made probabilities,
and their statistics carried through checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch

from ssl_seg.config import MethodConfig, RunConfig
from ssl_seg.errors import UserError
from ssl_seg.methods import build_method
from ssl_seg.methods.losses import build_loss
from ssl_seg.methods.pseudo_labeler import PseudoLabeler
from ssl_seg.models import build_model


def _probs(p1: list[float]) -> torch.Tensor:
    """(1, 2, 1, N): class-1 probabilities per pixel, class 0 the complement."""
    p = torch.tensor(p1)[None]
    return torch.stack([1 - p, p])[None]


def test_freematch_threshold_by_hand() -> None:
    labeler = PseudoLabeler(2, threshold=0.95, rule="freematch", momentum=0.5)
    labels, confident = labeler(_probs([0.01, 0.02, 0.40, 0.60]))
    # max probs 0.99 0.98 0.60 0.60, mean 0.7925: tau = 0.5 * 1/2 + 0.5 * 0.7925 = 0.64625
    # class means (0.7425, 0.2575): p = 0.5 * 1/2 + 0.5 * them = (0.62125, 0.37875)
    # class thresholds 0.64625 * (1, 0.37875 / 0.62125) = (0.64625, 0.39399)
    assert labeler.class_thresholds().tolist() == pytest.approx([0.64625, 0.64625 * 0.37875 / 0.62125], abs=1e-6)
    assert labels.tolist() == [[[0, 0, 0, 1]]]
    # the same 0.60 is below class 0's threshold and above the rarer class 1's
    assert confident.tolist() == [[[True, True, False, True]]]
    assert PseudoLabeler(2, threshold=0.95)(_probs([0.01, 0.02, 0.40, 0.60]))[1].tolist() == [[[True, True, False,
                                                                                                 False]]]
    labeler(_probs([0.01, 0.02, 0.40, 0.60]))  # a second step moves tau half-way again: 0.5 * 0.64625 + 0.5 * 0.7925
    assert float(labeler.global_tau) == pytest.approx(0.719375, abs=1e-6)


def test_distribution_alignment_by_hand() -> None:
    labeler = PseudoLabeler(2, threshold=0.7, align=True, momentum=0.9)
    mask = torch.tensor([[[0, 0, 0, 1, 1]]])
    roi = torch.tensor([[[True, True, True, True, False]]])  # the last pixel is outside the labeled region
    labels, confident = labeler(_probs([0.5, 0.5]), {"mask": mask, "roi": roi})
    # target (3/4, 1/4) over predicted (1/2, 1/2): probabilities (0.75, 0.25) per pixel after renormalising
    assert labeler.target.tolist() == pytest.approx([0.75, 0.25])
    assert labels.tolist() == [[[0, 0]]] and confident.tolist() == [[[True, True]]]
    # the running means start at the first batch and then move with the momentum
    labeler(_probs([0.9, 0.9]), {"mask": mask, "roi": roi})
    assert labeler.predicted.tolist() == pytest.approx([0.9 * 0.5 + 0.1 * 0.1, 0.9 * 0.5 + 0.1 * 0.9])


def test_per_class_confident_share() -> None:
    labeler = PseudoLabeler(3, threshold=0.9)
    labels = torch.tensor([[0, 0, 1, 1]])
    confident = torch.tensor([[True, False, True, True]])
    stats = labeler.stats(labels, confident)
    assert stats["stat/confident_c0"].item() == 0.5 and stats["stat/confident_c1"].item() == 1.0
    assert stats["stat/confident_c2"].item() == 0.0 and stats["stat/mask_ratio"].item() == 0.75


@pytest.mark.parametrize("name", ["unimatch", "pseudo-label"])
def test_adaptive_rules_state_round_trips_through_the_method(name: str) -> None:
    cfg = MethodConfig(name=name, threshold_rule="freematch", distribution_alignment=True, rampup_fraction=0.0)
    torch.manual_seed(0)
    method = build_method(name, build_model("unet", 1, 2, base_channels=4), cfg, 2, 10, build_loss("dice_ce"))
    image = torch.rand(2, 1, 32, 32)
    batch = {"labeled": {"image": image, "mask": (image[:, 0] > 0.5).long(), "roi": torch.ones(2, 32, 32, dtype=bool)},
             "unlabeled": {"image": torch.rand(2, 1, 32, 32)}}
    method.training_step(batch, 0)
    state = copy.deepcopy(method.state_dict())
    assert float(state["pseudo_labels"]["global_tau"]) > 0.5  # moved from 1/2 towards the batch's mean confidence
    other = build_method(name, build_model("unet", 1, 2, base_channels=4), cfg, 2, 10, build_loss("dice_ce"))
    other.load_state_dict(state)
    assert all(torch.equal(other.labeler.state_dict()[k], v) for k, v in state["pseudo_labels"].items())
    with pytest.raises(UserError, match="resume with the method"):
        other.load_state_dict({})


def test_bad_rule_and_momentum_are_one_line() -> None:
    cfg = RunConfig()
    cfg.method.threshold_rule = "flexmatch"
    with pytest.raises(UserError, match="--threshold-rule flexmatch: use fixed or freematch"):
        cfg.validate()
    cfg = RunConfig()
    cfg.method.threshold_momentum = 1.0
    with pytest.raises(UserError, match="--threshold-momentum 1.0"):
        cfg.validate()
