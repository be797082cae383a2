"""Medical Segmentation Decathlon / nnU-Net raw layout (DIR/dataset.json, imagesTr/, labelsTr/): the index, one
case's volumes read with their header geometry, and those volumes served as 2D slices.

Each NIfTI volume is cut along its last spatial axis into slices `<case>_slice_<k>`; case = volume id, so a
volume's slices never straddle splits and can be stacked back for per-volume scores. The volume reader
(ssl_seg/data/volumes.py) reuses `read_index` and `read_case` and serves whole volumes instead.

Input channels (modalities) come from one 4D image per case (MSD) or one file per channel,
`<case>_0000.nii.gz`, `<case>_0001.nii.gz`, ... (nnU-Net); dataset.json's `modality` / `channel_names` keys
must be 0..C-1.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..io_utils import inside
from .sample import IndexedSource, Sample, nothing_to_segment
from .volumes import VolumeSource, to_volume_axes

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_CACHE_VOLUMES = 64  # decoded image volumes kept in memory (a hippocampus volume is ~250 kB)
_AFFINE_TOLERANCE_MM = 1e-3  # image and label voxel-to-mm maps may differ by float rounding only


def is_msd_folder(path: Path) -> bool:
    """True for a folder laid out as MSD / nnU-Net raw data (dataset.json next to imagesTr/)."""
    return (path / "dataset.json").is_file() and (path / "imagesTr").is_dir()


def _nib():
    try:
        import nibabel
    except ImportError:
        raise UserError("reading NIfTI (MSD / nnU-Net folders) needs nibabel; pip install nibabel") from None
    return nibabel


@dataclass
class MSDIndex:
    """What dataset.json says: per case its channel files (one 3D/4D file, or one file per channel) and label."""

    cases: list[str]
    images: list[list[Path]]
    labels: list[Path]
    class_names: list[str]
    modalities: list[str]

    @property
    def in_channels(self) -> int:
        """Input channels per case: one per modality."""
        return len(self.modalities)


@dataclass
class VolumeCase:
    """One case as stored: image (C, X, Y, Z) float32 in [0, 1] or None, label (X, Y, Z) uint8, header geometry."""

    image: np.ndarray | None
    label: np.ndarray
    spacing: tuple[float, float, float]  # mm along X, Y, Z (the header's zooms)
    affine: np.ndarray  # (4, 4) voxel index (X, Y, Z) -> scanner mm, the label's (checked equal to the image's)


def _case_of(path: Path) -> str:
    """'hippocampus_001' from '.../hippocampus_001.nii.gz'."""
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _suffix_of(path: Path) -> str:
    return ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix


def _modalities(meta: dict, meta_path: Path) -> list[str]:
    """Channel names in channel order; the keys must be 0..C-1 (anything else is an unknown modality)."""
    modality = meta.get("modality") or meta.get("channel_names") or {"0": "image"}
    if not isinstance(modality, dict):
        raise UserError(f"{meta_path}: 'modality' / 'channel_names' must map channel numbers to names, e.g. "
                        "{\"0\": \"T1\", \"1\": \"T2\"}")
    keys = sorted(modality, key=lambda k: (not str(k).isdigit(), str(k).zfill(8)))
    if [str(k) for k in keys] != [str(i) for i in range(len(keys))]:
        raise UserError(f"{meta_path}: unknown modality key(s) {sorted(map(str, modality))}; number the channels "
                        "0..C-1, e.g. {\"0\": \"T1\", \"1\": \"T2\"}")
    return [str(modality[k]) for k in keys]


def _channel_files(image: Path, channels: int, meta_path: Path) -> list[Path]:
    """The files holding one case's channels: the listed file itself, or its nnU-Net `_000k` channel files."""
    if image.is_file():
        return [image]
    case, suffix = _case_of(image), _suffix_of(image)
    files = [image.with_name(f"{case}_{k:04d}{suffix}") for k in range(channels)]
    if not files[0].is_file():
        raise UserError(f"{meta_path}: lists {image} but neither it nor {files[0].name} exists; restore the file "
                        "or remove the entry")
    for path in files:
        if not path.is_file():
            raise UserError(f"{path}: missing; dataset.json lists {channels} modalities, so every case needs "
                            f"{case}_0000..{case}_{channels - 1:04d}{suffix}")
    pattern = re.compile(re.escape(case) + r"_(\d{4})" + re.escape(suffix) + "$")
    extra = sorted(p.name for p in image.parent.iterdir() if (m := pattern.match(p.name)) and int(m[1]) >= channels)
    if extra:
        raise UserError(f"{image.parent / extra[0]}: channel {extra[0][len(case) + 1:len(case) + 5]} is an unknown "
                        f"modality (dataset.json lists {channels}); add it to 'modality' / 'channel_names' or "
                        "remove the file")
    return files


def read_index(root: Path) -> MSDIndex:
    """Parse ROOT/dataset.json (MSD v1 `training` list, or nnU-Net v2 with files found in imagesTr/labelsTr)."""
    meta_path = root / "dataset.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{meta_path}: cannot read ({e}); restore the MSD dataset.json") from None
    labels = meta.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise UserError(f"{meta_path}: no 'labels' mapping; add e.g. \"labels\": {{\"0\": \"background\", \"1\": ...}}")
    try:  # MSD v1: {"0": "background"}; nnU-Net v2: {"background": 0}
        by_value = ({int(k): str(v) for k, v in labels.items()} if all(str(k).isdigit() for k in labels)
                    else {int(v): str(k) for k, v in labels.items()})
    except (TypeError, ValueError):
        raise UserError(f"{meta_path}: 'labels' must map class values to names") from None
    class_names = [by_value.get(k, f"class_{k}") for k in range(max(by_value) + 1)]
    modalities = _modalities(meta, meta_path)
    training = meta.get("training")
    if isinstance(training, list) and training:
        try:
            listed = [inside(root, entry["image"], str(meta_path)) for entry in training]
            label_paths = [inside(root, entry["label"], str(meta_path)) for entry in training]
        except (TypeError, KeyError):
            raise UserError(f"{meta_path}: each 'training' entry needs 'image' and 'label' paths") from None
    else:  # nnU-Net v2: imagesTr/<case>_0000.nii.gz ... + labelsTr/<case>.nii.gz
        label_paths = sorted(p for p in (root / "labelsTr").glob("*.nii*") if not p.name.startswith("."))
        listed = [root / "imagesTr" / f"{_case_of(p)}{_suffix_of(p)}" for p in label_paths]
    for label in label_paths:
        if not label.is_file():
            raise UserError(f"{meta_path}: lists {label} but the file does not exist; restore it or remove the entry")
    if not listed:
        raise UserError(f"{root}: no training volumes (dataset.json 'training' is empty and labelsTr/ has no "
                        "NIfTI files)")
    images = [_channel_files(image, len(modalities), meta_path) for image in listed]
    return MSDIndex([_case_of(p) for p in label_paths], images, label_paths, class_names, modalities)


def _load(path: Path):
    try:
        return _nib().load(str(path))
    except UserError:
        raise
    except Exception as e:  # nibabel raises many types for damaged files
        raise UserError(f"{path}: cannot read NIfTI ({e}); restore the file") from None


def integer_labels(label: np.ndarray, path: Path) -> np.ndarray:
    """Label values as uint8; values that are not integers 0..255 are a UserError naming `path`."""
    if not np.issubdtype(label.dtype, np.integer):
        if not np.isfinite(label).all() or not np.array_equal(label, np.round(label)):
            raise UserError(f"{path}: label values are not integers (e.g. {label[label != np.round(label)].flat[0]!r}); "
                            "labels must be class indices")
    if label.size and (label.min() < 0 or label.max() > 255):
        raise UserError(f"{path}: label values [{label.min()}, {label.max()}] outside 0..255")
    return label.astype(np.uint8)


def read_case(image_paths: list[Path], label_path: Path, in_channels: int, load_image: bool = True) -> VolumeCase:
    """One case's label, geometry and (optionally) image channels, checked against each other.

    Intensities are clipped to the volume's 0.5-99.5 percentiles and scaled to [0, 1] per channel (MRI has no
    absolute scale). A 4D label, labels that are not integers 0..255, an image/label shape or affine mismatch
    and a channel count other than dataset.json's modalities are UserErrors naming the file.
    """
    label_img = _load(label_path)
    channel_imgs = [_load(p) for p in image_paths]
    label_shape = tuple(label_img.shape)
    if len(label_shape) != 3:
        raise UserError(f"{label_path}: label is {len(label_shape)}D {label_shape}; a label must be one 3D volume "
                        "of class indices (no channel or time axis)")
    for path, img in zip(image_paths, channel_imgs):
        shape = tuple(img.shape)
        if len(shape) not in (3, 4) or shape[:3] != label_shape:
            raise UserError(f"{label_path}: label shape {label_shape} does not match image {path.name} {shape}; "
                            "labels must be 3D volumes of the image's size")
        if not np.allclose(img.affine, label_img.affine, rtol=0, atol=_AFFINE_TOLERANCE_MM):
            raise UserError(f"{label_path}: affine (voxel-to-mm map) differs from image {path.name}'s "
                            f"(largest difference {np.abs(img.affine - label_img.affine).max():.4g} mm); the label "
                            "was saved on another grid: resample it onto the image")
    channels = sum(img.shape[3] if len(img.shape) == 4 else 1 for img in channel_imgs)
    if channels != in_channels:
        raise UserError(f"{image_paths[0]}: {channels} channel(s) but dataset.json lists {in_channels} modalities")
    label = integer_labels(np.asarray(label_img.dataobj), label_path)
    spacing = tuple(float(z) for z in label_img.header.get_zooms()[:3])
    affine = np.asarray(label_img.affine, dtype=np.float64)
    image = _scaled_channels(image_paths, channel_imgs) if load_image else None
    return VolumeCase(image, label, spacing, affine)


def read_unlabeled_case(image_paths: list[Path], in_channels: int) -> VolumeCase:
    """An unlabelled case (prediction input): image (C, X, Y, Z) scaled as `read_case` does, the first file's
    geometry, and an empty (0, 0, 0) label; channel files must share one shape and affine."""
    imgs = [_load(p) for p in image_paths]
    first = imgs[0]
    for path, img in zip(image_paths, imgs):
        if len(img.shape) not in (3, 4) or img.shape[:3] != first.shape[:3] or not np.allclose(
                img.affine, first.affine, rtol=0, atol=_AFFINE_TOLERANCE_MM):
            raise UserError(f"{path}: shape {tuple(img.shape)} or affine differs from {image_paths[0].name}; the "
                            "channel files of a case must share one 3D grid")
    channels = sum(img.shape[3] if len(img.shape) == 4 else 1 for img in imgs)
    if channels != in_channels:
        raise UserError(f"{image_paths[0]}: {channels} channel(s) but the model takes {in_channels}")
    spacing = tuple(float(z) for z in first.header.get_zooms()[:3])
    return VolumeCase(_scaled_channels(image_paths, imgs), np.zeros((0, 0, 0), np.uint8), spacing,  # type: ignore
                      np.asarray(first.affine, dtype=np.float64))


def _scaled_channels(image_paths: list[Path], imgs: list) -> np.ndarray:
    """(C, X, Y, Z) float32: every channel clipped to its 0.5-99.5 percentiles and scaled to [0, 1]."""
    parts = []
    for path, img in zip(image_paths, imgs):
        data = np.asarray(img.dataobj, dtype=np.float32)
        parts.append(data[None] if data.ndim == 3 else np.moveaxis(data, -1, 0))
        if not np.isfinite(parts[-1]).all():
            raise UserError(f"{path}: image contains NaN or infinite values; fix or re-export it")
    data = np.concatenate(parts)
    scaled = np.empty_like(data)
    for c, channel in enumerate(data):
        lo, hi = np.percentile(channel, (0.5, 99.5))
        scaled[c] = np.clip((channel - lo) / (hi - lo), 0, 1) if hi > lo else 0.0
    return scaled


def class_names_for(index: MSDIndex, highest_label: int, root: Path) -> list[str]:
    """dataset.json's class names (at least background and one class); a label value it does not name is refused
    (it would be trained and scored as a class nobody declared)."""
    if highest_label >= len(index.class_names):
        raise UserError(f"{root / 'dataset.json'}: a label file holds value {highest_label}, but 'labels' names "
                        f"classes 0..{len(index.class_names) - 1}; add the class to 'labels' or fix the label files")
    if highest_label == 0:
        raise nothing_to_segment(root / "labelsTr")
    return index.class_names


class MSDSliceSource(IndexedSource):
    """An MSD / nnU-Net raw folder as 2D slices along the last axis: sample `<case>_slice_<k>`, case = volume.

    `spacing[case]` is the volume's voxel size in the order slices stack back, (slice axis, H, W), in mm.
    `volumetric` tells the evaluation that a case's slices, in id order, form one volume.
    """

    volumetric = True

    def __init__(self, root: str | Path, name: str | None = None):
        self.root = Path(root)
        self.name = name if name is not None else str(root)
        index = read_index(self.root)
        self._index_meta = index
        self.in_channels = index.in_channels
        self.ids, self.cases, self._where = [], [], []
        self._labels: list[np.ndarray] = []
        self.spacing: dict[str, tuple[float, float, float]] = {}
        highest = 0
        for v, (case, image, label_path) in enumerate(zip(index.cases, index.images, index.labels)):
            volume = read_case(image, label_path, index.in_channels, load_image=False)
            label, (sx, sy, sz) = volume.label, volume.spacing
            self._labels.append(label)
            self.spacing[case] = (sz, sx, sy)
            highest = max(highest, int(label.max()) if label.size else 0)
            for k in range(label.shape[2]):
                self.ids.append(f"{case}_slice_{k}")
                self.cases.append(case)
                self._where.append((v, k))
        self._index_ids()
        self.class_names = class_names_for(index, highest, self.root)
        self.num_classes = len(self.class_names)
        self._images: dict[int, np.ndarray] = {}

    def _image(self, v: int) -> np.ndarray:
        """Decoded, scaled image volume `v` (C, X, Y, Z), from a small in-memory cache."""
        if v not in self._images:
            if len(self._images) >= _CACHE_VOLUMES:
                self._images.pop(next(iter(self._images)))
            m = self._index_meta
            self._images[v] = read_case(m.images[v], m.labels[v], m.in_channels).image
        return self._images[v]

    def load(self, index: int) -> Sample:
        """Slice `index`: image (C, X, Y) float32 in [0, 1] (per-volume scaling), mask (X, Y) int64."""
        v, k = self._where[index]
        image = np.ascontiguousarray(self._image(v)[..., k])
        mask = self._labels[v][..., k].astype(np.int64)
        return Sample(image=image, mask=mask, id=self.ids[index], case=self.cases[index])


class MSDVolumeSource(VolumeSource):
    """An MSD / nnU-Net raw folder as whole volumes (all modalities as input channels), one sample per case."""

    def __init__(self, root: str | Path, name: str | None = None):
        self.root = Path(root)
        self.name = name if name is not None else str(root)
        self._index_meta = index = read_index(self.root)
        self.in_channels = index.in_channels
        self.modalities = index.modalities
        self.ids, self.cases = list(index.cases), list(index.cases)
        self._index_ids()
        self.spacing, self.affine, self.shapes = {}, {}, {}
        highest = 0
        for case, images, label_path in zip(index.cases, index.images, index.labels):
            volume = read_case(images, label_path, index.in_channels, load_image=False)
            sx, sy, sz = volume.spacing
            self.spacing[case], self.affine[case] = (sz, sx, sy), volume.affine
            x, y, z = volume.label.shape
            self.shapes[case] = (z, x, y)
            highest = max(highest, int(volume.label.max()) if volume.label.size else 0)
        self.class_names = class_names_for(index, highest, self.root)
        self.num_classes = len(self.class_names)

    def load(self, index: int) -> Sample:
        """Case `index`: image (C, D, H, W) float32 in [0, 1] (per-volume, per-channel scaling), mask (D, H, W)."""
        m = self._index_meta
        volume = read_case(m.images[index], m.labels[index], m.in_channels)
        return Sample(image=to_volume_axes(volume.image), mask=to_volume_axes(volume.label).astype(np.int64),
                      id=self.ids[index], case=self.cases[index])
