"""FCN-8s (Long et al. 2015) on a small VGG-like encoder."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import ConvBlock, SegmentationNet, upsample_to


class FCN8s(SegmentationNet):
    """FCN-8s: class scores at strides 32, 16 and 8, fused by bilinear upsampling and adding, then upsampled x8.

    The encoder has five ConvBlock + max-pool stages (widths base, 2, 4, 8, 8 x base) and, as the paper's
    fc6/fc7, a 3x3 and a 1x1 conv (16 x base, ReLU, Dropout2d(dropout)); it has no `depth` (stride is 32).

    2D only: a fixed stride of 32 pads every axis to 32 voxels, while clinical volumes often have far
    fewer (thick) slices, and its x8 final upsampling is too coarse for small 3D structures. Use unet or
    attention_unet for volumes.

    >>> import torch
    >>> from ssl_seg.models import build_model
    >>> m = build_model("fcn", 1, 4, base_channels=8)
    >>> m(torch.zeros(1, 1, 64, 64)).shape
    torch.Size([1, 4, 64, 64])
    """

    stride = 32

    def __init__(self, in_channels: int, num_classes: int, base_channels: int = 32, dropout: float = 0.0) -> None:
        super().__init__()
        widths = [base_channels * m for m in (1, 2, 4, 8, 8)]
        self.stages = nn.ModuleList(ConvBlock(c_in, c_out) for c_in, c_out in zip([in_channels, *widths], widths))
        fc = 16 * base_channels
        # No BatchNorm here: at stride 32 a small batch may have a single value per channel.
        self.fc = nn.Sequential(
            nn.Conv2d(widths[-1], fc, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(fc, fc, 1),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
        )
        self.score8 = nn.Conv2d(widths[2], num_classes, 1)
        self.score16 = nn.Conv2d(widths[3], num_classes, 1)
        self.score32 = nn.Conv2d(fc, num_classes, 1)

    def encode(self, x: Tensor) -> list[Tensor]:
        """(B, C, H, W) -> [pool3 (B, 4b, H/8, W/8), pool4 (B, 8b, H/16, W/16), fc7 (B, 16b, H/32, W/32)]."""
        pooled = []
        for stage in self.stages:
            x = F.max_pool2d(stage(x), 2)
            pooled.append(x)  # (B, C_k, H / 2**(k+1), W / 2**(k+1))
        return [pooled[2], pooled[3], self.fc(pooled[4])]

    def decode(self, features: list[Tensor]) -> Tensor:
        """[pool3, pool4, fc7] -> logits (B, K, H, W)."""
        pool3, pool4, fc7 = features
        score = self.score32(fc7)  # (B, K, H/32, W/32)
        score = upsample_to(score, pool4) + self.score16(pool4)  # (B, K, H/16, W/16)
        score = upsample_to(score, pool3) + self.score8(pool3)  # (B, K, H/8, W/8)
        h, w = pool3.shape[-2:]
        return F.interpolate(score, size=(8 * h, 8 * w), mode="bilinear", align_corners=False)  # (B, K, H, W)
