"""The one DATA-string parser: a DATA string -> the reader of its layout, as 2D samples or as 3D volumes.

`LAYOUTS` is the single table from an on-disk layout to its 2D and its 3D reader. The readers live one module per
format: folder.py (PNG / JPEG / TIFF / BMP folders), ssl4mis.py (SSL4MIS 2D and 3D h5), msd.py (MSD / nnU-Net as
slices and as volumes), h5format.py (project HDF5 images and volumes), phantoms.py and volumes.py (`phantom:<task>`, 2D
and 3D). With `volume_by`, 2D slices are grouped into volumes (slice_volumes.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .folder import FolderSource
from .h5format import H5Source, H5VolumeSource
from .msd import MSDSliceSource, MSDVolumeSource, is_msd_folder
from .phantom_volumes import VOLUME_TASK
from .sample import SampleSource, parse_phantom
from .ssl4mis import SSL4MIS3DSource, SSL4MISSource
from .volumes import LesionVolumeSource, VolumeSlices

DATA_HELP = ("DATA may be a folder with images/ and masks/, an SSL4MIS folder (data/slices/, train_slices.list, or "
             "3D: train.list naming case volumes, served as slices), "
             "an MSD / nnU-Net folder (dataset.json, imagesTr/, labelsTr/), "
             "a .h5/.hdf5 file written by ssl-seg, or phantom:<task>[?n=400&size=128&seed=0]")
VOLUME_DATA_HELP = ("with --spatial-dims 3, DATA is an MSD / nnU-Net folder (dataset.json, imagesTr/, labelsTr/), "
                    "an SSL4MIS 3D folder (train.list, test.list, per-case .h5 volumes), a project .h5 file of "
                    f"volumes or phantom:{VOLUME_TASK}[?n=20&size=32&seed=0]")
H5_SUFFIXES = (".h5", ".hdf5")

Reader = Callable[[Path, str], SampleSource]  # (path, the DATA string as given: the source's name) -> source


@dataclass(frozen=True)
class Layout:
    """An on-disk layout: how to recognise it, and its 2D and 3D readers (None: it holds no such samples)."""

    name: str
    matches: Callable[[Path], bool]
    reader_2d: Reader | None
    reader_3d: Reader | None


def _is_ssl4mis_2d(path: Path) -> bool:
    return path.is_dir() and ((path / "data" / "slices").is_dir() or (path / "train_slices.list").is_file())


def _single_h5(path: Path) -> Path | None:
    """The one .h5 / .hdf5 file of a folder without images/ (e.g. a synthetic dataset's), else None."""
    files = [p for suffix in H5_SUFFIXES for p in sorted(path.glob(f"*{suffix}")) if p.is_file()]
    return files[0] if len(files) == 1 and not (path / "images").exists() else None


def _ssl4mis_volumes(path: Path, name: str) -> SampleSource:
    """The SSL4MIS 3D reader of a folder that has train.list (ACDC's folder has both layouts)."""
    if not (path / "train.list").is_file():
        raise UserError(f"DATA '{name}' (SSL4MIS 2D folder) holds no volumes: it has no train.list; {VOLUME_DATA_HELP}")
    return SSL4MIS3DSource(path, name)


LAYOUTS = (
    Layout("project HDF5 file", lambda p: p.is_file() and p.suffix.lower() in H5_SUFFIXES, H5Source, H5VolumeSource),
    Layout("MSD / nnU-Net folder", lambda p: p.is_dir() and is_msd_folder(p), MSDSliceSource, MSDVolumeSource),
    Layout("SSL4MIS 2D folder", _is_ssl4mis_2d, SSL4MISSource, _ssl4mis_volumes),
    Layout("SSL4MIS 3D folder", lambda p: p.is_dir() and (p / "train.list").is_file(),
           lambda p, name: VolumeSlices(SSL4MIS3DSource(p, name)), SSL4MIS3DSource),
    Layout("folder holding one .h5 file", lambda p: p.is_dir() and _single_h5(p) is not None,
           lambda p, name: H5Source(_single_h5(p), name=name), None),  # type: ignore[arg-type]
    Layout("image folder", Path.is_dir, FolderSource, None),
)


def open_source(data: str, spatial_dims: int = 2, volume_by: str | None = None) -> SampleSource:
    """Open the dataset named by a DATA string: 2D samples, or with `spatial_dims` 3 whole volumes; with `volume_by` (a
    regex naming the volume and the slice index in each sample id) 2D slices grouped into volumes."""
    if volume_by is not None:
        if spatial_dims == 3:
            raise UserError(f"--volume-by {volume_by!r} groups 2D slices into volumes; with --spatial-dims 3 the "
                            "samples already are volumes: drop --volume-by")
        from .slice_volumes import SliceVolumes

        return SliceVolumes(open_source(data), volume_by)
    if data.startswith("phantom:"):
        return _open_phantom(data, spatial_dims)
    help_text = VOLUME_DATA_HELP if spatial_dims == 3 else DATA_HELP
    path = Path(data).expanduser()
    if not path.exists():
        raise UserError(f"DATA '{data}' does not exist; {help_text}")
    if not path.is_file() and not path.is_dir():
        raise UserError(f"DATA '{data}' is neither a regular file nor a folder (a pipe or device?); {help_text}")
    for layout in LAYOUTS:
        if layout.matches(path):
            reader = layout.reader_3d if spatial_dims == 3 else layout.reader_2d
            if reader is None:
                raise UserError(f"DATA '{data}' ({layout.name}) holds no volumes; {help_text}")
            return reader(path, data)
    raise UserError(f"DATA '{data}' is a file but not .h5/.hdf5; {help_text}")


def _open_phantom(data: str, spatial_dims: int) -> SampleSource:
    """The source of `phantom:<task>?n=..&size=..&seed=..`: a 2D task, or the 3D one (as volumes or as slices)."""
    from .phantoms import MIN_SIZE, PhantomSource  # lazily: only phantom DATA needs the generators

    volumes = data.startswith(f"phantom:{VOLUME_TASK}")
    task, options = parse_phantom(data, 8 if volumes else MIN_SIZE)
    if task == VOLUME_TASK:
        source = LesionVolumeSource(**options)
        return source if spatial_dims == 3 else VolumeSlices(source)
    if spatial_dims == 3:
        raise UserError(f"DATA '{data}': the 3D phantom is phantom:{VOLUME_TASK}; 2D phantoms need --spatial-dims 2")
    return PhantomSource(task=task, **options)
