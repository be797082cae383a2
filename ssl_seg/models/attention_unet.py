"""Attention U-Net (Oktay et al. 2018): U-Net whose skips pass through additive attention gates."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import level_widths, upsample_to
from .unet import UNet


class AttentionGate(nn.Module):
    """Additive gate: alpha = sigmoid(psi(relu(theta(x) + phi(g)))) in (0, 1) per pixel rescales the skip x."""

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.theta = nn.Conv2d(skip_channels, inter_channels, 2, stride=2, bias=False)  # x down to g's grid
        self.phi = nn.Conv2d(gate_channels, inter_channels, 1)
        self.psi = nn.Conv2d(inter_channels, 1, 1)
        self.project = nn.Sequential(
            nn.Conv2d(skip_channels, skip_channels, 1, bias=False), nn.BatchNorm2d(skip_channels)
        )

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        """Skip x (B, Cx, H, W) gated by the coarser g (B, Cg, H / 2, W / 2) -> (B, Cx, H, W)."""
        q = F.relu(self.theta(x) + self.phi(g))  # (B, Ci, H / 2, W / 2)
        alpha = upsample_to(torch.sigmoid(self.psi(q)), x)  # (B, 1, H, W)
        return self.project(x * alpha)


class AttentionUNet(UNet):
    """U-Net whose skip at level i is gated by the decoder feature of level i + 1 before concatenation.

    >>> import torch
    >>> from ssl_seg.models import build_model
    >>> m = build_model("attention_unet", 1, 4, base_channels=8)
    >>> m(torch.zeros(1, 1, 64, 64)).shape
    torch.Size([1, 4, 64, 64])
    """

    def __init__(
        self, in_channels: int, num_classes: int, base_channels: int = 32, depth: int = 4, dropout: float = 0.0
    ) -> None:
        super().__init__(in_channels, num_classes, base_channels, depth, dropout)
        widths = level_widths(base_channels, depth)
        self.gates = nn.ModuleList(AttentionGate(widths[i], widths[i + 1], max(1, widths[i] // 2))
                                   for i in reversed(range(depth)))

    def decode(self, features: list[Tensor]) -> Tensor:
        """Encoder features -> logits (B, K, H, W)."""
        y = features[-1]  # (B, C_depth, H / stride, W / stride)
        for gate, block, skip in zip(self.gates, self.up_blocks, reversed(features[:-1])):
            gated = gate(skip, y)  # (B, C_i, H_i, W_i)
            y = block(torch.cat([gated, upsample_to(y, skip)], dim=1))  # (B, C_i, H_i, W_i)
        return self.head(y)  # (B, K, H, W)
