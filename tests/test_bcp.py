"""BCP: the copy-paste box, what is pasted where, labels following their pixels, the two stages."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import ssl_seg.methods.bcp as bcp
from ssl_seg.config import MethodConfig
from ssl_seg.methods.losses import build_loss
from ssl_seg.methods import build_method
from ssl_seg.methods.bcp import bcp_box, copy_paste, lcc_pseudo_labels


def test_box_is_two_thirds_of_each_side_and_shared_by_the_batch():
    torch.manual_seed(0)
    for _ in range(20):
        box = bcp_box(3, 6, 9, "cpu")
        assert box.shape == (3, 6, 9) and torch.equal(box[0], box[1]) and torch.equal(box[0], box[2])
        rows, cols = box[0].any(1).nonzero().flatten(), box[0].any(0).nonzero().flatten()
        assert len(rows) == 4 and len(cols) == 6  # int(6 * 2/3), int(9 * 2/3), contiguous
        assert rows.diff().eq(1).all() and cols.diff().eq(1).all() and box[0].sum() == 24


def test_labels_follow_their_pixels():
    """Pixel value = 10 * class + 1 for image a, + 2 for image b: after mixing, every pixel's label is its class."""
    la = torch.tensor([[[0, 1, 1], [2, 2, 0]]])  # (1, 2, 3)
    lb = torch.tensor([[[1, 1, 1], [0, 0, 2]]])
    ia, ib = (10 * la + 1).float()[:, None], (10 * lb + 2).float()[:, None]  # (1, 1, 2, 3)
    box = torch.tensor([[[False, True, True], [False, True, True]]])
    mixed_image, mixed_label = copy_paste(ia, ib, box), copy_paste(la, lb, box)
    assert torch.equal(mixed_image[0, 0], torch.tensor([[1.0, 12, 12], [21, 2, 22]]))  # b inside the box, a outside
    assert torch.equal(mixed_label, (mixed_image[:, 0] // 10).long())


def test_pseudo_labels_keep_the_largest_component_per_class():
    logits = torch.zeros(1, 3, 4, 5)
    logits[0, 1, 0, 0] = logits[0, 1, 0, 3:] = 5.0  # class 1: a 1-pixel and a 2-pixel piece
    logits[0, 2, 3, 0] = 5.0  # class 2: one pixel
    expected = torch.zeros(1, 4, 5, dtype=torch.long)
    expected[0, 0, 3:] = 1
    expected[0, 3, 0] = 2
    assert torch.equal(lcc_pseudo_labels(logits), expected)


class Sign(nn.Module):
    """Logits (-x, x): class 1 where the image is positive; records what it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.detach().clone())
        return torch.cat([-x, x], 1) * self.scale


def _method(pretrain_fraction: float = 0.5, total: int = 10):
    cfg = MethodConfig(name="bcp", options={"pretrain_fraction": pretrain_fraction}, rampup_fraction=0.0,
                       ema_decay=0.9)
    calls: list[tuple[Tensor, Tensor]] = []

    def loss(logits: Tensor, target: Tensor, roi: Tensor | None) -> Tensor:
        calls.append((target.clone(), roi.clone()))
        return build_loss("ce")(logits, target, roi)

    return build_method("bcp", Sign(), cfg, 2, total, loss), calls


def test_self_training_pastes_labeled_into_unlabeled_and_back(monkeypatch):
    box = torch.zeros(2, 4, 4, dtype=torch.bool)
    box[:, 1:3, 1:3] = True
    monkeypatch.setattr(bcp, "bcp_box", lambda *a, **k: box)
    method, calls = _method()
    x = torch.full((2, 1, 4, 4), -1.0)
    x[1] = 2.0  # labeled image 1 all positive
    y = (x[:, 0] > 0).long()
    roi = torch.ones(2, 4, 4, dtype=torch.bool)
    roi[0, 0, 0] = False
    u = torch.full((2, 1, 4, 4), -3.0)
    u[0, :, 3, 3] = 3.0  # unlabeled image 0: one positive corner pixel -> pseudo-label 1 there
    method.teacher.module.seen.clear()
    losses = method.training_step({"labeled": {"image": x, "mask": y, "roi": roi}, "unlabeled": {"image": u}}, 5)
    assert set(losses) == {"in", "out", "stat/u_weight"} and losses["stat/u_weight"].item() == 0.5
    assert len(method.teacher.module.seen) == 1 and torch.equal(method.teacher.module.seen[0], u)
    in_x, out_x = method.student.seen[-2:]
    assert torch.equal(in_x, torch.where(box[:, None], x, u))  # inward: labeled box in unlabeled image
    assert torch.equal(out_x, torch.where(box[:, None], u.roll(1, 0), x.roll(1, 0)))  # outward: the reverse
    pseudo = (u[:, 0] > 0).long()
    (t_in_box, r_in_box), (t_in_out, r_in_out), (t_out_box, r_out_box), (t_out_out, r_out_out) = calls
    assert torch.equal(t_in_box, torch.where(box, y, pseudo))  # labels follow pixels
    assert torch.equal(t_out_box, torch.where(box, pseudo.roll(1, 0), y.roll(1, 0)))
    assert torch.equal(r_in_box, box & torch.where(box, roi, True))  # labeled roi inside, everything outside
    assert torch.equal(r_in_out, ~box)
    assert torch.equal(r_out_out, ~box & roi.roll(1, 0)) and torch.equal(r_out_box, box)


def test_pretraining_mixes_labeled_images_then_the_teacher_starts_from_the_student():
    method, calls = _method(pretrain_fraction=0.5, total=4)  # steps 0, 1 pre-training
    x = torch.randn(2, 1, 6, 6)
    y = (x[:, 0] > 0).long()
    batch = {"labeled": {"image": x, "mask": y, "roi": torch.ones(2, 6, 6, dtype=torch.bool)},
             "unlabeled": {"image": torch.randn(2, 1, 6, 6)}}
    losses = method.training_step(batch, 1)
    assert set(losses) == {"sup"}
    (target, _), = calls
    seen = method.student.seen[-1]
    assert torch.equal(target, (seen[:, 0] > 0).long())  # mixed labels match the mixed pixels
    assert not torch.equal(seen, x)  # something was pasted
    with torch.no_grad():
        method.student.scale.fill_(3.0)
    method.after_step(1)  # end of pre-training: exact copy
    assert method.teacher.module.scale.item() == 3.0
    with torch.no_grad():
        method.student.scale.fill_(4.0)
    method.after_step(2)  # then EMA; at step 2 the warm-up decay min(0.9, 1 - 1/3) = 2/3: 2/3 * 3 + 1/3 * 4
    assert method.teacher.module.scale.item() == pytest.approx(3 + 1 / 3)
    assert list(method.eval_models()) == ["student"]
