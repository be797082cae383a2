"""UNet++ (Zhou et al. 2018): nested U-Net with dense skip connections and optional deep supervision."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import ConvBlock, SegmentationNet, UNetEncoder, level_widths, upsample_to


class UNetPlusPlus(SegmentationNet):
    """UNet++: node X_i_j (j >= 1) convolves [X_i_0, ..., X_i_(j-1), upsampled X_(i+1)_(j-1)].

    With `deep_supervision=True` every top-row node X0_1..X0_depth has its own 1x1 head and forward returns the
    MEAN of their logits, so a loss on the output sends gradient to every head (and to every sub-network).
    With False, only X0_depth has a head.

    2D only: its depth * (depth + 1) / 2 dense decoder nodes keep depth full-resolution feature maps alive
    at the top row, which in 3D multiplies the memory of a U-Net's top level by `depth` on volumes where
    that level already dominates; no 3D semi-supervised reference uses it. Use unet or attention_unet.

    >>> import torch
    >>> from ssl_seg.models import build_model
    >>> m = build_model("unetpp", 1, 4, base_channels=8, deep_supervision=True)
    >>> m(torch.zeros(1, 1, 64, 64)).shape
    torch.Size([1, 4, 64, 64])
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        base_channels: int = 32,
        depth: int = 4,
        dropout: float = 0.0,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        widths = level_widths(base_channels, depth)
        self.stride = 2**depth
        self.depth = depth
        self.deep_supervision = deep_supervision
        self.encoder = UNetEncoder(in_channels, widths, dropout)
        self.nodes = nn.ModuleDict(
            {
                f"x{i}_{j}": ConvBlock(j * widths[i] + widths[i + 1], widths[i])
                for j in range(1, depth + 1)
                for i in range(depth + 1 - j)
            }
        )
        num_heads = depth if deep_supervision else 1
        self.heads = nn.ModuleList(nn.Conv2d(widths[0], num_classes, 1) for _ in range(num_heads))

    def encode(self, x: Tensor) -> list[Tensor]:
        """(B, C, H, W) -> [X_i_0: (B, base * 2**i, H / 2**i, W / 2**i) for i = 0..depth]."""
        return self.encoder(x)

    def decode(self, features: list[Tensor]) -> Tensor:
        """Encoder features -> logits (B, K, H, W), the mean over heads under deep supervision."""
        grid = [[f] for f in features]  # grid[i][j] is X_i_j
        for j in range(1, self.depth + 1):
            for i in range(self.depth + 1 - j):
                up = upsample_to(grid[i + 1][j - 1], grid[i][0])  # (B, C_(i+1), H_i, W_i)
                grid[i].append(self.nodes[f"x{i}_{j}"](torch.cat([*grid[i], up], dim=1)))  # (B, C_i, H_i, W_i)
        top = grid[0][1:] if self.deep_supervision else grid[0][-1:]
        return torch.stack([head(x) for head, x in zip(self.heads, top)]).mean(dim=0)  # (B, K, H, W)
