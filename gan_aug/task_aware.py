"""Task-aware generator updates, after GenSeg (Zhang et al., Nature Biomedical Engineering 2025, arXiv 2408.17421).

A small segmenter S trains beside the GAN, on real labeled pairs and on the generator's pairs. The generator is also
updated to lower S's loss on *real* labeled pairs held out from S's own batch, after S has taken one SGD step on the
generator's pairs (a one-step unrolled look-ahead):

    S' = S - eta * grad_S L(S; G(m_a), m_a)          (m_a: the masks of half a of the labeled batch)
    L_task(G) = L(S'; x_b, m_b)                       (x_b, m_b: the real pairs of half b)

L_task depends on G only through S', so its gradient is the second-order term -eta (d^2 L / dG dS) grad_S' L. It is
computed exactly by differentiating through S's gradient (`torch.autograd.grad(create_graph=True)`, the look-ahead
parameters passed with `torch.func.functional_call`), so the one approximation is GenSeg's: one unrolled step instead
of S trained to convergence. (DARTS's first-order shortcut would drop this term and give G no gradient at all.)

S's own update then uses half a (real) and the generator's pairs of the whole batch (detached), by SGD with the
look-ahead's step size. Only labeled training pairs are used: never the validation split that chooses checkpoints.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ssl_seg.models.registry import build_model


def segmentation_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of logits (B, K, H, W) against class indices (B, H, W), in float32 at least."""
    return F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), labels)


def lookahead_loss(segmenter: nn.Module, train_images: Tensor, train_labels: Tensor, held_images: Tensor,
                   held_labels: Tensor, step_size: float) -> Tensor:
    """L(S'; held) with S' = S - step_size * grad_S L(S; train), differentiable w.r.t. `train_images` (hence the
    generator that made them). S's parameters and buffers are left as they are (BatchNorm statistics go to copies)."""
    params = dict(segmenter.named_parameters())
    buffers = {k: v.clone() for k, v in segmenter.named_buffers()}
    inner = segmentation_loss(functional_call(segmenter, (params, buffers), (train_images,)), train_labels)
    grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
    ahead = {k: p - step_size * g for (k, p), g in zip(params.items(), grads)}
    return segmentation_loss(functional_call(segmenter, (ahead, buffers), (held_images,)), held_labels)


def to_segmenter_input(images: Tensor) -> Tensor:
    """Generator range [-1, 1] -> the [0, 1] range segmenters train on."""
    return (images.float() + 1) / 2


class TaskAware:
    """The segmenter S, its SGD optimiser, and the two terms it adds to a pix2pix step."""

    def __init__(self, in_channels: int, num_classes: int, device: torch.device, weight: float, step_size: float,
                 base_channels: int = 8):
        self.segmenter = build_model("unet", in_channels, num_classes, base_channels=base_channels).to(device)
        self.optimizer = torch.optim.SGD(self.segmenter.parameters(), lr=step_size)
        self.weight, self.step_size = weight, step_size

    @staticmethod
    def halves(n: int) -> tuple[slice, slice]:
        """Half a (S's training pairs and the look-ahead's generated ones) and half b (held-out real pairs)."""
        return slice(0, (n + 1) // 2), slice((n + 1) // 2, n)

    def generator_loss(self, fake: Tensor, real: Tensor, labels: Tensor) -> Tensor:
        """`weight` x the look-ahead loss on half b's real pairs after S's step on half a's generated pairs (0 for a
        batch of one pair: there is nothing to hold out)."""
        a, b = self.halves(fake.shape[0])
        if b.start >= fake.shape[0]:
            return fake.new_zeros(())
        loss = lookahead_loss(self.segmenter, to_segmenter_input(fake[a]), labels[a],
                              to_segmenter_input(real[b]), labels[b], self.step_size)
        return self.weight * loss

    def segmenter_step(self, fake: Tensor, real: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """One SGD step of S on half a's real pairs and every generated pair (detached); returns its loss."""
        a, _ = self.halves(real.shape[0])
        images = torch.cat([to_segmenter_input(real[a]), to_segmenter_input(fake.detach())])
        targets = torch.cat([labels[a], labels])
        self.optimizer.zero_grad(set_to_none=True)
        loss = segmentation_loss(self.segmenter(images), targets)
        loss.backward()
        self.optimizer.step()
        return {"S": loss.detach()}

    def state_dict(self) -> dict[str, Any]:
        """The segmenter and its optimiser."""
        return {"S": self.segmenter.state_dict(), "opt_S": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved."""
        self.segmenter.load_state_dict(state["S"])
        self.optimizer.load_state_dict(state["opt_S"])
