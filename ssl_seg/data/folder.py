"""PNG / JPEG / TIFF / BMP folders: DIR/images/ + DIR/masks/ (+ optional DIR/roi/), and the image decoding that
training and prediction share (`read_image`)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from ..errors import UserError
from . import mask_scheme
from .mask_scheme import MaskStats
from .sample import IndexedSource, Sample, nothing_to_segment

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")  # training and prediction alike
_GRAY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
_MASK_MODES = {"1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N"}


class FolderSource(IndexedSource):
    """Pairs DIR/images/<stem>.<png|jpg|jpeg|tif|tiff|bmp> + DIR/masks/<stem>.png, optional DIR/roi/<stem>.png.

    Masks are binary {0, 255} (255 -> class 1) or class indices 0..K-1, decided strictly once over all masks
    (see mask_scheme; DIR/classes.json may name the classes). 16-bit images are scaled by their bit range. Gray and RGB images may be mixed (gray is then repeated to RGB); sizes may differ. Case id = stem.
    """

    def __init__(self, root: str | Path, name: str | None = None, require_foreground: bool = True):
        self.root = Path(root)
        self.name = name if name is not None else str(root)
        if not self.root.is_dir():
            raise UserError(f"{self.root}: folder not found; give a folder holding images/ and masks/")
        images_dir, masks_dir, roi_dir = self.root / "images", self.root / "masks", self.root / "roi"
        for folder in (images_dir, masks_dir):
            if not folder.is_dir():
                raise UserError(f"{folder}: folder missing; an image folder dataset needs "
                                f"{self.root}/images/<stem>.png and {self.root}/masks/<stem>.png")
        images = _files_by_stem(images_dir, IMAGE_SUFFIXES)
        if not images:
            raise UserError(f"{images_dir}: no images ({' '.join(IMAGE_SUFFIXES)}); put the images there")
        masks = _files_by_stem(masks_dir, (".png",))
        rois = _files_by_stem(roi_dir, (".png",)) if roi_dir.is_dir() else None
        _check_pairs(images, masks, masks_dir, "mask")
        if rois is not None:
            _check_pairs(images, rois, roi_dir, "roi")
        self.ids = sorted(images)
        self.cases = list(self.ids)
        self._image_paths = [images[s] for s in self.ids]
        self._mask_paths = [masks[s] for s in self.ids]
        self._roi_paths = [rois[s] for s in self.ids] if rois is not None else None
        self._index_ids()
        self.notes: list[str] = []  # facts about the data a run should record (e.g. how 16-bit images are scaled)
        sizes, channels = self._scan_images()
        self.in_channels = max(channels)
        stats = MaskStats()
        for path, image_path, size in zip(self._mask_paths, self._image_paths, sizes):
            mask = _read_mask(path)
            _check_size(path, mask.shape, image_path, size)
            stats.add(mask, path)
        if require_foreground and not any(stats.values):
            raise nothing_to_segment(masks_dir)
        self.class_names, self._binary = mask_scheme.decide(stats, masks_dir, mask_scheme.stated_classes(self.root))
        self.num_classes = len(self.class_names)

    def _scan_images(self) -> tuple[list[tuple[int, int]], list[int]]:
        """Image headers (H, W, channels), complete files, ROI sizes; the value range of 16-bit images."""
        sizes, channels, high16 = [], [], 0
        for i, path in enumerate(self._image_paths):
            _check_complete(path, "image")
            with _open(path, "image") as im:
                if getattr(im, "n_frames", 1) > 1:
                    raise UserError(f"{path}: multi-page image ({im.n_frames} pages); save one 2D image per file")
                sizes.append((im.height, im.width))
                channels.append(1 if im.mode in _GRAY_MODES else 3)
                if im.mode.startswith("I;16"):
                    im.load()
                    high16 = max(high16, int(np.asarray(im).max()))
            if self._roi_paths is not None:
                _check_complete(self._roi_paths[i], "roi")
                with _open(self._roi_paths[i], "roi") as roi:
                    _check_size(self._roi_paths[i], (roi.height, roi.width), path, sizes[-1])
        self._scale16 = float(2 ** max(high16.bit_length(), 8) - 1)
        if high16 and self._scale16 < 65535:
            self.notes.append(f"{self.root / 'images'}: 16-bit images hold values up to {high16}, so they are "
                              f"scaled by {self._scale16:.0f} ({high16.bit_length()}-bit range), not 65535")
        return sizes, channels

    def files(self, index: int) -> dict[str, Path]:
        """Files of pair `index` by subfolder: images, masks and, when the folder has one, roi."""
        files = {"images": self._image_paths[index], "masks": self._mask_paths[index]}
        if self._roi_paths is not None:
            files["roi"] = self._roi_paths[index]
        return files

    def load(self, index: int) -> Sample:
        """Read pair `index`: image (C, H, W) float32 in [0, 1], mask (H, W) int64, roi (H, W) bool or None."""
        path = self._image_paths[index]
        image = read_image(path, self.in_channels, self._scale16)
        mask = _read_mask(self._mask_paths[index])
        mask = (mask == 255) if self._binary else mask
        roi = None
        if self._roi_paths is not None:
            with _open(self._roi_paths[index], "roi", decode=True) as r:
                roi = np.asarray(r.convert("L")) > 0
        return Sample(image=image, mask=mask.astype(np.int64), id=self.ids[index], case=self.cases[index], roi=roi)


def _files_by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """{stem: path} of the files in `folder` with one of `suffixes` (case-insensitive); duplicate stems refused."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith("."):
            if path.stem in found:
                raise UserError(f"{path}: stem '{path.stem}' also used by {found[path.stem].name}; "
                                "keep one file per stem")
            found[path.stem] = path
    return found


def _check_pairs(images: dict[str, Path], others: dict[str, Path], folder: Path, what: str) -> None:
    """Every image has a mask/roi and every mask/roi has an image."""
    for stem in images:
        if stem not in others:
            raise UserError(f"{images[stem]}: no {what} {folder / (stem + '.png')}; add it or remove the image")
    for stem in others:
        if stem not in images:
            raise UserError(f"{others[stem]}: {what} without an image (no {folder.parent / 'images' / stem}.*); "
                            f"add the image or remove the {what}")


def _check_size(path: Path, shape: tuple[int, ...], image_path: Path, image_shape: tuple[int, int]) -> None:
    if tuple(shape) != tuple(image_shape):
        raise UserError(f"{path}: size {shape[0]}x{shape[1]} (HxW) differs from {image_path.name} "
                        f"{image_shape[0]}x{image_shape[1]}; masks/rois must match their image")


@contextlib.contextmanager
def _open(path: Path, what: str, decode: bool = False) -> Iterator[Image.Image]:
    """Open an image file with PIL (decoding it if asked); any failure is a UserError naming the file."""
    image = None
    try:
        image = Image.open(path)
        if decode:
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if image is not None:
            image.close()
        raise UserError(f"{path}: cannot read {what} ({e}); the file is corrupt or not an image; "
                        "re-export it") from None
    try:
        yield image
    finally:
        image.close()


def _read_mask(path: Path) -> np.ndarray:
    """Decode a single-channel mask to an (H, W) integer array."""
    with _open(path, "mask", decode=True) as im:
        if im.mode not in _MASK_MODES:
            raise UserError(f"{path}: mask is not 2D (mode {im.mode}, {len(im.getbands())} channels); save masks as "
                            "single-channel 8-bit PNGs of class values")
        mask = np.asarray(im).astype(np.int64)
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise UserError(f"{path}: mask values [{mask.min()}, {mask.max()}] outside 0..255; at most 256 classes")
    return mask


def _check_complete(path: Path, what: str) -> None:
    """A PNG must end with its IEND chunk and a JPEG with its end marker: a cheap test for truncated files."""
    suffix = path.suffix.lower()
    if suffix not in (".png", ".jpg", ".jpeg"):
        return
    with open(path, "rb") as f:
        f.seek(0, 2)
        f.seek(max(f.tell() - 1024, 0))
        tail = f.read()
    complete = tail.endswith(b"IEND\xaeB`\x82") if suffix == ".png" else b"\xff\xd9" in tail
    if not complete:
        raise UserError(f"{path}: the {what} file is truncated (its end is missing); copy or re-export it")


def read_image(path: Path, channels: int | None = None, scale16: float = 65535.0) -> np.ndarray:
    """An image file -> (C, H, W) float32 in [0, 1], as training and prediction both read it.

    With `channels`, gray is repeated to that many channels and RGB averaged to gray; other mismatches are refused.
    """
    with _open(path, "image", decode=True) as im:
        image = _image_array(im, path, scale16)
    if channels is None or image.shape[0] == channels:
        return image
    if channels == 1:
        return image.mean(0, keepdims=True)
    if image.shape[0] == 1:
        return np.repeat(image, channels, axis=0)
    raise UserError(f"{path}: {image.shape[0]} channels but the model expects {channels}")


def _image_array(im: Image.Image, path: Path, scale16: float = 65535.0) -> np.ndarray:
    """PIL image -> (C, H, W) float32 in [0, 1]: RGBA/palette/CMYK -> RGB, gray+alpha -> gray; 16-bit / scale16."""
    if im.mode in ("LA", "La"):
        im = im.convert("L")
    elif im.mode not in _GRAY_MODES and im.mode != "RGB":
        im = im.convert("RGB")
    a = np.asarray(im)
    if a.dtype == np.bool_:
        a = a.astype(np.float32)
    elif a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        a = np.minimum(a.astype(np.float32) / scale16, 1.0)
    else:
        a = minmax(a, path)
    return a[None] if a.ndim == 2 else np.ascontiguousarray(a.transpose(2, 0, 1))


def minmax(a: np.ndarray, path: Path | str) -> np.ndarray:
    """Scale to [0, 1] by the array's own min and max (a constant array -> zeros), as float32."""
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise UserError(f"{path}: image contains NaN or infinite values; fix or re-export it")
    lo, hi = a.min(), a.max()
    return ((a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)).astype(np.float32)
