"""The seam between a sweep and a generator of synthetic pairs: what is asked for (`SynthesisRequest`), what answers
(`Synthesizer`), and where answers are found (the `ssl_seg.synthesizers` entry points; gan_aug registers pix2pix and diffusion)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol

from ..errors import UserError


@dataclass(frozen=True)
class SynthesisRequest:
    """Synthetic pairs made from the labeled pairs of one split of one dataset (the split the runs use)."""

    data: str
    labeled_fraction: float
    split_seed: int
    out_dir: Path  # the synthesizer's own folder (generator, synthetic sets), reused when its work is finished
    profile: str  # the budget profile (generator steps, pairs)
    device: str
    n: int | None = None  # pairs (or volumes); None: the profile's
    mask_source: str = "deform"  # where new masks come from (gan_aug/masks.py)
    spatial_dims: int = 2
    group_by: str | None = None  # the runs' case grouping, so the generator sees exactly their labeled pairs
    split_file: str | None = None


class Synthesizer(Protocol):
    """Makes the synthetic set a request asks for and returns the DATA path a run's --synthetic reads."""

    def __call__(self, request: SynthesisRequest) -> Path: ...


def synthesizer(name: str = "pix2pix") -> Synthesizer:
    """The synthesizer registered under `name` in the `ssl_seg.synthesizers` entry-point group."""
    found = {e.name: e for e in entry_points(group="ssl_seg.synthesizers")}
    if name not in found:
        raise UserError(f"--generator {name}: no such synthesizer for --train-gan; installed: "
                        f"{sorted(found) or 'none'} (install medseg-lab with its gan_aug package: pip install -e .)")
    return found[name].load()
