"""Pictures of mask/image pairs: coloured masks, RGB conversion, side-by-side grids."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.utils import make_grid

# background black, then well-separated hues (tab10-like); repeats after 10 classes
PALETTE = torch.tensor([[0, 0, 0], [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40],
                         [148, 103, 189], [140, 86, 75], [227, 119, 194], [188, 189, 34], [23, 190, 207]],
                        dtype=torch.float32) / 255.0


def colorize_mask(mask: Tensor) -> Tensor:
    """Class indices (B, H, W) -> RGB (B, 3, H, W) in [0, 1]."""
    return PALETTE[mask.long().cpu() % len(PALETTE)].permute(0, 3, 1, 2)


def to_rgb(image: Tensor) -> Tensor:
    """Image (B, C, H, W) in [0, 1] -> (B, 3, H, W): gray repeated, RGB kept, other C shows channel 0."""
    image = image.detach().float().cpu().clamp(0, 1)
    return image if image.shape[1] == 3 else image[:, :1].expand(-1, 3, -1, -1)


def pair_grid(mask: Tensor, *images: Tensor, per_row: int = 1) -> Tensor:
    """`per_row` samples per row, each as coloured mask | every image given ((B, C, H, W) in [0, 1]) -> (3, H', W')."""
    columns = [colorize_mask(mask)] + [to_rgb(im) for im in images]
    tiles = torch.stack(columns, dim=1).flatten(0, 1)  # (B * n_columns, 3, H, W), sample-major
    return make_grid(tiles, nrow=len(columns) * per_row, padding=2, pad_value=1.0)
