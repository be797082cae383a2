"""BCP, bidirectional copy-paste (Bai et al., CVPR 2023), after the authors' 2D ACDC code (DeepMed-Lab-ECNU/BCP).

Two stages in one run:
1. Pre-training (the first `pretrain_steps`): labeled copy-paste. A box of `box_fraction` of each side is
   cut from labeled image b and pasted into labeled image a; the label map is mixed with the same box.
2. Self-training: the teacher starts as an exact copy of the pre-trained student, then follows it by EMA.
   The teacher's hard pseudo-labels on the unlabeled images (largest connected component per class, as the
   authors' `get_ACDC_masks`) stand in for their labels. Each step mixes in both directions with one box:
   - inward: unlabeled image a with a labeled box from labeled image a,
   - outward: labeled image b with an unlabeled box from unlabeled image b,
   and trains the student on the mixed label maps. Pixels that come from unlabeled images weigh
   `unlabeled_weight` (theirs 0.5) times `sigmoid_rampup(step - pretrain_steps, rampup_length)`; labeled
   pixels weigh 1. The loss is the configured one, computed inside and outside the box separately
   (their `mix_loss`), and the two directions are averaged.

Image b of a batch is image a of the batch rolled by one. The two mixed batches go through the student in
separate passes (`forward_apart`). Only the student is evaluated (the authors test the student).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import MethodConfig
from ..data.batch import Batch
from ..errors import UserError
from ..flags import opt
from .losses import LossFn
from ..evaluation.postprocess import largest_component
from .base import MethodBase, check_state_keys, forward_apart, own_options
from .cutmix import paste
from .ema import EMATeacher
from .rampup import sigmoid_rampup


def bcp_box(batch: int, height: int, width: int, device: torch.device | str, fraction: float = 2 / 3,
            depth: int | None = None) -> Tensor:
    """(B, H, W) bool, or (B, D, H, W) with `depth`: one random box of int(fraction * side) per side, the same for
    the whole batch (theirs; their 3D code cuts 2/3 of every axis too)."""
    box_h, box_w = max(1, int(height * fraction)), max(1, int(width * fraction))
    top = int(torch.randint(0, height - box_h + 1, (1,)))
    left = int(torch.randint(0, width - box_w + 1, (1,)))
    if depth is None:
        box = torch.zeros(height, width, dtype=torch.bool, device=device)
        box[top:top + box_h, left:left + box_w] = True
        return box.expand(batch, height, width)
    box_d = max(1, int(depth * fraction))
    front = int(torch.randint(0, depth - box_d + 1, (1,)))
    box = torch.zeros(depth, height, width, dtype=torch.bool, device=device)
    box[front:front + box_d, top:top + box_h, left:left + box_w] = True
    return box.expand(batch, depth, height, width)


def copy_paste(base: Tensor, pasted: Tensor, box: Tensor) -> Tensor:
    """`base` outside `box` (B, *S) and `pasted` inside it; images (B, C, *S) or label maps (B, *S)."""
    return paste(base, pasted, box)


def lcc_pseudo_labels(logits: Tensor) -> Tensor:
    """Hard labels (B, *S) from logits (B, K, *S), each foreground class cut to its largest component (2D or 3D)."""
    hard = logits.argmax(1).cpu().numpy()
    classes = range(1, logits.shape[1])
    kept = np.stack([largest_component(h, classes) for h in hard])
    return torch.from_numpy(kept).to(logits.device, torch.long)


@dataclass
class BCPOptions:
    """BCP's own options."""

    pretrain_fraction: float = opt(0.25, "share of iterations of labeled copy-paste pre-training (theirs 10k of 40k)",
                                   check=(lambda v: 0 <= v < 1, "in [0, 1), e.g. 0.25"))
    mixed_unlabeled_weight: float = opt(0.5, "loss weight of pixels from unlabeled images",
                                        check=(lambda v: v >= 0, ">= 0, e.g. 0.5"))


class BidirectionalCopyPaste(MethodBase):
    """Labeled copy-paste pre-training, then mean-teacher copy-paste between labeled and unlabeled images."""

    relative_cost = 1.5
    options_class = BCPOptions

    def __init__(self, model: nn.Module, loss: LossFn, ema_decay: float, pretrain_steps: int,
                 unlabeled_weight: float, rampup_length: float, box_fraction: float = 2 / 3) -> None:
        super().__init__(loss)
        if not 0 < box_fraction < 1:
            raise UserError(f"BCP box fraction {box_fraction}: must be in (0, 1)")
        self.student = model
        self.teacher = EMATeacher(model, ema_decay)
        self.models = {"student": model}
        self.pretrain_steps = pretrain_steps
        self.unlabeled_weight = unlabeled_weight
        self.rampup_length = rampup_length
        self.box_fraction = box_fraction

    def region_loss(self, logits: Tensor, target: Tensor, roi: Tensor, box: Tensor,
                    inside_weight: float, outside_weight: float) -> Tensor:
        """The configured loss inside and outside `box`, weighted (the authors' mix_loss)."""
        return (inside_weight * self.loss(logits, target, roi & box)
                + outside_weight * self.loss(logits, target, roi & ~box))

    def training_step(self, batch: Batch, step: int) -> dict[str, Tensor]:
        """Pre-training: {"sup"} on labeled copy-paste; then {"in", "out", "stat/u_weight"} (averaged directions)."""
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        x, y, roi = labeled["image"], labeled["mask"], labeled["roi"]
        box = bcp_box(x.shape[0], x.shape[-2], x.shape[-1], x.device, self.box_fraction,
                      depth=x.shape[2] if x.ndim == 5 else None)
        if step < self.pretrain_steps or unlabeled is None:
            mixed_x = copy_paste(x, x.roll(1, 0), box)
            mixed_y, mixed_roi = copy_paste(y, y.roll(1, 0), box), copy_paste(roi, roi.roll(1, 0), box)
            return {"sup": self.loss(self.student(mixed_x), mixed_y, mixed_roi)}
        u = unlabeled["image"]
        n = min(x.shape[0], u.shape[0])
        x, y, roi, u, box = x[:n], y[:n], roi[:n], u[:n], box[:n]
        pseudo = lcc_pseudo_labels(self.teacher.predict(u))
        ones = torch.ones_like(roi)
        # inward: unlabeled a outside, labeled a inside the box; outward: labeled b outside, unlabeled b inside
        in_x, in_y = copy_paste(u, x, box), copy_paste(pseudo, y, box)
        in_roi = copy_paste(ones, roi, box)
        xb, yb, roib, ub, pb = x.roll(1, 0), y.roll(1, 0), roi.roll(1, 0), u.roll(1, 0), pseudo.roll(1, 0)
        out_x, out_y = copy_paste(xb, ub, box), copy_paste(yb, pb, box)
        out_roi = copy_paste(roib, ones, box)
        in_logits, out_logits = forward_apart(self.student, in_x, out_x)
        w = self.unlabeled_weight * sigmoid_rampup(step - self.pretrain_steps, self.rampup_length)
        return {
            "in": 0.5 * self.region_loss(in_logits, in_y, in_roi, box, inside_weight=1.0, outside_weight=w),
            "out": 0.5 * self.region_loss(out_logits, out_y, out_roi, box, inside_weight=w, outside_weight=1.0),
            "stat/u_weight": torch.tensor(w),
        }

    def after_step(self, step: int) -> None:
        """End of pre-training: the teacher becomes the student; afterwards it follows it by EMA."""
        if step + 1 == self.pretrain_steps:
            self.teacher.module.load_state_dict(self.models["student"].state_dict())
        elif step + 1 > self.pretrain_steps:
            self.teacher.update(self.models["student"], step)

    def eval_models(self) -> dict[str, nn.Module]:
        """The student only: the authors test it, and the teacher is an untrained copy during pre-training."""
        return {"student": self.models["student"]}

    def state_dict(self) -> dict[str, Any]:
        """The teacher's weights and buffers."""
        return {"teacher": self.teacher.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the teacher saved by `state_dict`."""
        check_state_keys(state, {"teacher"}, type(self).__name__)
        self.teacher.load_state_dict(state["teacher"])


def build(model: nn.Module, cfg: MethodConfig, num_classes: int, total: int, loss: LossFn) -> BidirectionalCopyPaste:
    """BCP: pre-training on pretrain_fraction of the steps, then copy-paste self-training with a ramp-up."""
    options = own_options(cfg, BCPOptions)
    pretrain = int(round(options.pretrain_fraction * total))
    return BidirectionalCopyPaste(model, loss, ema_decay=cfg.ema_decay, pretrain_steps=pretrain,
                                  unlabeled_weight=options.mixed_unlabeled_weight,
                                  rampup_length=cfg.rampup_fraction * (total - pretrain))
