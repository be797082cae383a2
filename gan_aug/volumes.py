"""Synthetic volumes: slice-consistent new masks -> the 2D generator slice by slice with one noise draw per
volume -> an MSD / nnU-Net folder (dataset.json, imagesTr/, labelsTr/) that `open_source(DIR, spatial_dims=3)`
reads.

Why slice-wise and not a 3D pix2pix: the cheaper path, at a 2D network's cost per slice, and its through-plane
statistics come near the real ones once the right part of the noise is shared: on hippocampus3d validation volumes
(1 mm MRI) adjacent-slice correlation 0.84 at share 0.9 against 0.86 real and 0.53 for independent slices, while
the phantom, whose voxel noise is independent, is matched by share 0 (benchmarks/volume_gan.py, RESULTS.md
"Synthetic volumes"). So the share is fitted per GAN by default ("auto": the share whose volumes match the real
validation volumes' adjacent-slice correlation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from tqdm import tqdm

from ssl_seg.data.nifti_writer import write_nifti
from ssl_seg.data.volumes import VolumeSource, to_file_axes
from ssl_seg.device import autocast, to_memory_format
from ssl_seg.io_utils import atomic_write_json

from .config import GanConfig
from .data import centre_crop, gan_source, gan_split
from .networks import one_hot, shared_noise

IMAGES, LABELS = "imagesTr", "labelsTr"
SLICE_NOISE_SHARE = "auto"  # the share of the generator noise common to a volume's slices: fitted per GAN
SHARES = (0.0, 0.25, 0.5, 0.7, 0.8, 0.9, 1.0)  # the shares "auto" chooses from
FIT_VOLUMES = 4  # validation volumes "auto" fits on, at most


def adjacent_correlation(image: np.ndarray) -> float:
    """Mean Pearson correlation of adjacent slices of image (D, H, W) (constant slices skipped)."""
    r = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(image[:-1], image[1:]) if a.std() and b.std()]
    return float(np.mean(r)) if r else float("nan")


def validation_volumes(cfg: GanConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to FIT_VOLUMES (image (C, D, H, W), mask (D, H, W)) volumes of the GAN split's validation cases (its
    labeled ones when it has none): the real volumes "auto" matches."""
    source = gan_source(cfg)
    split = gan_split(cfg, source)
    samples = [source.load(source.index_of(i)) for i in (split.val or split.labeled)[:FIT_VOLUMES]]
    return [(s.image, s.mask) for s in samples]


def fit_noise_share(generator: torch.nn.Module, volumes: list[tuple[np.ndarray, np.ndarray]], num_classes: int,
                    batch_size: int, device: torch.device, dtype: torch.dtype | None,
                    channels_last: bool) -> dict[str, Any]:
    """The share in SHARES whose volumes, generated from the real masks of `volumes` ((image (C, D, H, W),
    mask (D, H, W)) pairs), have the adjacent-slice correlation nearest the real images'; with the scores."""
    real = float(np.nanmean([adjacent_correlation(image[0]) for image, _ in volumes]))
    generated = {}
    for share in SHARES:
        generated[share] = float(np.nanmean([
            adjacent_correlation(generate_volume(generator, mask, num_classes, share, v, batch_size, device, dtype,
                                                 channels_last)[0]) for v, (_, mask) in enumerate(volumes)]))
    best = min(SHARES, key=lambda s: abs(generated[s] - real))
    return {"share": best, "real_adjacent_corr": real, "generated_adjacent_corr": {str(s): c for s, c in
                                                                                  generated.items()}}


@torch.no_grad()
def generate_volume(generator: torch.nn.Module, mask: np.ndarray, num_classes: int, share: float, noise_seed: int,
                    batch_size: int, device: torch.device, dtype: torch.dtype | None,
                    channels_last: bool) -> np.ndarray:
    """Image (C, D, H, W) in [0, 1] for mask (D, H, W): its slices in chunks of `batch_size`; a `share` of the
    generator's noise is common to all slices (the same seeded draw in every chunk), the rest is their own."""
    chunks = []
    for start in range(0, mask.shape[0], batch_size):
        with shared_noise(generator, share, noise_seed):
            part = torch.from_numpy(mask[start:start + batch_size]).to(device)  # (b, H, W)
            x = to_memory_format(one_hot(part, num_classes), device, channels_last)  # (b, K, H, W)
            with autocast(device, dtype):
                fake = generator(x)  # (b, C, H, W) in [-1, 1]
            chunks.append(((fake.float() + 1) / 2).clamp(0, 1).cpu().numpy())
    return np.concatenate(chunks).transpose(1, 0, 2, 3)  # (C, D, H, W)


def write_volumes(folder: Path, generator: torch.nn.Module, masks: Iterator[tuple[int, np.ndarray]],
                  affines: list[np.ndarray], n: int, seed: int, share: float, batch_size: int, num_classes: int,
                  device: torch.device, dtype: torch.dtype | None, channels_last: bool, preview_size: int,
                  progress: bool) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Write `n` volumes as folder/imagesTr/syn_XXXXXXX.nii.gz and labelsTr/ (mask k of `masks` gets
    affines[k], its source case's voxel-to-mm map); returns class voxel counts (K,) and, for the preview, the
    middle slices of the first 4 volumes cut to `preview_size` (masks (4, S, S), images (4, C, S, S))."""
    counts = np.zeros(num_classes, np.int64)
    preview_masks, preview_images = [], []
    for v in tqdm(range(n), desc="synthesize", disable=not progress, dynamic_ncols=True):
        k, mask = next(masks)
        noise_seed = int(np.random.default_rng([seed, v]).integers(2**62))
        image = generate_volume(generator, mask, num_classes, share, noise_seed, batch_size, device, dtype,
                                channels_last)
        name = f"syn_{v:07d}.nii.gz"
        channels_last_file = np.moveaxis(to_file_axes(image), 0, -1)  # (X, Y, Z, C)
        write_nifti(folder / IMAGES / name, channels_last_file[..., 0] if image.shape[0] == 1 else channels_last_file,
                    affines[k])
        write_nifti(folder / LABELS / name, to_file_axes(mask.astype(np.uint8)), affines[k])
        counts += np.bincount(mask.ravel(), minlength=num_classes)[:num_classes]
        if v < 4:
            preview_masks.append(centre_crop(mask[mask.shape[0] // 2], preview_size))
            preview_images.append(centre_crop(image[:, mask.shape[0] // 2], preview_size))
    return counts, (np.stack(preview_masks), np.stack(preview_images))



def write_dataset_json(folder: Path, n: int, class_names: list[str], modalities: list[str], description: str) -> None:
    """folder/dataset.json in the MSD layout for the `n` volumes `write_volumes` wrote."""
    cases = [f"syn_{v:07d}.nii.gz" for v in range(n)]
    atomic_write_json(folder / "dataset.json", {
        "name": "gan-aug synthetic volumes", "description": description,
        "tensorImageSize": "3D" if len(modalities) == 1 else "4D",
        "modality": {str(c): name for c, name in enumerate(modalities)},
        "labels": {str(k): name for k, name in enumerate(class_names)},
        "numTraining": n,
        "training": [{"image": f"./{IMAGES}/{c}", "label": f"./{LABELS}/{c}"} for c in cases],
        "test": [],
    })


def modality_names(source: VolumeSource) -> list[str]:
    """The source's modality names (MSD / nnU-Net folders), else channel_0, channel_1, ..."""
    names = getattr(source, "modalities", None)
    return list(names) if names else [f"channel_{c}" for c in range(source.in_channels)]
