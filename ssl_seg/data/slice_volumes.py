"""A 2D source whose file stems name the volume and the slice (`--volume-by REGEX`), served as slices of volumes.

A folder of PNG slices (`patient001_frame01_slice_3.png`, ...) is scored per sample by default. With `--volume-by
'^(patient\\d+_frame\\d+)_slice_(\\d+)'` the regex's first group names the volume and its second the slice index
(an integer): the samples are re-ordered volume by volume, slice by slice, each sample's case is its volume, and the
source is `volumetric`, so evaluation stacks each volume's slices in slice order and scores them in 3D (as the MSD
slice reader does), validation chooses checkpoints on that score, and the seeded split keeps every volume whole.
Stacked volumes have no voxel size in a PNG folder: their HD95 and ASD are in voxels.
"""

from __future__ import annotations

import re

from ..errors import UserError
from .sample import IndexedSource, Sample, SampleSource
from .splits import check_groups_whole, compile_groups

FLAG = "--volume-by"


def parse_volume_by(pattern: str) -> re.Pattern:
    """Compile a --volume-by regex; it must have two groups (volume, slice index)."""
    return compile_groups(FLAG, pattern, 2, "needs two groups, the volume then the slice index, e.g. "
                                            "'^(patient\\d+_frame\\d+)_slice_?(\\d+)'")


def volume_and_slice(regex: re.Pattern, sample_id: str) -> tuple[str, int]:
    """(volume id, slice index) of one sample id; UserError naming the id when the regex does not fit it."""
    match = regex.search(sample_id)
    if match is None or not match.group(1):
        raise UserError(f"{FLAG} {regex.pattern!r} does not match sample id '{sample_id}'; fix the regex")
    index = match.group(2)
    if index is None or not index.isdigit():
        raise UserError(f"{FLAG} {regex.pattern!r}: its second group must be the slice index (digits), got "
                        f"{index!r} in sample id '{sample_id}'")
    return match.group(1), int(index)


class SliceVolumes(IndexedSource):
    """`source`'s samples ordered by (volume, slice index) from `--volume-by`, each sample's case its volume."""

    volumetric = True

    def __init__(self, source: SampleSource, pattern: str):
        if getattr(source, "volumetric", False):
            raise UserError(f"{FLAG}: {source.name} already knows its volumes (MSD / SSL4MIS / 3D data); drop {FLAG}")
        regex = parse_volume_by(pattern)
        self.source, self.name = source, source.name
        self.in_channels, self.num_classes = source.in_channels, source.num_classes
        self.class_names = list(source.class_names)
        self.notes = list(getattr(source, "notes", []))
        keyed, seen = [], {}
        for index, sample_id in enumerate(source.ids):
            volume, position = volume_and_slice(regex, sample_id)
            if (volume, position) in seen:
                raise UserError(f"{FLAG} {pattern!r}: samples '{seen[volume, position]}' and '{sample_id}' are both "
                                f"slice {position} of volume '{volume}'; make the groups name each slice once")
            seen[volume, position] = sample_id
            keyed.append((volume, position, index))
        keyed.sort()
        self._where = [index for _, _, index in keyed]
        self.ids = [source.ids[i] for i in self._where]
        self.cases = [volume for volume, _, _ in keyed]
        self.slice_index = {source.ids[i]: position for _, position, i in keyed}
        self.spacing = {volume: (1.0, 1.0, 1.0) for volume in self.cases}  # PNG slices carry no voxel size
        self._index_ids()
        split = source.predefined_split
        self.predefined_split = None if split is None else {key: list(ids) for key, ids in split.items()}

    def load(self, index: int) -> Sample:
        """Sample `index` (volume order) with its volume as the case."""
        sample = self.source.load(self._where[index])
        sample.case = self.cases[index]
        return sample


def with_volumes(source: SampleSource, volume_by: str | None) -> SampleSource:
    """`source` itself, or its slices grouped into volumes by the --volume-by regex."""
    return source if volume_by is None else SliceVolumes(source, volume_by)


def check_volumes_whole(roles: dict[str, list[str]], source: SampleSource) -> None:
    """Refuse a split that puts slices of one volume into two of train / val / test (partial volumes scored)."""
    if isinstance(source, SliceVolumes):
        check_groups_whole(roles, dict(zip(source.ids, source.cases)), f"{FLAG}: volume",
                           "group the split by volume (a --group-by whose case holds whole volumes, or a split file "
                           "that lists whole volumes)")
