"""samples.png of a synthetic set: held-out real pairs beside what the GAN makes of their masks, then pairs of
the set, with a legend naming each mask colour's class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ssl_seg.device import to_memory_format
from ssl_seg.io_utils import atomic_path

from .config import GanConfig
from .data import PairBank, gan_source, gan_split
from .networks import one_hot
from .viz import PALETTE, colorize_mask, to_rgb


@torch.no_grad()
def held_out_pairs(generator: torch.nn.Module, cfg: GanConfig, num_classes: int, device: torch.device,
                   k: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """k held-out real masks and images (the GAN split's validation pairs, else its labeled ones; those with
    foreground first) and the generator's images for those masks; images (k, C, S, S) in [0, 1], masks (k, S, S)."""
    source = gan_source(cfg)
    split = gan_split(cfg, source)
    mask, image = PairBank(source, split.val or split.labeled).preview_batch(cfg.patch_size, k)  # image in [-1, 1]
    torch.manual_seed(seed)
    x = to_memory_format(one_hot(mask.to(device), num_classes), device, cfg.channels_last)
    fake = generator(x).float().cpu()
    return {"real_mask": mask.numpy(), "real_image": ((image + 1) / 2).clamp(0, 1).numpy(),
            "gan_image": ((fake + 1) / 2).clamp(0, 1).numpy()}


def plot_preview(pairs: dict[str, np.ndarray], class_names: list[str], mask_source: str, path: Path) -> None:
    """Five rows (real mask, real image, GAN image of that mask, new mask, GAN image of it) and a class legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = [("held-out real mask", colorize_mask(torch.from_numpy(pairs["real_mask"]))),
            ("its real image", to_rgb(torch.from_numpy(pairs["real_image"]))),
            ("GAN image, same mask", to_rgb(torch.from_numpy(pairs["gan_image"]))),
            (f"new mask ({mask_source})", colorize_mask(torch.from_numpy(pairs["syn_mask"]))),
            ("GAN image (synthetic pair)", to_rgb(torch.from_numpy(pairs["syn_image"])))]
    k = max(len(tiles) for _, tiles in rows)
    fig, axes = plt.subplots(len(rows), k, figsize=(1.6 * k + 1.6, 1.6 * len(rows) + 0.6), squeeze=False)
    for r, (title, tiles) in enumerate(rows):
        for c in range(k):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(tiles):
                ax.imshow(tiles[c].permute(1, 2, 0).numpy(), interpolation="nearest")
            if c == 0:
                ax.set_ylabel(title, fontsize=7)
    handles = [Patch(color=PALETTE[i % len(PALETTE)].tolist(), label=name) for i, name in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
