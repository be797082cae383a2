"""U-Net (Ronneberger et al. 2015) with bilinear (2D) or trilinear (3D, as in Cicek et al. 2016) upsampling."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import ConvBlock, SegmentationNet, UNetEncoder, layers, level_widths, upsample_to


class UNet(SegmentationNet):
    """U-Net: `depth` max-pool levels, width doubling from `base_channels`, upsample + concat decoder.

    `spatial_dims=3` builds the same network from 3D layers for volumes (B, C, D, H, W).

    >>> import torch
    >>> from ssl_seg.models import build_model
    >>> m = build_model("unet", 1, 4, base_channels=8)
    >>> m(torch.zeros(1, 1, 64, 64)).shape
    torch.Size([1, 4, 64, 64])
    >>> build_model("unet", 2, 3, base_channels=4, depth=2, spatial_dims=3)(torch.zeros(1, 2, 8, 12, 12)).shape
    torch.Size([1, 3, 8, 12, 12])
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
        super().__init__()
        widths = level_widths(base_channels, depth)
        self.stride = 2**depth
        self.spatial_dims = spatial_dims
        self.encoder = UNetEncoder(in_channels, widths, dropout, spatial_dims)
        self.up_blocks = nn.ModuleList(
            ConvBlock(widths[i + 1] + widths[i], widths[i], spatial_dims=spatial_dims) for i in reversed(range(depth))
        )
        self.head = layers(spatial_dims).conv(widths[0], num_classes, 1)

    def encode(self, x: Tensor) -> list[Tensor]:
        """(B, C, *S) -> [(B, base * 2**i, *S / 2**i) for i = 0..depth]."""
        return self.encoder(x)

    def decode(self, features: list[Tensor]) -> Tensor:
        """Encoder features -> logits (B, K, *S)."""
        y = features[-1]  # (B, C_depth, *S / stride)
        for block, skip in zip(self.up_blocks, reversed(features[:-1])):
            y = block(torch.cat([skip, upsample_to(y, skip)], dim=1))  # (B, C_i, *S_i)
        return self.head(y)  # (B, K, *S)
