"""Joint image/mask augmentation (torchvision.transforms.v2 with tv_tensors.Mask), crop/pad, normalisation."""

from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from .sample import Sample


def to_tensors(sample: Sample) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample -> image (C,H,W) float32, mask (H,W) long (-1 where unlabeled), roi (H,W) bool."""
    image = torch.from_numpy(np.ascontiguousarray(sample.image, dtype=np.float32))
    h, w = image.shape[-2:]
    if sample.mask is None:
        mask = torch.full((h, w), -1, dtype=torch.long)
    else:
        mask = torch.from_numpy(np.ascontiguousarray(sample.mask)).long()
    roi = torch.ones(h, w, dtype=torch.bool) if sample.roi is None else torch.from_numpy(sample.roi.astype(bool))
    return image, mask, roi


def normalize(image: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-image, per-channel z-score: (C,H,W) -> (C,H,W)."""
    mean = image.mean(dim=(-2, -1), keepdim=True)
    std = image.std(dim=(-2, -1), keepdim=True)
    return (image - mean) / (std + eps)


class JointTransform:
    """Weak geometric + intensity augmentation applied identically to image, mask and roi, then crop to a patch.

    Pixels brought in by rotation or padding get roi = 0, so losses and metrics ignore them.
    """

    def __init__(self, patch_size: int, augment: bool = True):
        fill = {tv_tensors.Image: 0.0, tv_tensors.Mask: 0, "others": 0}
        geometric: list[v2.Transform] = []
        intensity: list[v2.Transform] = []
        if augment:
            geometric = [
                v2.RandomHorizontalFlip(),
                v2.RandomVerticalFlip(),
                v2.RandomApply([v2.RandomAffine(degrees=20, scale=(0.85, 1.2), fill=fill)], p=0.5),
                v2.RandomApply([v2.ElasticTransform(alpha=20.0, sigma=5.0, fill=fill)], p=0.2),
            ]
            intensity = [v2.RandomApply([v2.ColorJitter(brightness=0.25, contrast=0.25)], p=0.5)]
        self.patch_size = patch_size
        # Large images are first cut to a region 1.5x the patch, so rotation/elastic work on that, not the
        # whole image (a 512 px EM slice cost ~20x more than the 64 px patch it becomes).
        self.region = v2.RandomCrop(int(patch_size * 1.5))
        self.geometric = v2.Compose(geometric)
        self.crop = v2.RandomCrop(patch_size, pad_if_needed=True, fill=fill)
        self.intensity = v2.Compose(intensity)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor, roi: torch.Tensor):
        """image (C,H,W), mask (H,W), roi (H,W) -> the same, cropped/padded to (patch, patch)."""
        # A third channel marks real pixels: fill value 0 there means "brought in by rotation or padding".
        valid = torch.ones_like(mask)
        joint = tv_tensors.Mask(torch.stack([mask, roi.long(), valid]))
        img = tv_tensors.Image(image)
        if min(image.shape[-2:]) > self.region.size[0]:
            img, joint = self.region(img, joint)
        img, joint = self.geometric(img, joint)
        img, joint = self.crop(img, joint)
        img = self.intensity(img.clamp(0, 1))
        label, inside = joint[0], joint[1].bool() & joint[2].bool()
        return normalize(img.as_subclass(torch.Tensor)), label.as_subclass(torch.Tensor), inside.as_subclass(torch.Tensor)
