"""Joint 3D augmentation of a volume, its label and roi, cut to a training patch: the 3D JointTransform.

Per sample (nnU-Net's recipe, trimmed): a window is drawn (with probability `foreground_fraction` placed to
contain a foreground voxel), optionally scaled (the window is 1/s times the patch and resized to it), mirrored
along each axis, rotated by a multiple of 90 degrees in a plane whose two patch sides are equal, elastically
deformed (p 0.2, as the 2D JointTransform), and given brightness, contrast, gamma and noise changes. With thick
slices (`thick`) scaling, rotation and deformation stay in-plane (H, W), so nothing is interpolated across
slices. Voxels brought in by padding or deformation get roi = 0 and do not count in the z-score statistics.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .patches3d import crop_padded, window_starts
from .transforms import normalize

SCALE_RANGE = (0.85, 1.25)  # as the 2D JointTransform's RandomAffine
ELASTIC_P = 0.2  # as the 2D JointTransform's ElasticTransform
ELASTIC_CELLS = 4  # control points per axis of the smooth displacement field
ELASTIC_VOXELS = 2.0  # std of the control points' displacement, in voxels


def _chance(p: float) -> bool:
    return bool(torch.rand(()) < p)


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


class VolumeTransform:
    """image (C, D, H, W), mask (D, H, W), roi (D, H, W) -> augmented (C, *patch) z-scored, (*patch), (*patch)."""

    def __init__(self, patch: Sequence[int], thick: bool, augment: bool = True, foreground_fraction: float = 1 / 3,
                 scale_p: float = 0.2):
        self.patch = tuple(int(p) for p in patch)
        self.thick, self.augment = thick, augment
        self.foreground_fraction, self.scale_p = foreground_fraction, scale_p
        axes = [(2, 3)] if thick else [(1, 2), (1, 3), (2, 3)]  # planes of a (C, D, H, W) tensor
        self.planes = [(a, b) for a, b in axes if self.patch[a - 1] == self.patch[b - 1]]

    def __call__(self, image: Tensor, mask: Tensor, roi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One augmented patch: image (C, *patch) float32, label (*patch) long, inside (*patch) bool."""
        region = self.patch
        if self.augment and _chance(self.scale_p):
            s = _uniform(*SCALE_RANGE)
            region = tuple(p if (self.thick and axis == 0) else max(1, round(p / s)) for axis, p in enumerate(region))
        starts = window_starts(mask, region, foreground=_chance(self.foreground_fraction))
        joint = torch.stack([mask.long(), roi.long(), torch.ones_like(mask, dtype=torch.long)])  # label, roi, real
        img, joint = crop_padded(image, starts, region), crop_padded(joint, starts, region)
        if region != self.patch:
            img = F.interpolate(img[None], size=self.patch, mode="trilinear", align_corners=False)[0]
            joint = F.interpolate(joint[None].float(), size=self.patch, mode="nearest")[0].long()
        if self.augment:
            img, joint = self._geometric(img, joint)
            if _chance(ELASTIC_P):
                img, joint = elastic(img, joint, in_plane=self.thick)
            img = self._intensity(img, joint[2].bool())
        real = joint[2].bool()
        return normalize(img, real, spatial_dims=3), joint[0], joint[1].bool() & real

    def _geometric(self, img: Tensor, joint: Tensor) -> tuple[Tensor, Tensor]:
        """Mirror each spatial axis with p = 0.5, then a random quarter turn in an allowed plane."""
        for axis in (1, 2, 3):
            if _chance(0.5):
                img, joint = img.flip(axis), joint.flip(axis)
        if self.planes:
            plane = self.planes[int(torch.randint(0, len(self.planes), ()))]
            k = int(torch.randint(0, 4, ()))
            img, joint = img.rot90(k, plane), joint.rot90(k, plane)
        return img.contiguous(), joint.contiguous()

    @staticmethod
    def _intensity(img: Tensor, real: Tensor) -> Tensor:
        """Brightness (p 0.15), contrast (p 0.15), gamma (p 0.3), Gaussian noise (p 0.1) on an image in [0, 1]."""
        if _chance(0.15):
            img = img * _uniform(0.75, 1.25)
        if _chance(0.15):
            mean = img[:, real].mean() if real.any() else img.mean()
            img = mean + (img - mean) * _uniform(0.75, 1.25)
        img = img.clamp(0, 1)
        if _chance(0.3):
            img = img.pow(_uniform(0.7, 1.5))
        if _chance(0.1):
            img = img + torch.randn_like(img) * _uniform(0.0, 0.05) * real
        return img


def elastic(img: Tensor, joint: Tensor, in_plane: bool = False) -> tuple[Tensor, Tensor]:
    """Warp image (C, D, H, W) (trilinear) and label maps (L, D, H, W) (nearest) by one smooth random field.

    The field is ELASTIC_CELLS^3 control displacements of ELASTIC_VOXELS voxels std, upsampled trilinearly; with
    `in_plane` it has no component along D. Voxels pulled from outside the patch become 0 (roi and "real" too).
    """
    size = img.shape[1:]
    coarse = torch.randn(1, 3, ELASTIC_CELLS, ELASTIC_CELLS, ELASTIC_CELLS) * ELASTIC_VOXELS  # (x=W, y=H, z=D)
    if in_plane:
        coarse[:, 2] = 0.0
    field = F.interpolate(coarse, size=size, mode="trilinear", align_corners=True)  # (1, 3, D, H, W) voxels
    scale = torch.tensor([2.0 / size[2], 2.0 / size[1], 2.0 / size[0]]).view(1, 3, 1, 1, 1)  # voxels -> [-1, 1]
    identity = F.affine_grid(torch.eye(3, 4)[None], [1, 1, *size], align_corners=False)  # (1, D, H, W, 3)
    grid = identity + (field * scale).permute(0, 2, 3, 4, 1)
    warped = F.grid_sample(img[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    labels = F.grid_sample(joint[None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)[0]
    return warped, labels.long()
