"""Medical Segmentation Decathlon / nnU-Net raw layout (DIR/dataset.json, imagesTr/, labelsTr/) served as 2D slices.

Each NIfTI volume is cut along its last spatial axis into slices `<case>_slice_<k>`; case = volume id, so a
volume's slices never straddle splits and can be stacked back for per-volume scores. Kept separate from the
2D readers so that a 3D reader can reuse `read_volume_pair` and `MSDIndex` and serve whole volumes instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError
from .sample import IndexedSource, Sample

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_CACHE_VOLUMES = 64  # decoded image volumes kept in memory (a hippocampus volume is ~250 kB)


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
    """What dataset.json says: (case, image path, label path) triples, class names, channel count."""

    cases: list[str]
    images: list[Path]
    labels: list[Path]
    class_names: list[str]
    in_channels: int


def _case_of(path: Path) -> str:
    """'hippocampus_001' from '.../hippocampus_001.nii.gz' (nnU-Net v2 images: drop the '_0000' channel tag)."""
    name = path.name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name


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
    modality = meta.get("modality") or meta.get("channel_names") or {"0": "image"}
    training = meta.get("training")
    if isinstance(training, list) and training:
        try:
            images = [root / entry["image"] for entry in training]
            label_paths = [root / entry["label"] for entry in training]
        except (TypeError, KeyError):
            raise UserError(f"{meta_path}: each 'training' entry needs 'image' and 'label' paths") from None
    else:  # nnU-Net v2: imagesTr/<case>_0000.nii.gz + labelsTr/<case>.nii.gz
        label_paths = sorted(p for p in (root / "labelsTr").glob("*.nii*") if not p.name.startswith("."))
        images = [root / "imagesTr" / f"{_case_of(p)}_0000{p.name[len(_case_of(p)):]}" for p in label_paths]
    for image, label in zip(images, label_paths):
        for path in (image, label):
            if not path.is_file():
                raise UserError(f"{meta_path}: lists {path} but the file does not exist; restore it or remove "
                                "the entry")
    if not images:
        raise UserError(f"{root}: no training volumes (dataset.json 'training' is empty and labelsTr/ has no "
                        "NIfTI files)")
    return MSDIndex([_case_of(p) for p in label_paths], images, label_paths, class_names, len(modality))


def read_volume_pair(image_path: Path, label_path: Path, in_channels: int,
                     load_image: bool = True) -> tuple[np.ndarray | None, np.ndarray, tuple[float, float, float]]:
    """(image (C, X, Y, Z) float32 in [0, 1] or None, label (X, Y, Z) uint8, spacing (sx, sy, sz) in mm).

    Intensities are clipped to the volume's 0.5-99.5 percentiles and scaled to [0, 1] per channel (MRI has no
    absolute scale). Shape mismatches and labels that are not integers 0..255 are UserErrors naming the file.
    """
    nib = _nib()
    try:
        label_img, image_img = nib.load(str(label_path)), nib.load(str(image_path))
    except Exception as e:  # nibabel raises many types for damaged files
        raise UserError(f"{label_path.parent.parent}: cannot read {image_path.name} / {label_path.name} ({e}); "
                        "restore the NIfTI files") from None
    label_raw = np.asarray(label_img.dataobj)
    image_shape = tuple(image_img.shape)
    spatial = image_shape[:3]
    if label_raw.ndim != 3 or tuple(label_raw.shape) != spatial or len(image_shape) not in (3, 4):
        raise UserError(f"{label_path}: label shape {tuple(label_raw.shape)} does not match image "
                        f"{image_path.name} {image_shape}; labels must be 3D volumes of the image's size")
    channels = image_shape[3] if len(image_shape) == 4 else 1
    if channels != in_channels:
        raise UserError(f"{image_path}: {channels} channel(s) but dataset.json lists {in_channels} modalities")
    if not np.issubdtype(label_raw.dtype, np.integer):
        if not np.isfinite(label_raw).all() or not np.array_equal(label_raw, np.round(label_raw)):
            raise UserError(f"{label_path}: label values are not integers (e.g. "
                            f"{label_raw[label_raw != np.round(label_raw)].flat[0]!r}); labels must be class indices")
    if label_raw.size and (label_raw.min() < 0 or label_raw.max() > 255):
        raise UserError(f"{label_path}: label values [{label_raw.min()}, {label_raw.max()}] outside 0..255")
    label = label_raw.astype(np.uint8)
    spacing = tuple(float(z) for z in image_img.header.get_zooms()[:3])
    if not load_image:
        return None, label, spacing  # type: ignore[return-value]
    data = np.asarray(image_img.dataobj, dtype=np.float32)
    data = data[None] if data.ndim == 3 else np.moveaxis(data, -1, 0)
    if not np.isfinite(data).all():
        raise UserError(f"{image_path}: image contains NaN or infinite values; fix or re-export it")
    scaled = np.empty_like(data)
    for c, channel in enumerate(data):
        lo, hi = np.percentile(channel, (0.5, 99.5))
        scaled[c] = np.clip((channel - lo) / (hi - lo), 0, 1) if hi > lo else 0.0
    return scaled, label, spacing  # type: ignore[return-value]


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
            _, label, (sx, sy, sz) = read_volume_pair(image, label_path, index.in_channels, load_image=False)
            self._labels.append(label)
            self.spacing[case] = (sz, sx, sy)
            highest = max(highest, int(label.max()) if label.size else 0)
            for k in range(label.shape[2]):
                self.ids.append(f"{case}_slice_{k}")
                self.cases.append(case)
                self._where.append((v, k))
        self._index_ids()
        self.num_classes = max(2, highest + 1, len(index.class_names))
        self.class_names = index.class_names + [f"class_{k}" for k in range(len(index.class_names),
                                                                             self.num_classes)]
        self._images: dict[int, np.ndarray] = {}

    def _image(self, v: int) -> np.ndarray:
        """Decoded, scaled image volume `v` (C, X, Y, Z), from a small in-memory cache."""
        if v not in self._images:
            if len(self._images) >= _CACHE_VOLUMES:
                self._images.pop(next(iter(self._images)))
            m = self._index_meta
            self._images[v] = read_volume_pair(m.images[v], m.labels[v], m.in_channels)[0]
        return self._images[v]

    def load(self, index: int) -> Sample:
        """Slice `index`: image (C, X, Y) float32 in [0, 1] (per-volume scaling), mask (X, Y) int64."""
        v, k = self._where[index]
        image = np.ascontiguousarray(self._image(v)[..., k])
        mask = self._labels[v][..., k].astype(np.int64)
        return Sample(image=image, mask=mask, id=self.ids[index], case=self.cases[index])
