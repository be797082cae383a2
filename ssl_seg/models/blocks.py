"""Pieces shared by the backbones: conv blocks, the U-Net encoder, and the pad/encode/decode/crop base class."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn_act(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv (no bias: BatchNorm follows) + BatchNorm + LeakyReLU: (B, Cin, H, W) -> (B, Cout, H, W)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.01, inplace=True),
    )


class ConvBlock(nn.Sequential):
    """Two conv_bn_act layers with Dropout2d between: (B, Cin, H, W) -> (B, Cout, H, W)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__(
            conv_bn_act(in_channels, out_channels),
            nn.Dropout2d(dropout),
            conv_bn_act(out_channels, out_channels),
        )


def level_widths(base_channels: int, depth: int) -> list[int]:
    """Channel count per resolution level 0..depth, doubling from `base_channels`."""
    return [base_channels * 2**i for i in range(depth + 1)]


def upsample_to(x: Tensor, ref: Tensor) -> Tensor:
    """Bilinear resize of x (B, C, h, w) to ref's spatial size -> (B, C, H, W)."""
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad (B, C, H, W) at the bottom and right so H and W become multiples of `multiple`."""
    h, w = x.shape[-2:]
    return F.pad(x, (0, -w % multiple, 0, -h % multiple))


class UNetEncoder(nn.Module):
    """Contracting path: ConvBlock per level, 2x2 max-pool between; dropout in the deepest block (U-Net paper)."""

    def __init__(self, in_channels: int, widths: list[int], dropout: float = 0.0) -> None:
        super().__init__()
        depth = len(widths) - 1
        self.blocks = nn.ModuleList(
            ConvBlock(in_channels if i == 0 else widths[i - 1], widths[i], dropout if i == depth else 0.0)
            for i in range(depth + 1)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, C, H, W) -> [(B, widths[i], H / 2**i, W / 2**i) for each level i], deepest last."""
        features = [self.blocks[0](x)]
        for block in self.blocks[1:]:
            features.append(block(F.max_pool2d(features[-1], 2)))
        return features


class SegmentationNet(nn.Module, ABC):
    """Base of every backbone: forward = pad to `stride` -> encode -> optional feature dropout -> decode -> crop."""

    stride: int  # H and W given to `encode` must be multiples of this

    @abstractmethod
    def encode(self, x: Tensor) -> list[Tensor]:
        """(B, C, H, W) with H, W multiples of `stride` -> encoder feature maps, deepest last."""

    @abstractmethod
    def decode(self, features: list[Tensor]) -> Tensor:
        """Encoder feature maps (as from `encode`) -> logits (B, K, H, W) at the encoded input's size."""

    def forward(self, x: Tensor, feature_dropout: float = 0.0) -> Tensor:
        """(B, C, H, W), any H and W -> logits (B, K, H, W); feature_dropout > 0 drops encoder channels even in eval."""
        h, w = x.shape[-2:]
        features = self.encode(pad_to_multiple(x, self.stride))
        if feature_dropout > 0:
            # UniMatch's feature perturbation: deliberately active in eval mode too (training=True).
            features = [F.dropout2d(f, feature_dropout, training=True) for f in features]
        logits = self.decode(features)  # (B, K, H_pad, W_pad)
        return logits[..., :h, :w]
