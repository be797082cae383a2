"""Attention U-Net (Oktay et al. 2018): U-Net whose skips pass through additive attention gates."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import layers, level_widths, upsample_to
from .unet import UNet


class AttentionGate(nn.Module):
    """Additive gate: alpha = sigmoid(psi(relu(theta(x) + phi(g)))) in (0, 1) per pixel/voxel rescales the skip x."""

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        kind = layers(spatial_dims)
        self.theta = kind.conv(skip_channels, inter_channels, 2, stride=2, bias=False)  # x down to g's grid
        self.phi = kind.conv(gate_channels, inter_channels, 1)
        self.psi = kind.conv(inter_channels, 1, 1)
        self.project = nn.Sequential(
            kind.conv(skip_channels, skip_channels, 1, bias=False), kind.batch_norm(skip_channels)
        )

    def forward(self, x: Tensor, g: Tensor) -> Tensor:
        """Skip x (B, Cx, *S) gated by the coarser g (B, Cg, *S / 2) -> (B, Cx, *S)."""
        q = F.relu(self.theta(x) + self.phi(g))  # (B, Ci, *S / 2)
        alpha = upsample_to(torch.sigmoid(self.psi(q)), x)  # (B, 1, *S)
        return self.project(x * alpha)


class AttentionUNet(UNet):
    """U-Net whose skip at level i is gated by the decoder feature of level i + 1 before concatenation.

    >>> import torch
    >>> from ssl_seg.models import build_model
    >>> m = build_model("attention_unet", 1, 4, base_channels=8)
    >>> m(torch.zeros(1, 1, 64, 64)).shape
    torch.Size([1, 4, 64, 64])
    >>> build_model("attention_unet", 1, 2, base_channels=4, depth=2, spatial_dims=3)(torch.zeros(1, 1, 8, 8, 8)).shape
    torch.Size([1, 2, 8, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        base_channels: int = 32,
        depth: int = 4,
        dropout: float = 0.0,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__(in_channels, num_classes, base_channels, depth, dropout, spatial_dims)
        widths = level_widths(base_channels, depth)
        self.gates = nn.ModuleList(AttentionGate(widths[i], widths[i + 1], max(1, widths[i] // 2), spatial_dims)
                                   for i in reversed(range(depth)))

    def decode(self, features: list[Tensor]) -> Tensor:
        """Encoder features -> logits (B, K, *S)."""
        y = features[-1]  # (B, C_depth, *S / stride)
        for gate, block, skip in zip(self.gates, self.up_blocks, reversed(features[:-1])):
            gated = gate(skip, y)  # (B, C_i, *S_i)
            y = block(torch.cat([gated, upsample_to(y, skip)], dim=1))  # (B, C_i, *S_i)
        return self.head(y)  # (B, K, *S)
