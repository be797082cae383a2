"""Where generated images differ from real ones (`gan-aug diagnose`), beside the crops the generator learned from.

Six measures, each on the synthetic pairs and on random crops of the real labeled pairs of the generator's split
(the same crop size, the same number of images):
* intensity per class: the pixel values under each mask class (mean, std, and the 1-Wasserstein distance between
  the real and the synthetic values, in [0, 1] grey levels);
* noise spectrum: the radially averaged power spectrum of the mean-removed images; the share of power in the upper
  half of the frequencies (a generator that paints flat regions has less, one that adds noise has more);
* boundary sharpness: the mean Sobel gradient magnitude on pixels where the mask's class changes;
* flat blocks: the share of 4 x 4 blocks whose grey levels vary by less than half a level (black squares painted
  into the background raise it);
* background-only texture: the mean per-image grey-level std of the images whose mask holds no foreground (a
  generator without a spatial cue may paint them a uniform grey where real crops hold structure), and their
  diversity, the mean per-pixel std across those images (every all-background mask is the same input, so a
  generator whose noise does not reach its output paints the same image for all of them);
* noise-like images: the share of synthetic images whose own high-frequency share is above the real crops' 99th
  percentile (a sampler that diverged leaves noise; 1 % is expected by chance).
Writes OUT/diagnosis.json and OUT/diagnosis.png (histograms per class, spectra, three scalar measures).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage as ndi
from scipy.stats import wasserstein_distance

from ssl_seg.data.sources import open_source
from ssl_seg.errors import UserError
from ssl_seg.io_utils import atomic_path, atomic_write_json

from .assess import crop_pairs, load_synthetic
from .config import GanConfig
from .data import gan_split

FLAT_BLOCK = 4
FLAT_RANGE = 0.5 / 255  # grey-level range below which a block is flat
MAX_PIXELS = 20000  # pixel values per class and side kept for the Wasserstein distance


def class_values(images: np.ndarray, masks: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """The first channel's pixel values under each class of the masks (an empty array for an absent class)."""
    grey = images[:, 0]
    return [grey[masks == k] for k in range(num_classes)]


def radial_spectra(images: np.ndarray) -> np.ndarray:
    """Per image, the mean power per integer radial frequency (0 .. S/2) of its mean-removed first channel: (N, R)."""
    grey = images[:, 0].astype(np.float64)
    grey = grey - grey.mean(axis=(1, 2), keepdims=True)
    power = np.abs(np.fft.fftshift(np.fft.fft2(grey), axes=(1, 2))) ** 2  # (N, H, W)
    h, w = power.shape[1:]
    yy, xx = np.indices((h, w))
    radius = np.hypot(yy - h // 2, xx - w // 2).round().astype(int)
    keep = radius <= min(h, w) // 2
    bins = np.eye(radius[keep].max() + 1)[radius[keep]]  # (pixels, R): which bin each kept pixel falls in
    return power[:, keep] @ bins / bins.sum(axis=0)


def radial_spectrum(images: np.ndarray) -> np.ndarray:
    """Mean power per integer radial frequency (0 .. S/2) of the mean-removed first channel, over the images."""
    return radial_spectra(images).mean(axis=0)


def high_frequency_share(spectrum: np.ndarray) -> float:
    """Share of the (non-DC) power in the upper half of the radial frequencies."""
    ac = spectrum[1:]
    return float(ac[len(ac) // 2:].sum() / max(ac.sum(), 1e-12))


def noise_like_share(real: np.ndarray, syn: np.ndarray, percentile: float = 99.0) -> dict[str, float]:
    """From per-image spectra (N, R): the real images' `percentile` of their high-frequency shares and the share of
    synthetic images above it."""
    real_hf = np.array([high_frequency_share(sp) for sp in real])
    syn_hf = np.array([high_frequency_share(sp) for sp in syn])
    threshold = float(np.percentile(real_hf, percentile))
    return {"threshold": threshold, "synthetic_share": float((syn_hf > threshold).mean()),
            "expected_share": round(1 - percentile / 100, 6)}


def background_only_texture(images: np.ndarray, masks: np.ndarray) -> dict[str, float | int]:
    """How many images have an all-background mask, the mean grey-level std of their first channel within each image
    ("mean_std") and across them per pixel ("across_std", their diversity); nan where there are too few."""
    empty = images[(masks == 0).all(axis=(1, 2)), 0]  # (N, H, W)
    return {"images": len(empty), "mean_std": float(empty.std(axis=(1, 2)).mean()) if len(empty) else float("nan"),
            "across_std": float(empty.std(axis=0).mean()) if len(empty) > 1 else float("nan")}


def boundary_sharpness(images: np.ndarray, masks: np.ndarray) -> float:
    """Mean Sobel gradient magnitude of the first channel on pixels whose 4-neighbourhood holds another class (nan
    when no mask has a boundary)."""
    grey = images[:, 0].astype(np.float64)
    # Sobel per image: derivative along one image axis, smoothing along the other only (ndi.sobel on the stack
    # would also smooth across images)
    gy = ndi.correlate1d(ndi.correlate1d(grey, [-1, 0, 1], axis=1), [1, 2, 1], axis=2)
    gx = ndi.correlate1d(ndi.correlate1d(grey, [-1, 0, 1], axis=2), [1, 2, 1], axis=1)
    magnitude = np.hypot(gx, gy)
    edge = np.zeros(masks.shape, bool)
    edge[:, 1:] |= masks[:, 1:] != masks[:, :-1]
    edge[:, :-1] |= masks[:, 1:] != masks[:, :-1]
    edge[:, :, 1:] |= masks[:, :, 1:] != masks[:, :, :-1]
    edge[:, :, :-1] |= masks[:, :, 1:] != masks[:, :, :-1]
    return float(magnitude[edge].mean()) if edge.any() else float("nan")


def flat_block_share(images: np.ndarray, block: int = FLAT_BLOCK, tolerance: float = FLAT_RANGE) -> float:
    """Share of non-overlapping block x block tiles of the first channel whose max - min is below `tolerance`."""
    grey = images[:, 0]
    n, h, w = grey.shape
    tiles = grey[:, :h - h % block, :w - w % block].reshape(n, h // block, block, w // block, block)
    spread = tiles.max(axis=(2, 4)) - tiles.min(axis=(2, 4))
    return float((spread < tolerance).mean())


def _subsample(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return values if len(values) <= MAX_PIXELS else rng.choice(values, MAX_PIXELS, replace=False)


def compare(real: tuple[np.ndarray, np.ndarray], syn: tuple[np.ndarray, np.ndarray], class_names: list[str],
            seed: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """The measures on (images, masks) of real crops and of synthetic pairs -> (report, what the figure plots)."""
    rng = np.random.default_rng(seed)
    k = len(class_names)
    real_values, syn_values = class_values(*real, k), class_values(*syn, k)
    intensity = {}
    for name, r, s in zip(class_names, real_values, syn_values, strict=True):
        row: dict[str, Any] = {"real_pixels": int(r.size), "synthetic_pixels": int(s.size)}
        if r.size and s.size:
            row.update(real_mean=float(r.mean()), real_std=float(r.std()), synthetic_mean=float(s.mean()),
                       synthetic_std=float(s.std()),
                       wasserstein=float(wasserstein_distance(_subsample(r, rng), _subsample(s, rng))))
        intensity[name] = row
    per_image = {"real": radial_spectra(real[0]), "synthetic": radial_spectra(syn[0])}
    spectra = {side: sp.mean(axis=0) for side, sp in per_image.items()}
    report = {
        "intensity_per_class": intensity,
        "high_frequency_share": {side: high_frequency_share(sp) for side, sp in spectra.items()},
        "boundary_sharpness": {"real": boundary_sharpness(*real), "synthetic": boundary_sharpness(*syn)},
        "flat_block_share": {"real": flat_block_share(real[0]), "synthetic": flat_block_share(syn[0])},
        "noise_like_images": noise_like_share(per_image["real"], per_image["synthetic"]),
        "background_only": {"real": background_only_texture(*real), "synthetic": background_only_texture(*syn)},
    }
    return report, {"values": (real_values, syn_values), "spectra": spectra}


def diagnose(synthetic: str | Path, data: str | None = None, out: str | Path | None = None, max_samples: int = 256,
             seed: int = 0) -> dict[str, Any]:
    """Compare SYN_DIR's pairs with crops of the real labeled pairs; writes OUT/diagnosis.json and .png."""
    if max_samples < 1:
        raise UserError(f"--max-samples {max_samples}: use at least 1")
    syn, _, manifest = load_synthetic(synthetic)
    gan_cfg = GanConfig.from_dict(manifest["gan_config"])
    if gan_cfg.spatial_dims == 3:
        raise UserError(f"--synthetic {synthetic}: diagnose compares 2D pairs; this set holds volumes")
    real = open_source(data or gan_cfg.data)
    if real.num_classes != syn.num_classes or real.in_channels != syn.in_channels:
        raise UserError(f"--data {real.name}: {real.num_classes} classes / {real.in_channels} channels, the synthetic "
                        f"set {syn.num_classes} / {syn.in_channels}; pass the data the generator was trained on")
    split = gan_split(gan_cfg, real)
    n = min(max_samples, len(syn))
    samples = [syn.load(i) for i in range(n)]
    syn_pairs = (np.stack([s.image for s in samples]).astype(np.float32),
                 np.stack([s.mask for s in samples]).astype(np.int64))
    size = syn_pairs[0].shape[-1]
    labeled = list(split.labeled)
    real_pairs = crop_pairs(real, [labeled[k % len(labeled)] for k in range(n)], size, np.random.default_rng(seed))
    report, plotted = compare(real_pairs, syn_pairs, list(real.class_names), seed)
    out = Path(out) if out is not None else Path(synthetic) / "diagnosis"
    out.mkdir(parents=True, exist_ok=True)
    report = {"synthetic": str(synthetic), "data": real.name, "real_crops_from": "labeled pairs of the generator's "
              f"split ({len(split.labeled)})", "n": n, "crop_size": size, **report, "out": str(out)}
    atomic_write_json(out / "diagnosis.json", report)
    _plot(report, plotted, list(real.class_names), out / "diagnosis.png")
    return report


def _plot(report: dict[str, Any], plotted: dict[str, Any], class_names: list[str], path: Path) -> None:
    """Histograms per class (real solid, synthetic dashed), the two spectra, the scalar measures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4))
    bins = np.linspace(0, 1, 65)
    for k, (name, r, s) in enumerate(zip(class_names, *plotted["values"], strict=True)):
        colour = f"C{k}"
        if r.size:
            a.hist(r, bins, density=True, histtype="step", color=colour, label=f"{name} real")
        if s.size:
            a.hist(s, bins, density=True, histtype="step", linestyle="--", color=colour, label=f"{name} synthetic")
    a.set(title="intensity per class", xlabel="grey level", ylabel="density")
    a.legend(fontsize=7)
    for side, style in (("real", "-"), ("synthetic", "--")):
        b.semilogy(plotted["spectra"][side][1:], style, label=side)
    b.set(title="radial power spectrum", xlabel="frequency (cycles per crop)", ylabel="power")
    b.legend()
    names = ["boundary sharpness", "flat 4x4 blocks", "high-frequency share"]
    keys = ["boundary_sharpness", "flat_block_share", "high_frequency_share"]
    x = np.arange(len(names))
    for i, side in enumerate(("real", "synthetic")):
        c.bar(x + (i - 0.5) * 0.4, [report[key][side] for key in keys], 0.4, label=side)
    c.set_xticks(x, names, fontsize=8)
    c.set(title="scalar measures")
    c.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
