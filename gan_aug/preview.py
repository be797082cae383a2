"""samples.png of a study: held-out real pairs beside what the GAN makes of their masks, then pairs of the
synthetic set, with a legend naming each mask colour's class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ssl_seg.data.readers import open_source
from ssl_seg.data.splits import Split
from ssl_seg.io_utils import atomic_path

from .checkpoint import checkpoint_path, load_gan_checkpoint, load_generator
from .config import GanConfig
from .data import PairBank
from .networks import one_hot
from .viz import PALETTE, colorize_mask, to_rgb


def preview_pairs(gan_dir: Path, synthetic: Path, k: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """k held-out real masks/images (the GAN's validation split, else its labeled pairs), the EMA generator's
    images for those masks, and the first k synthetic pairs; images (k, C, S, S) in [0, 1], masks (k, S, S)."""
    ckpt = load_gan_checkpoint(checkpoint_path(gan_dir))
    cfg = GanConfig.from_dict(ckpt["config"])
    source = open_source(cfg.data)
    split = Split.load(Path(gan_dir) / "split.json")
    mask, image = PairBank(source, split.val or split.labeled).center_batch(cfg.patch_size, k)  # image in [-1, 1]
    generator = load_generator(ckpt, torch.device("cpu"))
    torch.manual_seed(seed)
    with torch.no_grad():
        fake = generator(one_hot(mask, ckpt["info"]["num_classes"])).float()
    syn = open_source(str(synthetic))
    samples = [syn.load(i) for i in range(min(k, len(syn)))]
    return {"real_mask": mask.numpy(), "real_image": ((image + 1) / 2).clamp(0, 1).numpy(),
            "gan_image": ((fake + 1) / 2).clamp(0, 1).numpy(),
            "syn_mask": np.stack([s.mask for s in samples]), "syn_image": np.stack([s.image for s in samples])}


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
