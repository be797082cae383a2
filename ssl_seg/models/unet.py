"""U-Net (Ronneberger et al. 2015) with bilinear upsampling."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import ConvBlock, SegmentationNet, UNetEncoder, level_widths, upsample_to


class UNet(SegmentationNet):
    """U-Net: `depth` max-pool levels, width doubling from `base_channels`, bilinear-upsample + concat decoder.

    >>> import torch
    >>> from ssl_seg.models import build_model
    >>> m = build_model("unet", 1, 4, base_channels=8)
    >>> m(torch.zeros(1, 1, 64, 64)).shape
    torch.Size([1, 4, 64, 64])
    """

    def __init__(
        self, in_channels: int, num_classes: int, base_channels: int = 32, depth: int = 4, dropout: float = 0.0
    ) -> None:
        super().__init__()
        widths = level_widths(base_channels, depth)
        self.stride = 2**depth
        self.encoder = UNetEncoder(in_channels, widths, dropout)
        self.up_blocks = nn.ModuleList(ConvBlock(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def encode(self, x: Tensor) -> list[Tensor]:
        """(B, C, H, W) -> [(B, base * 2**i, H / 2**i, W / 2**i) for i = 0..depth]."""
        return self.encoder(x)

    def decode(self, features: list[Tensor]) -> Tensor:
        """Encoder features -> logits (B, K, H, W)."""
        y = features[-1]  # (B, C_depth, H / stride, W / stride)
        for block, skip in zip(self.up_blocks, reversed(features[:-1])):
            y = block(torch.cat([skip, upsample_to(y, skip)], dim=1))  # (B, C_i, H_i, W_i)
        return self.head(y)  # (B, K, H, W)
