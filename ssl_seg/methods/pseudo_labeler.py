"""Hard pseudo-labels and their confidence mask from weak-view probabilities, as pseudo-label and UniMatch use them.

Three rules, composable:
- a fixed threshold: a pixel is confident when its max probability >= `threshold` (FixMatch; UniMatch's 0.95);
- FreeMatch's self-adaptive threshold (Wang et al., ICLR 2023, "SAT"): a global threshold tau, the EMA of the mean
  max probability of unlabeled pixels, and class-wise ones tau * p(c) / max_c p(c), with p the EMA of the mean
  class probabilities; both start at 1/K and move with `momentum` (theirs 0.999) before each step's masking, as in
  the authors' USB code (`FreeMatchThresholingHook`), with pixels in the place of images;
- distribution alignment (ReMixMatch, Berthelot et al., ICLR 2020): the probabilities are multiplied by the class
  frequencies of the labeled pixels over the EMA of the mean predicted probabilities, then renormalised, before
  either threshold. Both running means start at the first batch's value (no 1/K prior to forget at 0.999).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..config import MethodConfig
from ..data.batch import LabeledPart
from ..errors import UserError

RULES = ("fixed", "freematch")


class PseudoLabeler:
    """probs (B, K, *S) -> (labels (B, *S) long, confident (B, *S) bool), updating its running class statistics."""

    def __init__(self, num_classes: int, threshold: float, rule: str = "fixed", momentum: float = 0.999,
                 align: bool = False) -> None:
        if rule not in RULES:
            raise UserError(f"--threshold-rule {rule}: use {' or '.join(RULES)}")
        self.num_classes, self.threshold, self.rule, self.momentum, self.align = (
            num_classes, threshold, rule, momentum, align)
        k = num_classes
        self.global_tau = torch.tensor(1.0 / k)  # FreeMatch: EMA of the mean max probability
        self.class_probs = torch.full((k,), 1.0 / k)  # FreeMatch: EMA of the mean class probabilities
        self.predicted = torch.zeros(k)  # alignment: EMA of the mean predicted probabilities (unlabeled)
        self.target = torch.zeros(k)  # alignment: EMA of the labeled pixels' class frequencies
        self.started = torch.tensor(False)  # alignment: whether its running means hold a first batch

    @property
    def stateful(self) -> bool:
        """Whether the rule keeps running statistics (checkpointed with the method)."""
        return self.rule != "fixed" or self.align

    def __call__(self, probs: Tensor, labeled: LabeledPart | None = None) -> tuple[Tensor, Tensor]:
        """Labels and confidence mask of probs (B, K, *S); `labeled` (its "mask", "roi") feeds the alignment."""
        probs = probs.float()
        if self.align:
            if labeled is None:
                raise ValueError("distribution alignment needs the labeled batch")
            probs = self._aligned(probs, labeled)
        confidence, labels = probs.max(dim=1)
        if self.rule == "fixed":
            return labels, confidence >= self.threshold
        m = self.momentum
        self.global_tau = self.global_tau.to(probs.device) * m + (1 - m) * confidence.mean()
        self.class_probs = self.class_probs.to(probs.device) * m + (1 - m) * _class_means(probs)
        tau = self.global_tau * self.class_probs / self.class_probs.max()  # (K,)
        return labels, confidence >= tau[labels]

    def _aligned(self, probs: Tensor, labeled: LabeledPart) -> Tensor:
        """probs * target / predicted, renormalised over classes, after the running means take this batch."""
        mask, roi = labeled["mask"], labeled.get("roi")
        counts = torch.bincount(mask[roi] if roi is not None else mask.reshape(-1),
                                minlength=self.num_classes)[: self.num_classes].float()
        target = counts / counts.sum().clamp(min=1)
        predicted = _class_means(probs)
        m = 0.0 if not bool(self.started) else self.momentum
        self.target = self.target.to(probs.device) * m + (1 - m) * target
        self.predicted = self.predicted.to(probs.device) * m + (1 - m) * predicted
        self.started = torch.tensor(True)
        shape = (1, -1) + (1,) * (probs.ndim - 2)
        aligned = probs * (self.target / self.predicted.clamp(min=1e-6)).view(shape)
        return aligned / aligned.sum(dim=1, keepdim=True).clamp(min=1e-12)

    def class_thresholds(self) -> Tensor:
        """The threshold of each class now (K,): fixed, or FreeMatch's tau * p(c) / max p."""
        if self.rule == "fixed":
            return torch.full((self.num_classes,), self.threshold)
        return self.global_tau * self.class_probs / self.class_probs.max()

    def stats(self, labels: Tensor, confident: Tensor) -> dict[str, Tensor]:
        """Per class, the share of the pixels pseudo-labelled with it that are confident ('stat/confident_c{k}'; 0
        where no pixel has it), and the share of all confident pixels."""
        out = {"stat/mask_ratio": confident.float().mean()}
        for k in range(self.num_classes):
            is_k = labels == k
            out[f"stat/confident_c{k}"] = (confident & is_k).sum().float() / is_k.sum().clamp(min=1)
        return out

    def state_dict(self) -> dict[str, Tensor]:
        """The running statistics."""
        return {"global_tau": self.global_tau, "class_probs": self.class_probs, "predicted": self.predicted,
                "target": self.target, "started": self.started}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved."""
        for key in ("global_tau", "class_probs", "predicted", "target", "started"):
            setattr(self, key, state[key].clone())


def build_labeler(cfg: MethodConfig, num_classes: int) -> PseudoLabeler:
    """The pseudo-labeler the method config asks for."""
    return PseudoLabeler(num_classes, cfg.threshold, cfg.threshold_rule, cfg.threshold_momentum,
                         cfg.distribution_alignment)


def _class_means(probs: Tensor) -> Tensor:
    """Mean probability of each class over the batch's pixels (K,)."""
    return probs.transpose(0, 1).reshape(probs.shape[1], -1).mean(dim=1)
