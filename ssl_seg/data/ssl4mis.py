"""SSL4MIS's HDF5 layouts (HiLab-git/SSL4MIS): the 2D one (ACDC: data/slices/*.h5, train_slices.list, volumes cut into
slices for val.list / test.list) and the 3D one (LA, Pancreas: train.list / test.list naming case volumes)."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

from ..errors import UserError
from .folder import minmax
from .msd import integer_labels
from .sample import IndexedSource, Sample, nothing_to_segment, read_name_list
from .volumes import VolumeSource, to_volume_axes

SSL4MIS_FILES = ("{dir}/{case}.h5", "{dir}/{case}_norm.h5", "{dir}/{case}/mri_norm2.h5")  # LA, Pancreas, plain


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


class SSL4MIS3DSource(VolumeSource):
    """SSL4MIS's 3D layout (LA, Pancreas): DIR/train.list and DIR/test.list (optional val.list) name cases.

    A case's file is the first of `SSL4MIS_FILES` found in DIR, DIR/data or a subfolder of DIR (the LA set keeps
    `2018LA_Seg_Training Set/<case>/mri_norm2.h5`), holding `image` and `label` volumes (X, Y, Z). The files carry
    no voxel size: spacing is taken as 1 mm (distances are in voxels; say so when reporting them).
    """

    def __init__(self, root: str | Path, name: str | None = None):
        self.root = Path(root)
        self.name = name if name is not None else str(root)
        split = {}
        for key in ("train", "val", "test"):
            list_path = self.root / f"{key}.list"
            split[key] = read_name_list(list_path) if list_path.is_file() else []
        self.predefined_split = split
        self.ids = [case for key in ("train", "val", "test") for case in split[key]]
        self.cases = list(self.ids)
        self._index_ids()
        self._paths = [self._find(case) for case in self.ids]
        self.in_channels = 1
        self.notes = [f"{self.root}: SSL4MIS h5 volumes store no voxel size; distances are in voxels (1 mm assumed)"]
        self.spacing, self.affine, self.shapes = {}, {}, {}
        highest = 0
        for case, path in zip(self.ids, self._paths):
            label = self._read(path, load_image=False)[1]
            x, y, z = label.shape
            self.spacing[case], self.affine[case], self.shapes[case] = (1.0, 1.0, 1.0), np.eye(4), (z, x, y)
            highest = max(highest, int(label.max()) if label.size else 0)
        self.num_classes = max(2, highest + 1)
        self.class_names = ["background"] + [f"class_{k}" for k in range(1, self.num_classes)]

    def _find(self, case: str) -> Path:
        folders = [self.root, self.root / "data", *sorted(p for p in self.root.iterdir() if p.is_dir())]
        for folder in folders:
            for pattern in SSL4MIS_FILES:
                path = Path(pattern.format(dir=folder, case=case))
                if path.is_file():
                    return path
        raise UserError(f"{self.root}: the lists name case '{case}' but no {case}.h5, {case}_norm.h5 or "
                        f"{case}/mri_norm2.h5 exists there or in a subfolder; restore it or remove the line")

    def _read(self, path: Path, load_image: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
        """(image (X, Y, Z) or None, label (X, Y, Z) uint8) of one case file, checked."""
        try:
            with h5py.File(path, "r") as f:
                for key in ("image", "label"):
                    if key not in f:
                        raise UserError(f"{path}: no '{key}' dataset (found {sorted(f.keys())}); SSL4MIS 3D files "
                                        "hold 'image' and 'label' volumes")
                image_shape, label = f["image"].shape, f["label"][()]
                image = f["image"][()] if load_image else None
        except OSError as e:
            raise UserError(f"{path}: not a readable HDF5 file ({e}); restore it") from None
        if label.ndim != 3:
            raise UserError(f"{path}: label is {label.ndim}D {label.shape}; it must be one 3D volume of class indices")
        if tuple(image_shape) != label.shape:
            raise UserError(f"{path}: image {tuple(image_shape)} and label {label.shape} differ; they must have one "
                            "3D shape")
        return image, integer_labels(label, path)

    def load(self, index: int) -> Sample:
        """Case `index`: image (1, D, H, W) min-max scaled to [0, 1], mask (D, H, W) int64."""
        image, label = self._read(self._paths[index])
        image = np.asarray(image, dtype=np.float64)
        if not np.isfinite(image).all():
            raise UserError(f"{self._paths[index]}: image contains NaN or infinite values; fix or re-create it")
        lo, hi = image.min(), image.max()
        image = ((image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)).astype(np.float32)
        return Sample(image=to_volume_axes(image)[None], mask=to_volume_axes(label).astype(np.int64),
                      id=self.ids[index], case=self.cases[index])
