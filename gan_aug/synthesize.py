"""Synthetic paired datasets: masks from a mask source -> EMA generator -> HDF5 or PNG folder, built atomically.

Everything is written into `SYN_DIR.tmp-XXXX` beside SYN_DIR and renamed at the end, so an interrupted
run never leaves a SYN_DIR (and the next run removes the temporary folder it left). Samples stream in chunks of `batch_size`: memory does not grow with N.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Protocol

import numpy as np
import torch
from PIL import Image
from torchvision.utils import save_image
from tqdm import tqdm

from ssl_seg.engine import locks
from ssl_seg.data.h5format import H5DatasetWriter
from ssl_seg.data.sample import SampleSource, task_differences
from ssl_seg.data.sources import open_source
from ssl_seg.device import amp_dtype, autocast, cpu_supports_bf16, resolve_device, to_memory_format
from ssl_seg.errors import UserError
from ssl_seg.io_utils import atomic_write_json

from .checkpoint import checkpoint_path, load_gan_checkpoint, load_generator
from .config import GanConfig
from .masks import DeformVolumes, build_mask_source, load_masks
from .networks import one_hot
from .preview import held_out_pairs, plot_preview
from .quality_filter import MaskRecoveryFilter
from .viz import pair_grid
from .volumes import (IMAGES, LABELS, SLICE_NOISE_SHARE, fit_noise_share, modality_names, validation_volumes,
                      write_dataset_json, write_volumes)

log = logging.getLogger(__name__)

FORMATS = ("hdf5", "png", "nifti")
H5_NAME = "synthetic.h5"
_FILES = {"hdf5": {"hdf5": H5_NAME}, "png": {"images": "images", "masks": "masks"},
          "nifti": {"dataset": "dataset.json", "images": IMAGES, "labels": LABELS}}
PREVIEW = 4  # pairs in samples.png: held-out real ones, then generated ones
MAX_TRIES = 20  # the quality filter gives up after this many times --n generated pairs


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


WRITTEN = ".gan-aug-written.json"  # every file a finished synthesize wrote: --overwrite removes only these
MARK = ".gan-aug-synthesize"  # inside the temporary folders of a synthesize run, never in a finished SYN_DIR


def made_by_synthesize(folder: Path) -> bool:
    """Whether `folder` is a synthetic dataset this tool wrote (it holds synthesize's manifest.json)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and {"generator_sha256", "format", "n"} <= set(manifest)


def clean_stale(final: Path) -> list[Path]:
    """Remove `final.tmp-*` / `final.old-*` folders left by a killed synthesize (marked, and unlocked); returns them."""
    stale = [p for pattern in (".tmp-*", ".old-*") for p in final.parent.glob(glob.escape(final.name) + pattern)
             if p.is_dir() and (p / MARK).is_file() and not locks.is_locked(p)]
    for path in stale:
        shutil.rmtree(path)
    return stale


def _marked_tmp(final: Path, kind: str) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f"{final.name}.{kind}-", dir=final.parent))
    (tmp / MARK).write_text("temporary folder of gan-aug synthesize; removed by its next run once unused\n")
    return tmp


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def files_not_written(folder: Path) -> list[str]:
    """Files in a synthesize folder that synthesize did not write (its WRITTEN list; before that list existed, the
    top-level names its manifest names)."""
    present = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() or p.is_symlink())
    try:
        written = set(json.loads((folder / WRITTEN).read_text())) | {WRITTEN}
        return [p for p in present if p not in written]
    except (OSError, ValueError, TypeError):
        manifest = json.loads((folder / "manifest.json").read_text())
        tops = {"manifest.json", "samples.png", *dict(manifest.get("files") or {}).values()}
        return [p for p in present if p.split("/")[0] not in tops]


@contextlib.contextmanager
def atomic_dir(final: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty temp folder `final.tmp-XXXX` beside `final`; rename it onto `final` only on success.

    `overwrite` replaces only a folder synthesize made. The temp folder is marked and locked while in use, so
    a later run removes it when a killed run left it behind.
    """
    if final.exists():
        if not overwrite:
            raise UserError(f"--out {final} already exists; choose a new folder or pass --overwrite")
        if not made_by_synthesize(final):
            raise UserError(f"--overwrite: {final} is not a dataset written by gan-aug synthesize (no manifest.json "
                            "of it), so it is kept; choose another --out or remove it yourself")
        foreign = files_not_written(final)
        if foreign:
            raise UserError(f"--overwrite: {final} also holds {len(foreign)} file(s) synthesize did not write "
                            f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); move them out first "
                            "(nothing was changed)")
    final.parent.mkdir(parents=True, exist_ok=True)
    for path in clean_stale(final):
        log.warning(f"removed {path}, left by a synthesize run that was stopped")
    tmp = _marked_tmp(final, "tmp")
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700 would outlive the rename: the user's umask decides
    lock = locks.acquire(tmp, "synthesize folder")
    try:
        rivals = [p for p in final.parent.glob(glob.escape(final.name) + ".tmp-*")
                  if p != tmp and (p / MARK).is_file() and locks.is_locked(p)]
        if rivals:
            raise UserError(f"--out {final}: another gan-aug synthesize is writing it now ({rivals[0].name}); wait for "
                            "it to finish or choose another --out (nothing was changed)")
        yield tmp
        (tmp / MARK).unlink()
        locks.release(lock)
        written = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file() and p.name != locks.LOCK_NAME)
        atomic_write_json(tmp / WRITTEN, written)
        if final.exists() and not overwrite:
            raise UserError(f"--out {final} was written by another process while this one ran; it is kept and this "
                            "run's pairs are dropped: rerun with another --out")
        if final.exists():  # overwrite: move the old folder aside first, delete it after the swap
            old = _marked_tmp(final, "old")
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            os.replace(tmp, final)
    finally:
        locks.release(lock)
        if tmp.exists():
            shutil.rmtree(tmp)


class _PairWriter(Protocol):
    def append(self, images: np.ndarray, masks: np.ndarray, ids: list[str]) -> None: ...


class _PngWriter:
    """images/<id>.png (8-bit gray or RGB) and masks/<id>.png (class indices), the layout FolderSource reads."""

    def __init__(self, root: Path, channels: int):
        if channels not in (1, 3):
            raise UserError(f"--format png stores 1- or 3-channel images, this GAN makes {channels}; use --format hdf5")
        self.images, self.masks = root / "images", root / "masks"
        self.images.mkdir()
        self.masks.mkdir()

    def append(self, images: np.ndarray, masks: np.ndarray, ids: list[str]) -> None:
        """images (n, C, H, W) in [0, 1], masks (n, H, W) ints."""
        pixels = (images * 255 + 0.5).astype(np.uint8)
        for image, mask, sample_id in zip(pixels, masks.astype(np.uint8), ids):
            Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)).save(
                self.images / f"{sample_id}.png")
            Image.fromarray(mask).save(self.masks / f"{sample_id}.png")


class _H5Writer:
    """Adapter: H5DatasetWriter.append with case = id (every synthetic pair is its own case)."""

    def __init__(self, writer: H5DatasetWriter):
        self.writer = writer

    def append(self, images: np.ndarray, masks: np.ndarray, ids: list[str]) -> None:
        """images (n, C, H, W) in [0, 1], masks (n, H, W) ints."""
        self.writer.append(images, masks, ids, ids)


def inference_dtype(device: torch.device, amp: str) -> torch.dtype | None:
    """amp_dtype, except that 'auto' on a CPU with native bf16 generates in bf16 (inference only).

    Measured side by side on this 2-core AVX512-BF16 CPU (128 px U-Net generator, batch 32): 1.6x the pairs/s
    of float32; the images differ from float32's by 0.0014 on average (same seed), below one 8-bit grey level.
    """
    if amp == "auto" and device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return amp_dtype(device, amp)


def synthesize(checkpoint: str | Path, n: int, out: str | Path, mask_source: str = "deform", seed: int = 0,
               fmt: str = "hdf5", batch_size: int = 32, device: str = "auto", amp: str = "auto",
               mask_data: str | None = None, overwrite: bool = False, progress: bool = True,
               slice_noise_share: float | str = SLICE_NOISE_SHARE, filter_run: str | None = None,
               filter_dice: float | None = None, filter_quantile: float = 0.1,
               sample_steps: int | None = None) -> dict[str, Any]:
    """Write `n` (mask, generated image) pairs to `out` (synthetic.h5 or images/+masks/, manifest.json, samples.png);
    returns the manifest. `mask_data`: masks from another DATA (default: the GAN's labeled masks). A volume GAN writes
    `n` volumes (--format nifti) whose slices share `slice_noise_share` of their noise ("auto": fitted to the GAN's
    validation volumes). With `filter_run`, only pairs its segmenter recovers are kept (quality_filter.py).
    `sample_steps`: a diffusion generator's DDIM steps (default: those it was trained to validate with)."""
    _check_options(n, batch_size, fmt, slice_noise_share)
    dev = resolve_device(device)
    ckpt_file = checkpoint_path(checkpoint)
    ckpt = load_gan_checkpoint(ckpt_file, map_location=dev)
    cfg, info = GanConfig.from_dict(ckpt["config"]), ckpt["info"]
    volumes = cfg.spatial_dims == 3
    _check_volume_options(fmt, volumes, mask_source, ckpt_file)
    generator = to_memory_format(load_generator(ckpt, dev), dev, cfg.channels_last)
    _set_sample_steps(generator, sample_steps, cfg.generator, ckpt_file)
    num_classes, channels, size = info["num_classes"], info["in_channels"], cfg.patch_size
    masks_from = mask_data or cfg.data
    masks, source, ids = _mask_stream(ckpt, cfg, mask_source, mask_data, seed)
    if filter_run is not None and volumes:
        raise UserError("--filter-run scores 2D pairs; a GAN trained on volumes writes volumes: drop --filter-run")
    quality = MaskRecoveryFilter(filter_run, num_classes, dev, filter_dice, filter_quantile) if filter_run else None
    dtype = inference_dtype(dev, amp)
    torch.manual_seed(seed)  # dropout / noise channel of the generator
    out = Path(out)
    manifest: dict[str, Any] = {
        "format": fmt, "n": n, "seed": seed, "mask_source": mask_source, "mask_data": masks_from,
        "generator_checkpoint": str(ckpt_file.resolve()), "generator_sha256": sha256_file(ckpt_file),
        "generator_step": ckpt["step"], "gan_config": ckpt["config"], "num_classes": num_classes,
        "class_names": info["class_names"], "in_channels": channels, "image_size": [size, size],
        "files": _FILES[fmt], "sample_steps": getattr(generator, "sample_steps", None),
    }
    with atomic_dir(out, overwrite) as tmp, contextlib.ExitStack() as stack:
        t0 = time.perf_counter()
        if volumes:
            assert source is not None
            counts, preview = _write_volume_set(tmp, generator, masks, source, ids, cfg, manifest, slice_noise_share,
                                                batch_size, dev, dtype, progress)
        else:
            writer = _pair_writer(tmp, stack, manifest)
            counts, preview, rejected = _generate(generator, iter(masks), writer, n, batch_size, num_classes, dev,
                                                  dtype, cfg.channels_last, progress, quality)
            if quality is not None:
                manifest["quality_filter"] = {"run": str(Path(filter_run).resolve()), **quality.report.as_dict()}
                if rejected is not None:  # what the filter refused, beside what it kept (samples.png)
                    save_image(pair_grid(*map(torch.from_numpy, rejected), per_row=4), tmp / "rejected.png")
        seconds = time.perf_counter() - t0
        stack.close()  # the HDF5 file is complete (renamed into tmp) before the folder is
        real = held_out_pairs(generator, cfg, num_classes, dev, k=PREVIEW)
        plot_preview({**real, "syn_mask": preview[0][:PREVIEW], "syn_image": preview[1][:PREVIEW]},
                     info["class_names"], mask_source, tmp / "samples.png")
        manifest.update({"class_pixel_frequency": dict(zip(info["class_names"], (counts / counts.sum()).tolist())),
                         "mask_fallbacks": getattr(masks, "fallbacks", 0), "seconds": seconds,
                         "dtype": str(dtype or torch.float32).removeprefix("torch."),
                         "throughput_pairs_per_s": n / max(seconds, 1e-9), "device": str(dev),
                         "created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        atomic_write_json(tmp / "manifest.json", manifest)
    return manifest


def _pair_writer(tmp: Path, stack: contextlib.ExitStack, manifest: dict[str, Any]) -> _PairWriter:
    """The writer of the manifest's format in `tmp`: synthetic.h5 (closed by `stack`) or images/ + masks/."""
    channels, (size, _) = manifest["in_channels"], manifest["image_size"]
    if manifest["format"] == "png":
        return _PngWriter(tmp, channels)
    h5 = H5DatasetWriter(tmp / H5_NAME, channels, size, size, manifest["num_classes"], manifest["class_names"],
                         {"tool": "gan-aug synthesize", "seed": manifest["seed"], "mask_source": manifest["mask_source"],
                          "generator_sha256": manifest["generator_sha256"]})
    return _H5Writer(stack.enter_context(h5))


def _write_volume_set(tmp: Path, generator: torch.nn.Module, masks: Iterable, source: SampleSource, ids: list[str],
                      cfg: GanConfig, manifest: dict[str, Any], slice_noise_share: float | str, batch_size: int,
                      device: torch.device, dtype: torch.dtype | None, progress: bool
                      ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Write manifest["n"] volumes (NIfTI, the labeled volumes' affines) and their dataset.json into `tmp`, the slice
    noise share fitted when "auto"; returns class pixel counts and preview slices (the share goes into `manifest`)."""
    n, num_classes = manifest["n"], manifest["num_classes"]
    affines = [source.affine[source.cases[source.index_of(i)]] for i in ids]  # type: ignore[attr-defined]
    share = slice_noise_share
    if share == "auto":
        fit = fit_noise_share(generator, validation_volumes(cfg), num_classes, batch_size, device, dtype,
                              cfg.channels_last)
        share, manifest["slice_noise_fit"] = fit["share"], fit
    counts, preview = write_volumes(tmp, generator, iter(masks), affines, n, manifest["seed"], float(share),
                                    batch_size, num_classes, device, dtype, cfg.channels_last, cfg.patch_size,
                                    progress)
    manifest["slice_noise_share"] = share
    write_dataset_json(tmp, n, manifest["class_names"], modality_names(source),  # type: ignore[arg-type]
                       f"gan-aug synthesize: {n} volumes of the generator {manifest['generator_checkpoint']}, masks: "
                       f"slice-consistent deform of the labeled masks of {manifest['mask_data']}, seed "
                       f"{manifest['seed']}")
    return counts, preview


def _mask_stream(ckpt: dict[str, Any], cfg: GanConfig, mask_source: str, mask_data: str | None, seed: int
                 ) -> tuple[Iterable, SampleSource | None, list[str]]:
    """(new masks, the source they are made from, its ids): from the GAN's labeled masks, or `mask_data`'s (checked
    to be the same task), or the phantom oracle; volumes for a GAN trained on volumes."""
    info, masks_from = ckpt["info"], mask_data or cfg.data
    if mask_data is not None:
        differ = task_differences(info, open_source(mask_data, cfg.spatial_dims))
        if differ:
            raise UserError(f"--mask-data {mask_data}: another task than the GAN's data {cfg.data} "
                            f"({'; '.join(differ)}); take masks of the same classes")
    source, labeled, ids = None, None, []
    if mask_source != "phantom":
        source = open_source(masks_from, cfg.spatial_dims)
        ids = ckpt["labeled_ids"] if mask_data is None else list(source.ids)
        labeled = load_masks(source, ids)
    if cfg.spatial_dims == 3:
        return DeformVolumes(labeled, seed), source, ids  # type: ignore[arg-type]
    return build_mask_source(mask_source, data=masks_from, num_classes=info["num_classes"], size=cfg.patch_size,
                             seed=seed, masks=labeled), source, ids


def _check_options(n: int, batch_size: int, fmt: str, slice_noise_share: float | str) -> None:
    """Counts at least 1, a known format, a slice noise share that is 'auto' or in [0, 1]."""
    if n < 1 or batch_size < 1:
        raise UserError(f"--n {n} / --batch-size {batch_size}: both must be at least 1")
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: use one of {', '.join(FORMATS)}")
    if slice_noise_share != "auto" and not (isinstance(slice_noise_share, (int, float))
                                            and 0 <= slice_noise_share <= 1):
        raise UserError(f"--slice-noise-share {slice_noise_share}: must be 'auto' or in [0, 1]")


def _set_sample_steps(generator: torch.nn.Module, steps: int | None, kind: str, ckpt_file: Path) -> None:
    """Give a diffusion generator `steps` DDIM steps; refuse steps for a generator that samples in one pass."""
    if steps is None:
        return
    if not hasattr(generator, "sample_steps"):
        raise UserError(f"--sample-steps {steps}: {ckpt_file} holds a '{kind}' generator, which samples in one pass; "
                        "drop --sample-steps (it is for --generator diffusion)")
    if not 1 <= steps <= 1000:
        raise UserError(f"--sample-steps {steps}: must be in [1, 1000], e.g. 50")
    generator.sample_steps = steps


def _check_volume_options(fmt: str, volumes: bool, mask_source: str, ckpt_file: Path) -> None:
    """--format nifti exactly for GANs trained on volumes, whose masks come from `deform`."""
    if fmt == "nifti" and not volumes:
        raise UserError(f"--format nifti writes volumes but {ckpt_file} is a GAN trained on 2D images; use "
                        "--format hdf5 or png, or train the GAN on volume data with --spatial-dims 3")
    if volumes and fmt != "nifti":
        raise UserError(f"--format {fmt}: {ckpt_file} was trained on volumes (--spatial-dims 3), so it makes "
                        "volumes; use --format nifti")
    if volumes and mask_source != "deform":
        raise UserError(f"--mask-source {mask_source}: volumes take 'deform' only (one warp per volume, alike on "
                        "every slice); drop --mask-source")


@torch.no_grad()
def _generate(generator: torch.nn.Module, masks: Iterator[np.ndarray], writer: _PairWriter, n: int, batch_size: int,
              num_classes: int, device: torch.device, dtype: torch.dtype | None, channels_last: bool,
              progress: bool, quality: MaskRecoveryFilter | None = None
              ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """Stream `n` pairs into `writer` (with `quality`, only pairs it keeps, trying at most MAX_TRIES * n); returns
    class pixel counts (K,), the first PREVIEW (masks, images) written and, when filtering, the first rejected ones."""
    counts = np.zeros(num_classes, np.int64)
    preview: tuple[np.ndarray, np.ndarray] | None = None
    rejected: tuple[np.ndarray, np.ndarray] | None = None
    written, tried = 0, 0
    with tqdm(total=n, desc="synthesize", disable=not progress, dynamic_ncols=True) as bar:
        while written < n:
            if quality is not None and tried >= MAX_TRIES * n:
                raise UserError(f"--filter-run: the filter kept {written} of {tried} pairs (Dice >= "
                                f"{quality.report.threshold:.3f}), short of --n {n}; lower --filter-quantile or "
                                "--filter-dice, or train the generator longer (nothing was written)")
            size = batch_size if quality is not None else min(batch_size, n - written)  # filtering: full batches
            batch = np.stack([next(masks) for _ in range(size)])  # (b, S, S)
            x = to_memory_format(one_hot(torch.from_numpy(batch).to(device), num_classes), device, channels_last)
            with autocast(device, dtype):
                fake = generator(x)  # (b, C, S, S) in [-1, 1]
            images = ((fake.float() + 1) / 2).clamp(0, 1).cpu().numpy()
            tried += len(batch)
            if quality is not None:
                keep = quality.keep(images, batch)
                if rejected is None and not keep.all():
                    rejected = (batch[~keep][:PREVIEW].copy(), images[~keep][:PREVIEW].copy())
                batch, images = batch[keep][: n - written], images[keep][: n - written]
                if not len(batch):
                    continue
            writer.append(images, batch, [f"syn_{i:07d}" for i in range(written, written + len(batch))])
            counts += np.bincount(batch.ravel(), minlength=num_classes)[:num_classes]
            if preview is None:
                preview = (batch[:PREVIEW].copy(), images[:PREVIEW].copy())
            written += len(batch)
            bar.update(len(batch))
    assert preview is not None
    return counts, preview, rejected
