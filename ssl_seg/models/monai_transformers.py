"""MONAI's transformer U-Nets as backbones, 2D and 3D: UNETR (ViT encoder) and SwinUNETR (Swin encoder).

As in monai_unets.py, each wraps the MONAI network (`self.net`) and splits its forward into `encode` / `decode`
(the features the decoder reads), so UniMatch's feature perturbation works; with feature_dropout 0 the output is
MONAI's own forward. Both take the training patch (`patch_size`, from --patch-size) to check its sides up front.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from .blocks import SegmentationNet


def _check_sides(name: str, patch_size: Sequence[int], multiple: int, why: str, smallest: int) -> None:
    """Raise a UserError naming --patch-size unless every side of the patch is a multiple of `multiple`, >= `smallest`."""
    if not any(side % multiple or side < smallest for side in patch_size):
        return
    good = max(smallest, multiple * round(max(patch_size) / multiple))
    fix = f"e.g. --patch-size {good}"
    if len(patch_size) == 3:  # the 3D patch also follows the spacing and is capped by the volumes' median size
        fix += " (3D patch sides follow the spacing and are capped by the volume size: else use --spatial-dims 2)"
    raise UserError(f"--patch-size gives the patch {'x'.join(map(str, patch_size))}: {name} needs every side a "
                    f"multiple of {multiple} ({why}) and at least {smallest}; {fix}")


def _pad_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Zero-pad (B, C, *S) at the high end of every spatial axis up to `size` (sides already larger stay)."""
    return F.pad(x, [amount for s, p in zip(reversed(x.shape[2:]), reversed(size)) for amount in (0, max(p - s, 0))])


class MonaiUNETR(SegmentationNet):
    """MONAI UNETR (Hatamizadeh et al. 2022): a ViT on 16-pixel patches of a FIXED input size, the training patch.

    Inputs up to the patch size are zero-padded to it (and the logits cropped back); sliding-window inference
    tiles larger images with that patch. `base_channels` is MONAI's feature_size; hidden_size, mlp_dim and
    num_heads size the ViT (MONAI's ViT-B defaults).
    """
    per_sample_norm = True  # instance / group / layer norm

    def __init__(self, in_channels: int, num_classes: int, base_channels: int = 16,
                 patch_size: Sequence[int] | None = None, hidden_size: int = 768, mlp_dim: int = 3072,
                 num_heads: int = 12, dropout: float = 0.0, spatial_dims: int = 2) -> None:
        super().__init__()
        from monai.networks.nets import UNETR

        if patch_size is None:
            raise UserError("monai:unetr needs the training patch size (--patch-size): its ViT has a fixed input size")
        _check_sides("monai:unetr", patch_size, 16, "its ViT cuts 16-pixel patches", 16)
        if hidden_size % num_heads:
            raise UserError(f"monai:unetr hidden_size={hidden_size} must be divisible by num_heads={num_heads} "
                            "(--backbone-options hidden_size=H,num_heads=N)")
        self.stride, self.spatial_dims, self.input_size = 16, spatial_dims, tuple(patch_size)
        self.net = UNETR(in_channels, num_classes, img_size=self.input_size, feature_size=base_channels,
                         hidden_size=hidden_size, mlp_dim=mlp_dim, num_heads=num_heads, dropout_rate=dropout,
                         spatial_dims=spatial_dims)
        for block in self.net.vit.blocks:  # MONAI builds these even without cross-attention; DDP wants none unused
            block.norm_cross_attn = nn.Identity()

    def forward(self, x: Tensor, feature_dropout: float = 0.0) -> Tensor:
        """(B, C, *S), S at most the patch size -> logits (B, K, *S): zero-padded to the patch, cropped back."""
        size = x.shape[2:]
        if len(size) != len(self.input_size) or any(s > p for s, p in zip(size, self.input_size)):
            raise ValueError(f"monai:unetr takes inputs up to its patch {self.input_size}, got {tuple(size)}")
        logits = super().forward(_pad_to(x, self.input_size), feature_dropout)
        return logits[(..., *(slice(0, s) for s in size))]

    def encode(self, x: Tensor) -> list[Tensor]:
        """(B, C, *patch) -> [enc1, enc2, enc3, enc4, the ViT's last tokens as a feature map]."""
        net = self.net
        tokens, hidden = net.vit(x)
        skips = [net.encoder1(x)]
        for block, layer in ((net.encoder2, 3), (net.encoder3, 6), (net.encoder4, 9)):
            skips.append(block(net.proj_feat(hidden[layer])))
        return [*skips, net.proj_feat(tokens)]

    def decode(self, features: list[Tensor]) -> Tensor:
        """Encoder features -> logits (B, K, *patch)."""
        enc1, enc2, enc3, enc4, y = features
        net = self.net
        for block, skip in ((net.decoder5, enc4), (net.decoder4, enc3), (net.decoder3, enc2), (net.decoder2, enc1)):
            y = block(y, skip)
        return net.out(y)


class MonaiSwinUNETR(SegmentationNet):
    """MONAI SwinUNETR (Hatamizadeh et al. 2022): a Swin transformer encoder, five 2x levels.

    `base_channels` is MONAI's feature_size, a multiple of 12; the training patch's sides must be multiples of 32 and
    at least 64 (its InstanceNorm needs a bottleneck of 2 or more pixels); smaller inputs are zero-padded to 64.
    """
    per_sample_norm = True  # instance / group / layer norm

    smallest = 64

    def __init__(self, in_channels: int, num_classes: int, base_channels: int = 24,
                 patch_size: Sequence[int] | None = None, dropout: float = 0.0, spatial_dims: int = 2) -> None:
        super().__init__()
        from monai.networks.nets import SwinUNETR

        if base_channels % 12:
            raise UserError(f"--base-channels {base_channels}: monai:swinunetr needs a multiple of 12 (its "
                            "feature_size), e.g. --base-channels 12 or 24")
        if patch_size is not None:
            _check_sides("monai:swinunetr", patch_size, 32, "five 2x patch-merging levels", self.smallest)
        self.stride, self.spatial_dims = 32, spatial_dims
        self.net = SwinUNETR(in_channels, num_classes, feature_size=base_channels, drop_rate=dropout,
                             spatial_dims=spatial_dims)

    def forward(self, x: Tensor, feature_dropout: float = 0.0) -> Tensor:
        """(B, C, *S), any sizes -> logits (B, K, *S): sides below 64 zero-padded to it, the rest to multiples of 32."""
        size = x.shape[2:]
        logits = super().forward(_pad_to(x, (self.smallest,) * len(size)), feature_dropout)
        return logits[(..., *(slice(0, s) for s in size))]

    def encode(self, x: Tensor) -> list[Tensor]:
        """(B, C, *S) -> [enc0, enc1, enc2, enc3, the Swin stage-4 map, the bottleneck], S / 32 last."""
        net = self.net
        hidden = net.swinViT(x, net.normalize)
        skips = [net.encoder1(x), net.encoder2(hidden[0]), net.encoder3(hidden[1]), net.encoder4(hidden[2])]
        return [*skips, hidden[3], net.encoder10(hidden[4])]

    def decode(self, features: list[Tensor]) -> Tensor:
        """Encoder features -> logits (B, K, *S)."""
        enc0, enc1, enc2, enc3, stage4, y = features
        net = self.net
        for block, skip in ((net.decoder5, stage4), (net.decoder4, enc3), (net.decoder3, enc2),
                            (net.decoder2, enc1), (net.decoder1, enc0)):
            y = block(y, skip)
        return net.out(y)
