"""The project's HDF5 dataset format: a streaming, atomic writer and a lazily opened SampleSource.

One file holds N samples of one size: `images` (N, C, H, W) float32 in [0, 1] chunked per sample,
`masks` (N, H, W) uint8, `ids` and `cases` (N,) UTF-8 strings, optional `rois` (N, H, W) uint8, and the
attributes `format`, `format_version`, `num_classes`, `class_names` and `provenance` (JSON strings).
A file of volumes holds `images` (N, C, D, H, W), masks and rois (N, D, H, W), and the attribute `spacing`
(JSON [D, H, W] mm, shared by its volumes); it is read with --spatial-dims 3 (ssl_seg/data/volumes.py).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import UserError
from ..io_utils import atomic_path
from .nifti_writer import volume_affine
from .sample import IndexedSource, Sample, SampleSource
from .volumes import VolumeSource

FORMAT = "medseg-lab-h5"
FORMAT_VERSION = 1
REQUIRED_DATASETS = ("images", "masks", "ids", "cases")
_STR = h5py.string_dtype("utf-8")


class H5DatasetWriter:
    """Stream samples into a project HDF5 file; it appears under `path` only when the `with` block succeeds.

    Example::

        with H5DatasetWriter("pairs.h5", 1, 64, 64, 2, ["background", "lesion"], {"by": "me"}) as w:
            w.append(images, masks, ids, cases)  # (n, 1, 64, 64) float32, (n, 64, 64) ints, n names each
    """

    def __init__(self, path: str | os.PathLike, channels: int, height: int, width: int, num_classes: int,
                 class_names: list[str], provenance: dict[str, Any], depth: int | None = None,
                 spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)):
        if len(class_names) != num_classes:
            raise UserError(f"{path}: {len(class_names)} class names for {num_classes} classes; "
                            "give one name per class")
        if not 1 <= num_classes <= 256:
            raise UserError(f"{path}: num_classes must be 1..256 (masks are stored as uint8), got {num_classes}")
        self.path = Path(path)
        self.spatial = (height, width) if depth is None else (depth, height, width)
        self.shape = (channels, *self.spatial)
        self.num_classes = num_classes
        self._attrs = {"format": FORMAT, "format_version": FORMAT_VERSION, "num_classes": num_classes,
                       "class_names": json.dumps(list(class_names)), "provenance": json.dumps(provenance)}
        if depth is not None:
            self._attrs["spacing"] = json.dumps([float(s) for s in spacing])
        self._stack: contextlib.ExitStack | None = None
        self._file: h5py.File | None = None
        self._ids: set[str] = set()
        self._has_rois: bool | None = None
        self.count = 0

    def __enter__(self) -> "H5DatasetWriter":
        with contextlib.ExitStack() as stack:  # a failure here unwinds it: the temporary file is removed
            tmp = stack.enter_context(atomic_path(self.path))
            self._file = h5py.File(tmp, "w")
            stack.callback(self._file.close)  # runs before atomic_path's rename (last in, first out)
            shape, spatial = self.shape, self.spatial
            self._file.create_dataset("images", (0, *shape), np.float32, maxshape=(None, *shape), chunks=(1, *shape))
            self._file.create_dataset("masks", (0, *spatial), np.uint8, maxshape=(None, *spatial),
                                      chunks=(1, *spatial), compression="gzip", compression_opts=1)
            for key in ("ids", "cases"):
                self._file.create_dataset(key, (0,), _STR, maxshape=(None,), chunks=(1024,))
            self._file.attrs.update(self._attrs)
            self._stack = stack.pop_all()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._stack is not None
        if exc_type is None and self.count == 0:
            empty = UserError(f"{self.path}: no samples were written; the source is empty")
            self._stack.__exit__(UserError, empty, None)  # closes and removes the temporary file
            raise empty
        self._stack.__exit__(exc_type, exc, tb)

    def append(self, images: np.ndarray, masks: np.ndarray, ids: list[str], cases: list[str],
               rois: np.ndarray | None = None) -> None:
        """Append n samples: images (n, C, *S) float in [0, 1], masks (n, *S) ints < K, rois (n, *S) or None."""
        if self._file is None:
            raise RuntimeError("H5DatasetWriter.append called outside its `with` block")
        images, masks = np.asarray(images, dtype=np.float32), np.asarray(masks)
        n = self._check(images, masks, ids, cases, rois)
        start = self.count
        for key, data in (("images", images), ("masks", masks.astype(np.uint8)),
                          ("ids", np.array(ids, dtype=object)), ("cases", np.array(cases, dtype=object))):
            self._file[key].resize(start + n, axis=0)
            self._file[key][start:] = data
        if rois is not None:
            if "rois" not in self._file:
                spatial = self.spatial
                self._file.create_dataset("rois", (0, *spatial), np.uint8, maxshape=(None, *spatial),
                                          chunks=(1, *spatial), compression="gzip", compression_opts=1)
            self._file["rois"].resize(start + n, axis=0)
            self._file["rois"][start:] = np.asarray(rois).astype(bool).astype(np.uint8)
        self._ids.update(ids)
        self._has_rois = rois is not None
        self.count += n

    def _check(self, images: np.ndarray, masks: np.ndarray, ids: list[str], cases: list[str],
               rois: np.ndarray | None) -> int:
        """Validate one append; returns n."""
        where, shape = self.path, self.shape
        if images.ndim != len(shape) + 1 or images.shape[1:] != shape:
            raise UserError(f"{where}: images of shape {images.shape} do not match the file's (n, "
                            f"{', '.join(map(str, shape))}); resize/convert them or write a separate file")
        n = images.shape[0]
        expected = (n, *self.spatial)
        if masks.shape != expected:
            raise UserError(f"{where}: masks of shape {masks.shape} do not match images {images.shape}; "
                            f"expected {expected}")
        if rois is not None and np.shape(rois) != expected:
            raise UserError(f"{where}: rois of shape {np.shape(rois)} do not match images; expected {expected}")
        if self._has_rois is not None and self._has_rois != (rois is not None):
            raise UserError(f"{where}: give rois for every sample or for none (appends mixed both)")
        if len(ids) != n or len(cases) != n:
            raise UserError(f"{where}: {len(ids)} ids and {len(cases)} cases for {n} images; "
                            "give one of each per image")
        if n and (not np.isfinite(images).all() or images.min() < 0 or images.max() > 1):
            raise UserError(f"{where}: image intensities must be finite and within [0, 1]; rescale before writing")
        if n and (masks.min() < 0 or masks.max() >= self.num_classes):
            raise UserError(f"{where}: mask values [{masks.min()}, {masks.max()}] outside 0..{self.num_classes - 1}")
        dup = _first_duplicate(ids, self._ids)
        if dup is not None:
            raise UserError(f"{where}: sample id '{dup}' appears twice; ids must be unique within a file")
        return n


def _first_duplicate(items: list[str], known: set[str]) -> str | None:
    """First item already in `known` or repeated within `items`."""
    seen: set[str] = set()
    for item in items:
        if item in known or item in seen:
            return item
        seen.add(item)
    return None


# what h5py raises on a damaged file, depending on where the damage is (found by tests/test_fuzz.py)
DAMAGED = (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError)


class H5Source(IndexedSource):
    """SampleSource over a project HDF5 file; the file handle is opened lazily per process (DataLoader-safe)."""

    predefined_split: dict[str, list[str]] | None = None
    spatial_dims = 2  # images (N, C, H, W); the volume reader's subclass reads (N, C, D, H, W)

    def __init__(self, path: str | os.PathLike, name: str | None = None):
        self.path = Path(path)
        self.name = name if name is not None else str(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        fix = "re-create it (e.g. with 'ssl-seg make-phantoms' or the tool that wrote it)"
        try:
            with h5py.File(self.path, "r") as f:
                self._read_header(f, fix)
        except UserError:
            raise
        except DAMAGED as e:
            raise UserError(f"{self.path}: not a readable medseg-lab HDF5 file ({type(e).__name__}: {e}); "
                            f"{fix}") from None

    def _read_header(self, f: h5py.File, fix: str) -> None:
        if f.attrs.get("format") != FORMAT:
            raise UserError(f"{self.path}: attribute format={f.attrs.get('format')!r}, expected {FORMAT!r}; "
                            f"this is not a medseg-lab HDF5 file; convert it or {fix}")
        version = int(f.attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise UserError(f"{self.path}: format_version {version} is not supported (this code reads "
                            f"{FORMAT_VERSION}); {fix}")
        missing = [k for k in REQUIRED_DATASETS if k not in f]
        if missing:
            raise UserError(f"{self.path}: missing dataset(s) {missing}; the file is incomplete; {fix}")
        images, masks = f["images"], f["masks"]
        n = images.shape[0]
        if images.ndim != self.spatial_dims + 2:
            dims = {4: "2D images", 5: "3D volumes"}.get(images.ndim, f"{images.ndim}-D arrays")
            raise UserError(f"{self.path}: holds {dims}; read it with --spatial-dims {images.ndim - 2}")
        if masks.shape != (n, *images.shape[2:]) or f["ids"].shape != (n,) \
                or f["cases"].shape != (n,) or ("rois" in f and f["rois"].shape != masks.shape):
            raise UserError(f"{self.path}: inconsistent dataset shapes (images {images.shape}, "
                            f"masks {masks.shape}); {fix}")
        if n == 0:
            raise UserError(f"{self.path}: contains no samples; {fix}")
        for key in ("images", "masks", "rois"):
            if key in f and (f[key].external or f[key].is_virtual):
                raise UserError(f"{self.path}: dataset '{key}' keeps its data outside the file (external or virtual "
                                f"storage), which this reader never follows; {fix}")
        if not (np.issubdtype(masks.dtype, np.integer) or masks.dtype == bool):
            raise UserError(f"{self.path}: masks are {masks.dtype}, but they must hold integer class indices "
                            f"(fractional values would be cut to 0); {fix}")
        if int(f.attrs["num_classes"]) < 2:
            raise UserError(f"{self.path}: num_classes {int(f.attrs['num_classes'])}: a segmentation needs background "
                            f"and at least one class; {fix}")
        self.ids = [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in f["ids"][:]]
        self.cases = [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in f["cases"][:]]
        self.in_channels = int(images.shape[1])
        self.num_classes = int(f.attrs["num_classes"])
        self.class_names = list(json.loads(f.attrs["class_names"]))
        self.provenance = json.loads(f.attrs.get("provenance", "{}"))
        self.has_rois = "rois" in f
        self.file_spacing = tuple(json.loads(f.attrs.get("spacing", "[1, 1, 1]")))
        self._index_ids()

    def load(self, index: int) -> Sample:
        """Read sample `index` (image (C, *S) float32, mask (*S) int64, roi (*S) bool or None)."""
        f = self._handle()
        try:
            image = f["images"][index].astype(np.float32)
            mask = f["masks"][index].astype(np.int64)
            roi = f["rois"][index].astype(bool) if self.has_rois else None
        except DAMAGED as e:
            raise UserError(f"{self.path}: cannot read sample {index} ({type(e).__name__}: {e}); the file is damaged; "
                            "re-create it") from None
        if not np.isfinite(image).all() or image.min(initial=0.0) < 0 or image.max(initial=0.0) > 1:
            raise UserError(f"{self.path}: sample '{self.ids[index]}' has NaN, infinite or out-of-[0, 1] pixels: a data "
                            "problem (the format's contract); fix the tool that wrote the file and re-create it")
        if mask.size and (mask.min() < 0 or mask.max() >= self.num_classes):
            raise UserError(f"{self.path}: sample '{self.ids[index]}' has label {int(mask.max())} (or a negative one), "
                            f"but the file declares {self.num_classes} classes (0..{self.num_classes - 1}); fix the "
                            "masks or num_classes and re-create it")
        return Sample(image=image, mask=mask, id=self.ids[index], case=self.cases[index], roi=roi)

    def _handle(self) -> h5py.File:
        """The open file for this process (reopened after a fork so workers never share a handle)."""
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, None
        return state


def write_source_to_h5(source: SampleSource, path: str | os.PathLike, provenance: dict[str, Any],
                       chunk: int = 64) -> Path:
    """Stream every sample of `source` into a project HDF5 file at `path` (atomic); returns the path."""
    if len(source) == 0:
        raise UserError(f"{source.name}: the source has no samples; nothing to write to {path}")
    first = source.load(0)
    shape = first.image.shape
    volume = {}
    if len(shape) == 4:  # volumes: one spacing per file
        spacings = set(getattr(source, "spacing", {}).values()) or {(1.0, 1.0, 1.0)}
        if len(spacings) > 1:
            raise UserError(f"{source.name}: volumes of {len(spacings)} spacings; an HDF5 file holds one spacing: "
                            "resample the data first")
        volume = {"depth": shape[1], "spacing": spacings.pop()}
    writer = H5DatasetWriter(path, shape[0], shape[-2], shape[-1], source.num_classes, source.class_names,
                             {"source": source.name, **provenance}, **volume)
    with writer:
        batch: list[Sample] = []
        for i in range(len(source)):
            sample = first if i == 0 else source.load(i)
            if sample.image.shape != shape:
                raise UserError(f"{source.name}: sample '{sample.id}' has shape {sample.image.shape}, the first has "
                                f"{shape}; the HDF5 format needs one size: crop/resize the data first")
            if sample.mask is None:
                raise UserError(f"{source.name}: sample '{sample.id}' has no mask; "
                                "the HDF5 format stores labeled samples only")
            batch.append(sample)
            if len(batch) == chunk or i == len(source) - 1:
                _append_samples(writer, batch)
                batch = []
    return Path(path)


def _append_samples(writer: H5DatasetWriter, batch: list[Sample]) -> None:
    """Append a list of Samples (rois kept only if every sample of the source has one)."""
    rois = None
    if any(s.roi is not None for s in batch):
        rois = np.stack([s.roi if s.roi is not None else np.ones(s.mask.shape, bool) for s in batch])
    writer.append(np.stack([s.image for s in batch]), np.stack([s.mask for s in batch]),
                  [s.id for s in batch], [s.case for s in batch], rois)


class H5VolumeSource(VolumeSource, H5Source):
    """A project HDF5 file of volumes (images (N, C, D, H, W)); its `spacing` attribute applies to every volume."""

    spatial_dims = 3

    def __init__(self, path: str | Path, name: str | None = None):
        H5Source.__init__(self, path, name)
        spacing = tuple(float(s) for s in self.file_spacing)
        with h5py.File(self.path, "r") as f:
            shape = tuple(int(n) for n in f["masks"].shape[1:])
        self.spacing = {case: spacing for case in self.cases}  # type: ignore[misc]
        self.affine = {case: volume_affine(spacing) for case in self.cases}  # type: ignore[arg-type]
        self.shapes = {case: shape for case in self.cases}  # type: ignore[misc]
