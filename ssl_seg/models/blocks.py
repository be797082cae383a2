"""Pieces shared by the backbones: layer types per spatial_dims, conv blocks, the U-Net encoder, and the
pad/encode/decode/crop base class.

Tensors are (B, C, *spatial): (B, C, H, W) for 2D models, (B, C, D, H, W) for 3D ones. Functional pieces
(pooling, upsampling, padding, feature dropout) follow the tensor's own number of spatial axes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn


class Layers(NamedTuple):
    """The module types of one spatial dimensionality."""

    conv: type[nn.Module]
    batch_norm: type[nn.Module]
    dropout: type[nn.Module]


_LAYERS = {
    2: Layers(nn.Conv2d, nn.BatchNorm2d, nn.Dropout2d),
    3: Layers(nn.Conv3d, nn.BatchNorm3d, nn.Dropout3d),
}


def layers(spatial_dims: int) -> Layers:
    """Conv, BatchNorm and channel-dropout types for 2 (images) or 3 (volumes) spatial dims."""
    if spatial_dims not in _LAYERS:
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    return _LAYERS[spatial_dims]


def conv_bn_act(in_channels: int, out_channels: int, spatial_dims: int = 2) -> nn.Sequential:
    """3x3(x3) conv (no bias: BatchNorm follows) + BatchNorm + LeakyReLU: (B, Cin, *S) -> (B, Cout, *S)."""
    kind = layers(spatial_dims)
    return nn.Sequential(
        kind.conv(in_channels, out_channels, 3, padding=1, bias=False),
        kind.batch_norm(out_channels),
        nn.LeakyReLU(0.01, inplace=True),
    )


class ConvBlock(nn.Sequential):
    """Two conv_bn_act layers with channel dropout between: (B, Cin, *S) -> (B, Cout, *S)."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0, spatial_dims: int = 2) -> None:
        super().__init__(
            conv_bn_act(in_channels, out_channels, spatial_dims),
            layers(spatial_dims).dropout(dropout),
            conv_bn_act(out_channels, out_channels, spatial_dims),
        )


def level_widths(base_channels: int, depth: int) -> list[int]:
    """Channel count per resolution level 0..depth, doubling from `base_channels`."""
    return [base_channels * 2**i for i in range(depth + 1)]


def max_pool(x: Tensor) -> Tensor:
    """2x max-pool along every spatial axis: (B, C, *S) -> (B, C, *S / 2)."""
    return F.max_pool3d(x, 2) if x.ndim == 5 else F.max_pool2d(x, 2)


def channel_dropout(x: Tensor, p: float) -> Tensor:
    """Drop whole channels of (B, C, *S) with probability p, whatever the module's mode (training=True)."""
    return F.dropout3d(x, p, training=True) if x.ndim == 5 else F.dropout2d(x, p, training=True)


def upsample_to(x: Tensor, ref: Tensor) -> Tensor:
    """Bilinear (2D) or trilinear (3D) resize of x (B, C, *s) to ref's spatial size -> (B, C, *S)."""
    mode = "trilinear" if x.ndim == 5 else "bilinear"
    return F.interpolate(x, size=ref.shape[2:], mode=mode, align_corners=False)


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad (B, C, *S) at the high end of every spatial axis so each size becomes a multiple of `multiple`."""
    pad: list[int] = []
    for size in reversed(x.shape[2:]):  # F.pad lists the last axis first
        pad += [0, -size % multiple]
    return F.pad(x, pad)


class UNetEncoder(nn.Module):
    """Contracting path: ConvBlock per level, 2x max-pool between; dropout in the deepest block (U-Net paper)."""

    def __init__(self, in_channels: int, widths: list[int], dropout: float = 0.0, spatial_dims: int = 2) -> None:
        super().__init__()
        depth = len(widths) - 1
        self.blocks = nn.ModuleList(
            ConvBlock(in_channels if i == 0 else widths[i - 1], widths[i], dropout if i == depth else 0.0,
                      spatial_dims)
            for i in range(depth + 1)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, C, *S) -> [(B, widths[i], *S / 2**i) for each level i], deepest last."""
        features = [self.blocks[0](x)]
        for block in self.blocks[1:]:
            features.append(block(max_pool(features[-1])))
        return features


class SegmentationNet(nn.Module, ABC):
    """Base of every backbone: forward = pad to `stride` -> encode -> optional feature dropout -> decode -> crop."""

    stride: int  # every spatial size given to `encode` must be a multiple of this
    spatial_dims: int = 2  # 2: input (B, C, H, W); 3: input (B, C, D, H, W)
    # True where normalisation statistics are per sample (instance, group or layer norm): the amount of padding then
    # shifts every feature, so an image smaller than the training patch is evaluated padded to it as training pads it
    per_sample_norm: bool = False

    @abstractmethod
    def encode(self, x: Tensor) -> list[Tensor]:
        """(B, C, *S) with every size a multiple of `stride` -> encoder feature maps, deepest last."""

    @abstractmethod
    def decode(self, features: list[Tensor]) -> Tensor:
        """Encoder feature maps (as from `encode`) -> logits (B, K, *S) at the encoded input's size."""

    def forward(self, x: Tensor, feature_dropout: float = 0.0) -> Tensor:
        """(B, C, *S), any sizes -> logits (B, K, *S); feature_dropout > 0 drops encoder channels even in eval."""
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"{type(self).__name__} with spatial_dims={self.spatial_dims} expects a "
                f"{self.spatial_dims + 2}-D input (B, C, *spatial), got shape {tuple(x.shape)}"
            )
        size = x.shape[2:]
        features = self.encode(pad_to_multiple(x, self.stride))
        if feature_dropout > 0:
            features = [channel_dropout(f, feature_dropout) for f in features]  # UniMatch's feature perturbation
        logits = self.decode(features)  # (B, K, *S_pad)
        return logits[(..., *(slice(0, s) for s in size))]
