"""MONAI's convolutional U-Nets as backbones, 2D and 3D: DynUNet (nnU-Net's network), BasicUNet and SegResNet.

Each wraps the MONAI network (`self.net`) and splits its forward into `encode` / `decode`, so UniMatch's feature
perturbation drops encoder channels as it does for the package's own U-Net; with feature_dropout 0 the output is
MONAI's own forward (tests/test_monai_backbones.py checks it). MONAI is imported when a network is built, so
`ssl-seg --help` does not pay for it.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from .blocks import SegmentationNet, level_widths


def _check_instance_norm_patch(name: str, patch_size: Sequence[int] | None, stride: int, why: str, other: str) -> None:
    """Refuse a training patch whose padded size leaves the bottleneck one voxel: instance norm cannot train on it."""
    if patch_size is None or math.prod(-(-side // stride) for side in patch_size) > 1:
        return
    raise UserError(f"--patch-size {'x'.join(map(str, patch_size))}: {name} with {why} (stride {stride}) would train "
                    f"on a 1-voxel bottleneck, which its instance norm refuses; use --patch-size {stride + 1} or more"
                    f"{' ' + other if other else ''}")


class MonaiDynUNet(SegmentationNet):
    """MONAI DynUNet (nnU-Net): 3x3(x3) conv blocks, `depth` stride-2 levels, width doubling from `base_channels`.

    InstanceNorm + LeakyReLU as in nnU-Net; `res_block` uses residual blocks. With `deep_supervision` every decoder
    level but the deepest has a 1x1 head and forward returns the MEAN of the heads' upsampled logits (as unetpp does;
    MONAI's own forward returns them stacked in training and the top head alone in eval).
    """
    per_sample_norm = True  # instance / group / layer norm

    def __init__(self, in_channels: int, num_classes: int, base_channels: int = 32, depth: int = 4,
                 dropout: float = 0.0, res_block: bool = False, deep_supervision: bool = False,
                 spatial_dims: int = 2, patch_size: Sequence[int] | None = None) -> None:
        super().__init__()
        from monai.networks.nets import DynUNet

        if depth < 2:
            raise UserError(f"monai:dynunet depth={depth}: needs at least 2 (--backbone-options depth=N)")
        _check_instance_norm_patch("monai:dynunet", patch_size, 2**depth, f"its depth {depth}",
                                   "or a smaller --backbone-options depth=N")
        self.stride, self.spatial_dims = 2**depth, spatial_dims
        self.net = DynUNet(spatial_dims, in_channels, num_classes, kernel_size=[3] * (depth + 1),
                           strides=[1] + [2] * depth, upsample_kernel_size=[2] * depth,
                           filters=level_widths(base_channels, depth), dropout=dropout or None, res_block=res_block,
                           deep_supervision=deep_supervision, deep_supr_num=depth - 1)

    def encode(self, x: Tensor) -> list[Tensor]:
        """(B, C, *S) -> [(B, base * 2**i, *S / 2**i) for i = 0..depth], the bottleneck last."""
        features = [self.net.input_block(x)]
        for block in self.net.downsamples:
            features.append(block(features[-1]))
        return [*features, self.net.bottleneck(features[-1])]

    def decode(self, features: list[Tensor]) -> Tensor:
        """Encoder features -> logits (B, K, *S); the mean over the supervision heads with deep_supervision."""
        y, levels = features[-1], []
        for block, skip in zip(self.net.upsamples, reversed(features[:-1])):
            y = block(y, skip)
            levels.append(y)  # decoder outputs, deepest first
        logits = self.net.output_block(y)
        if not self.net.deep_supervision:
            return logits
        heads = [F.interpolate(head(levels[-2 - i]), size=logits.shape[2:])  # nearest, as MONAI's DynUNet
                 for i, head in enumerate(self.net.deep_supervision_heads)]
        return torch.stack([logits, *heads]).mean(dim=0)


class MonaiBasicUNet(SegmentationNet):
    """MONAI BasicUNet: four 2x max-pool levels, widths (b, b, 2b, 4b, 8b) and b at the top of the decoder."""
    per_sample_norm = True  # instance / group / layer norm

    def __init__(self, in_channels: int, num_classes: int, base_channels: int = 32, dropout: float = 0.0,
                 spatial_dims: int = 2, patch_size: Sequence[int] | None = None) -> None:
        super().__init__()
        from monai.networks.nets import BasicUNet

        _check_instance_norm_patch("monai:basicunet", patch_size, 16, "its four down-samplings", "")
        b = base_channels
        self.stride, self.spatial_dims = 16, spatial_dims
        self.net = BasicUNet(spatial_dims, in_channels, num_classes, features=(b, b, 2 * b, 4 * b, 8 * b, b),
                             dropout=dropout)

    def encode(self, x: Tensor) -> list[Tensor]:
        """(B, C, *S) -> the five encoder levels x0..x4, x4 at *S / 16."""
        features = [self.net.conv_0(x)]
        for block in (self.net.down_1, self.net.down_2, self.net.down_3, self.net.down_4):
            features.append(block(features[-1]))
        return features

    def decode(self, features: list[Tensor]) -> Tensor:
        """Encoder features -> logits (B, K, *S)."""
        x0, x1, x2, x3, x4 = features
        y = self.net.upcat_4(x4, x3)
        y = self.net.upcat_3(y, x2)
        y = self.net.upcat_2(y, x1)
        return self.net.final_conv(self.net.upcat_1(y, x0))


class MonaiSegResNet(SegmentationNet):
    """MONAI SegResNet (Myronenko 2018): residual GroupNorm blocks (1, 2, 2, 4) down, three 2x levels, `base_channels`
    = init_filters (a multiple of its 8 norm groups)."""
    per_sample_norm = True  # instance / group / layer norm

    def __init__(self, in_channels: int, num_classes: int, base_channels: int = 32, dropout: float = 0.0,
                 spatial_dims: int = 2) -> None:
        super().__init__()
        from monai.networks.nets import SegResNet

        if base_channels % 8:
            raise UserError(f"--base-channels {base_channels}: monai:segresnet needs a multiple of 8 (its GroupNorm "
                            "has 8 groups), e.g. --base-channels 16")
        self.stride, self.spatial_dims = 8, spatial_dims
        self.net = SegResNet(spatial_dims, init_filters=base_channels, in_channels=in_channels,
                             out_channels=num_classes, dropout_prob=dropout or None)

    def encode(self, x: Tensor) -> list[Tensor]:
        """(B, C, *S) -> the four encoder levels, the deepest (*S / 8) last."""
        return self.net.encode(x)[1]

    def decode(self, features: list[Tensor]) -> Tensor:
        """Encoder features -> logits (B, K, *S)."""
        return self.net.decode(features[-1], features[::-1])
