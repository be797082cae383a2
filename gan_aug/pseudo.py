"""Confident pseudo-labeled pairs for the GAN (`gan-aug train --pseudo-labels RUN_DIR`).

A semi-supervised run predicts the unlabeled training images of the GAN's split. A pair is kept when
(1) per pixel: a pixel is confident when its top class probability reaches `pixel_threshold`;
(2) per image: at least `min_confident` of its pixels (inside its ROI) are confident, since pix2pix needs a
    whole mask, the image is kept or dropped as a whole, with the argmax as its mask;
(3) class balance: the kept masks follow the labeled masks' mix of foreground-class sets (which classes an
    image shows), the most confident first, at most `max_per_labeled` pseudo pairs per labeled pair, so a
    segmenter's easy cases (often: nothing there) cannot crowd out the rest.
Validation and test images of the split are never pseudo-labeled.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ssl_seg.data.sample import SampleSource

from ssl_seg.data.sources import open_source
from ssl_seg.data.splits import Split
from ssl_seg.errors import UserError


@dataclass(frozen=True)
class PseudoFilter:
    """How confident a pseudo-labeled pair must be, and how many the GAN may get."""

    pixel_threshold: float = 0.9  # top class probability of a confident pixel
    min_confident: float = 0.95  # share of confident pixels for an image to be kept
    max_per_labeled: float = 4.0  # pseudo pairs per labeled pair, at most


@dataclass
class Candidate:
    """One pseudo-labeled image: its id, argmax mask (H, W), share of confident pixels, mean top probability."""

    id: str
    mask: np.ndarray
    confident: float
    mean_confidence: float


def score(sample_id: str, probs: np.ndarray, pixel_threshold: float, roi: np.ndarray | None = None) -> Candidate:
    """probs (K, H, W) summing to 1 over K -> the image's Candidate (confidence counted inside `roi`)."""
    top = probs.max(axis=0)
    inside = top if roi is None else top[roi.astype(bool)]
    if inside.size == 0:
        return Candidate(sample_id, probs.argmax(axis=0).astype(np.int64), 0.0, 0.0)
    return Candidate(sample_id, probs.argmax(axis=0).astype(np.int64), float((inside >= pixel_threshold).mean()),
                     float(inside.mean()))


def signature(mask: np.ndarray) -> frozenset[int]:
    """The foreground classes a mask shows."""
    return frozenset(int(c) for c in np.unique(mask) if c != 0)


def select(candidates: list[Candidate], labeled_masks: list[np.ndarray], filt: PseudoFilter) -> list[Candidate]:
    """Accepted candidates (per-image confidence), then class-balanced quotas per foreground-class set, in
    proportion to the labeled masks (sets no labeled mask shows get none), most confident first."""
    accepted = [c for c in candidates if c.confident >= filt.min_confident]
    total = int(math.floor(filt.max_per_labeled * len(labeled_masks)))
    labeled_mix = Counter(signature(m) for m in labeled_masks)
    chosen = []
    for sig, count in sorted(labeled_mix.items(), key=lambda kv: sorted(kv[0])):
        quota = int(round(total * count / len(labeled_masks)))
        pool = sorted((c for c in accepted if signature(c.mask) == sig), key=lambda c: (-c.mean_confidence, c.id))
        chosen += pool[:quota]
    return sorted(chosen, key=lambda c: c.id)


def predict_unlabeled(model, source: SampleSource, ids: list[str], patch_size: int,
                      device) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(id, class probabilities (K, H, W), roi (H, W)) of each sample, as `ssl-seg evaluate` predicts it."""
    from ssl_seg.data.datasets import EvalDataset
    from ssl_seg.evaluation.scoring import predict_image, training_pad

    data = EvalDataset(source, ids, pad_to=training_pad(model, patch_size))
    for k in range(len(data)):
        item = data[k]
        probs = predict_image(model, item["image"], patch_size, source.num_classes, device)
        yield item["id"], probs[:, :item["size"][0], :item["size"][1]].numpy(), item["roi"].numpy()


def pseudo_label(run_dir: str | Path, source: SampleSource, split: Split, labeled_masks: list[np.ndarray],
                 filt: PseudoFilter, device: str = "auto") -> tuple[list[Candidate], dict[str, Any]]:
    """Predict the unlabeled training images of `split` with RUN_DIR's best network and keep the confident,
    class-balanced ones; returns them and a summary (counts at each filter, thresholds)."""
    from ssl_seg.device import resolve_device
    from ssl_seg.engine.run_models import load_run

    run_dir = Path(run_dir)
    if not (run_dir / "best.pt").is_file():
        raise UserError(f"--pseudo-labels {run_dir}: no best.pt there; pass the --out of a finished "
                        "'ssl-seg train' run on the same data")
    dev = resolve_device(device)
    model, cfg, info = load_run(run_dir, "best", dev)
    if open_source(cfg.data.data).name != source.name or info["num_classes"] != source.num_classes:
        raise UserError(f"--pseudo-labels {run_dir}: that run was trained on '{cfg.data.data}' "
                        f"({info['num_classes']} classes), the GAN on '{source.name}' ({source.num_classes}); "
                        "use a run on the GAN's data")
    leaked = set(Split.load(run_dir / "split.json").labeled) & (set(split.val) | set(split.test))
    if leaked:
        raise UserError(f"--pseudo-labels {run_dir}: that run trained on the labels of {len(leaked)} validation/test "
                        f"image(s) of the GAN's split (e.g. {sorted(leaked)[0]}); use a run on the GAN's split")
    held_out = set(split.labeled) | set(split.val) | set(split.test)
    pool = [i for i in split.unlabeled if i not in held_out]
    if not pool:
        raise UserError(f"{source.name}: the GAN's split has no unlabeled training images to pseudo-label")
    candidates = [score(sample_id, probs, filt.pixel_threshold, roi)
                  for sample_id, probs, roi in predict_unlabeled(model, source, pool, cfg.data.patch_size, dev)]
    chosen = select(candidates, labeled_masks, filt)
    summary = {"run": str(run_dir.resolve()), "filter": filt.__dict__, "unlabeled": len(pool),
               "accepted_per_image": sum(c.confident >= filt.min_confident for c in candidates),
               "kept_after_balance": len(chosen), "labeled": len(labeled_masks),
               "kept_ids": [c.id for c in chosen]}
    return chosen, summary
