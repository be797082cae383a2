"""Dataset readers: one DATA string -> a SampleSource returning the one `Sample` schema.

DATA is a PNG/JPEG/TIFF folder (`images/`, `masks/`, optional `roi/`), an SSL4MIS HDF5 folder
(`data/slices/*.h5`, `data/<volume>.h5`, `*.list`), an MSD / nnU-Net folder (`dataset.json`, `imagesTr/`,
`labelsTr/`, NIfTI volumes served as slices), a project HDF5 file (`*.h5`, `*.hdf5`), or
`phantom:<task>[?n=400&size=128&seed=0]`.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
from PIL import Image

from ..errors import UserError
from . import mask_scheme
from .h5format import H5Source
from .mask_scheme import MaskStats
from .msd import MSDSliceSource, is_msd_folder
from .phantom_volumes import VOLUME_TASK
from .sample import IndexedSource, Sample, SampleSource, nothing_to_segment, parse_phantom, read_name_list

DATA_HELP = ("DATA may be a folder with images/ and masks/, an SSL4MIS folder (data/slices/, train_slices.list, or "
             "3D: train.list naming case volumes, served as slices), "
             "an MSD / nnU-Net folder (dataset.json, imagesTr/, labelsTr/), "
             "a .h5/.hdf5 file written by ssl-seg, or phantom:<task>[?n=400&size=128&seed=0]")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")  # training and prediction alike
_GRAY_MODES = {"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
_MASK_MODES = {"1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N"}


def task_differences(expected: SampleSource | dict, found: SampleSource | dict) -> list[str]:
    """What differs between two datasets' tasks: class count, class names (in order), channels."""
    def get(obj: SampleSource | dict, key: str):
        value = obj[key] if isinstance(obj, dict) else getattr(obj, key)
        return list(value) if isinstance(value, (list, tuple)) else value

    return [f"{key} {get(found, key)} instead of {get(expected, key)}"
            for key in ("num_classes", "class_names", "in_channels") if get(found, key) != get(expected, key)]


def open_source(data: str, spatial_dims: int = 2, volume_by: str | None = None) -> SampleSource:
    """Open the dataset named by a DATA string (folder, SSL4MIS folder, .h5 file or phantom:<task>).

    With `spatial_dims` 3 the samples are whole volumes (ssl_seg/data/volumes.py). With `volume_by` (a regex naming
    the volume and the slice index in each sample id) 2D slices are grouped into volumes (ssl_seg/data/slice_volumes.py).
    """
    if volume_by is not None:
        if spatial_dims == 3:
            raise UserError(f"--volume-by {volume_by!r} groups 2D slices into volumes; with --spatial-dims 3 the "
                            "samples already are volumes: drop --volume-by")
        from .slice_volumes import SliceVolumes

        return SliceVolumes(open_source(data, spatial_dims), volume_by)
    if spatial_dims == 3:
        from .volumes import open_volume_source  # lazily: only volume training needs it

        return open_volume_source(data)
    if data.startswith(f"phantom:{VOLUME_TASK}") or _is_ssl4mis_3d(Path(data).expanduser()):
        from .volumes import VolumeSlices, open_volume_source

        return VolumeSlices(open_volume_source(data))
    if data.startswith("phantom:"):
        return _open_phantom(data)
    path = Path(data).expanduser()
    if not path.exists():
        raise UserError(f"DATA '{data}' does not exist; {DATA_HELP}")
    if not path.is_file() and not path.is_dir():
        raise UserError(f"DATA '{data}' is neither a regular file nor a folder (a pipe or device?); {DATA_HELP}")
    if path.is_file():
        if path.suffix.lower() in (".h5", ".hdf5"):
            return H5Source(path, name=data)
        raise UserError(f"DATA '{data}' is a file but not .h5/.hdf5; {DATA_HELP}")
    if is_msd_folder(path):
        return MSDSliceSource(path, name=data)
    if (path / "data" / "slices").is_dir() or (path / "train_slices.list").is_file():
        return SSL4MISSource(path, name=data)
    single_h5 = [p for p in sorted(path.glob("*.h5")) + sorted(path.glob("*.hdf5")) if p.is_file()]
    if not (path / "images").exists() and len(single_h5) == 1:  # e.g. a synthetic dataset folder
        return H5Source(single_h5[0], name=data)
    return FolderSource(path, name=data)


def _is_ssl4mis_3d(path: Path) -> bool:
    """SSL4MIS's 3D layout (train.list naming case volumes) rather than its 2D one (data/slices, train_slices.list)."""
    return ((path / "train.list").is_file() and not (path / "data" / "slices").is_dir()
            and not (path / "train_slices.list").is_file())


def _open_phantom(data: str) -> SampleSource:
    """Build the PhantomSource of `phantom:<task>?n=400&size=128&seed=0`."""
    from .phantoms import MIN_SIZE, PhantomSource  # lazily: only phantom DATA needs the generators

    task, options = parse_phantom(data, MIN_SIZE)
    return PhantomSource(task=task, **options)


# --------------------------------------------------------------------------- PNG / JPEG / TIFF folders


class FolderSource(IndexedSource):
    """Pairs DIR/images/<stem>.<png|jpg|jpeg|tif|tiff|bmp> + DIR/masks/<stem>.png, optional DIR/roi/<stem>.png.

    Masks are binary {0, 255} (255 -> class 1) or class indices 0..K-1, decided strictly once over all masks
    (see mask_scheme; DIR/classes.json may name the classes). 16-bit images are scaled by their bit range. Gray and RGB images may be mixed (gray is then repeated to RGB); sizes may differ. Case id = stem.
    """

    def __init__(self, root: str | Path, name: str | None = None, require_foreground: bool = True):
        self.root = Path(root)
        self.name = name if name is not None else str(root)
        if not self.root.is_dir():
            raise UserError(f"{self.root}: folder not found; {DATA_HELP}")
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


# --------------------------------------------------------------------------- SSL4MIS HDF5 layout


class SSL4MISSource(IndexedSource):
    """SSL4MIS layout (ACDC as preprocessed in HiLab-git/SSL4MIS).

    Training samples are the 2D files DIR/data/slices/<id>.h5 named in DIR/train_slices.list (every file in
    data/slices when the list is absent). Volumes DIR/data/<volume>.h5 named in val.list / test.list are cut
    into slices `<volume>_slice_<k>` (k from 0). Case = `patientNNN` prefix of the id, else the part before
    `_slice`. With train_slices.list present, `predefined_split` holds the lists (val/test empty if absent).
    """

    def __init__(self, root: str | Path, name: str | None = None):
        self.root = Path(root)
        self.name = name if name is not None else str(root)
        slices_dir, train_list = self.root / "data" / "slices", self.root / "train_slices.list"
        if train_list.is_file():
            train_ids = read_name_list(train_list)
            missing = next((i for i in train_ids if not (slices_dir / f"{i}.h5").is_file()), None)
            if missing is not None:
                raise UserError(f"{train_list}: names '{missing}' but {slices_dir / missing}.h5 does not exist; "
                                "restore the file or remove the line")
        else:
            train_ids = sorted(p.stem for p in slices_dir.glob("*.h5"))
        if not train_ids:
            raise UserError(f"{slices_dir}: no .h5 slices; put the SSL4MIS training slices there")
        self._entries: list[tuple[Path, int | None]] = [(slices_dir / f"{i}.h5", None) for i in train_ids]
        self.ids = list(train_ids)
        split = {"train": list(train_ids), "val": [], "test": []}
        if train_list.is_file():
            for key in ("val", "test"):
                list_path = self.root / f"{key}.list"
                if list_path.is_file():
                    split[key] = self._add_volumes(list_path)
        self.predefined_split = split if train_list.is_file() else None
        self.cases = [case_of_slice(i) for i in self.ids]
        self._index_ids()
        self.in_channels = 1
        self.num_classes = self._scan_labels()
        self.class_names = ["background"] + [f"class_{k}" for k in range(1, self.num_classes)]

    def _add_volumes(self, list_path: Path) -> list[str]:
        """Append every slice of each volume named in `list_path`; returns their ids."""
        ids = []
        for volume in read_name_list(list_path):
            path = self.root / "data" / f"{volume}.h5"
            if not path.is_file():
                raise UserError(f"{list_path}: names '{volume}' but {path} does not exist; "
                                "restore it or remove the line")
            with _h5(path) as f:
                depth = _dataset(f, path, "image").shape[0]  # 3D shape checked in _scan_labels
            for k in range(depth):
                ids.append(f"{volume}_slice_{k}")
                self._entries.append((path, k))
        self.ids.extend(ids)
        return ids

    def _scan_labels(self) -> int:
        """Read every label once: check shapes (2D slice files, 3D volumes), return K = max label + 1 (>= 2)."""
        highest = 0
        for path, ndim in dict.fromkeys((p, 2 if k is None else 3) for p, k in self._entries):
            with _h5(path) as f:
                image, label = _dataset(f, path, "image"), _dataset(f, path, "label")
                if image.shape != label.shape or image.ndim != ndim:
                    raise UserError(f"{path}: image {image.shape} and label {label.shape} must have one "
                                    f"{ndim}D shape ({'slice' if ndim == 2 else 'volume'}); re-create the file")
                values = label[()]
            if values.size and (values.min() < 0 or values.max() > 255):
                raise UserError(f"{path}: label values [{values.min()}, {values.max()}] outside 0..255")
            highest = max(highest, int(values.max()) if values.size else 0)
        if highest == 0:
            raise nothing_to_segment(self.root)
        return max(2, highest + 1)

    def load(self, index: int) -> Sample:
        """Read slice `index`: image (1, H, W) min-max scaled to [0, 1], mask (H, W) int64."""
        path, k = self._entries[index]
        try:
            with h5py.File(path, "r") as f:
                image = f["image"][k] if k is not None else f["image"][()]
                label = f["label"][k] if k is not None else f["label"][()]
        except (OSError, KeyError) as e:
            raise UserError(f"{path}: cannot read ({e}); the file is damaged; restore it") from None
        return Sample(image=minmax(image, path)[None], mask=np.asarray(label).astype(np.int64),
                      id=self.ids[index], case=self.cases[index])


def case_of_slice(sample_id: str) -> str:
    """Case id of an SSL4MIS slice id: 'patientNNN' prefix, else the part before '_slice', else the id."""
    match = re.match(r"^(patient\d+)", sample_id)
    if match:
        return match.group(1)
    return sample_id.split("_slice")[0] if "_slice" in sample_id else sample_id


def _h5(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"{path}: not a readable HDF5 file ({e}); restore or re-create it") from None


def _dataset(f: h5py.File, path: Path, key: str) -> h5py.Dataset:
    if key not in f:
        raise UserError(f"{path}: no '{key}' dataset (found {sorted(f.keys())}); "
                        "SSL4MIS files hold 'image' and 'label'")
    return f[key]
