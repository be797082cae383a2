"""Efficacy: every semi-supervised method learns from its unlabeled images, and only through its unlabeled loss.

The task: 32 px images, z-scored per image as the data pipeline does, each with a bright disk in the top half and
a disk of variable contrast in the bottom half, on Gaussian noise. The labeled images show the bottom disk only at
high contrast; the unlabeled ones over a continuum of contrasts down to near the noise; the test images only at low
contrast. Supervised training learns the bright disks and misses the dim ones; a method that pseudo-labels or
enforces consistency on the unlabeled images can carry the segmentation down the continuum. Test Dice is scored on
the bottom half only (the dim disks). The bright top disk and the z-scoring keep per-image statistics, and so
BatchNorm's, close across the three sets: with one disk per image and no z-scoring, the zeroed variants gained 0.1-0.5
Dice over supervised from BatchNorm statistics alone.

Each method must beat supervised by MARGIN and beat the same method with its unlabeled loss weighted 0 (which still
runs every unlabeled forward pass, so BatchNorm statistics see the same images) by UNLABELED_GAIN; the zeroed method
must not beat supervised by MARGIN. BCP is the exception to the last rule: zeroed, it still pastes unlabeled images
into every training input, which alone lifted it far above supervised here (0.59 against 0.08, BCP itself 0.74), so
for BCP only the gain over its zeroed self shows the unlabeled loss at work. The network scored is each
method's first trainable network (`method.models`), the one its loss trains: an EMA teacher (mean-teacher,
uncertainty-mt) sets its BatchNorm buffers from unlabeled passes only, which by itself lifted the zeroed
mean-teacher's teacher from 0.08 to 0.48 Dice here.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import ssl_seg.methods.unimatch as unimatch_module
from ssl_seg.config import MethodConfig
from ssl_seg.engine.trainer import Trainer, constant_lr, seed_everything
from ssl_seg.methods import build_method, method_names
from ssl_seg.methods.losses import build_loss
from ssl_seg.models import build_model

SIZE, NOISE = 32, 0.1
LABELED, UNLABELED, TEST = (0.8, 1.0), (0.1, 1.0), (0.15, 0.35)  # contrast ranges of the bottom disk
STEPS, LABELED_BATCH, UNLABELED_BATCH, LR = 150, 4, 4, 3e-3
MARGIN = 0.2  # Dice over supervised that a method must gain and its zeroed variant must not (BCP: see above)
UNLABELED_GAIN = 0.07  # Dice the unlabeled loss must add over the zeroed variant (measured: 0.15 for BCP, >= 0.3 others)

# per method: options passed explicitly (defaults otherwise), and the loss terms that zeroing must silence
OPTIONS: dict[str, dict[str, Any]] = {
    "mean-teacher": {},
    "pseudo-label": {"threshold": 0.9},
    "cps": {},
    "unimatch": {"threshold": 0.95},
    "uncertainty-mt": {},
    "bcp": {},
}
UNLABELED_TERMS: dict[str, tuple[str, ...]] = {
    "mean-teacher": ("cons",),
    "pseudo-label": ("unsup",),
    "cps": ("cps",),
    "unimatch": ("strong", "fp"),
    "uncertainty-mt": ("cons",),
    "bcp": (),  # its terms mix labeled and unlabeled pixels; mixed_unlabeled_weight=0 zeroes the unlabeled ones
}
def two_disk_images(n: int, contrast: tuple[float, float], seed: int) -> tuple[Tensor, Tensor]:
    """n z-scored images (n, 1, SIZE, SIZE), contrast-1 disk on top, one of `contrast` below; masks (n, SIZE, SIZE)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")

    def disk(top: float) -> Tensor:
        cy = top + 4 * torch.rand(n, generator=g)
        cx = 6 + 20 * torch.rand(n, generator=g)
        radius = 3 + 2 * torch.rand(n, generator=g)
        return ((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2) < radius[:, None, None] ** 2

    upper, lower = disk(6), disk(22)
    c = contrast[0] + (contrast[1] - contrast[0]) * torch.rand(n, generator=g)
    images = (upper + c[:, None, None] * lower + NOISE * torch.randn(n, SIZE, SIZE, generator=g))[:, None].float()
    images = (images - images.mean(dim=(1, 2, 3), keepdim=True)) / images.std(dim=(1, 2, 3), keepdim=True)
    return images, (upper | lower).long()


X_LABELED, Y_LABELED = two_disk_images(8, LABELED, seed=1)
X_UNLABELED, _ = two_disk_images(64, UNLABELED, seed=2)
X_TEST, Y_TEST = two_disk_images(64, TEST, seed=3)


def batches(start: int) -> Iterator[dict[str, Any]]:
    """The trainer's batch source: the same labeled/unlabeled draws for every method, from step `start` on."""
    g = torch.Generator().manual_seed(100)
    for step in range(STEPS):
        il = torch.randint(len(X_LABELED), (LABELED_BATCH,), generator=g)
        iu = torch.randint(len(X_UNLABELED), (UNLABELED_BATCH,), generator=g)
        if step >= start:
            mask = Y_LABELED[il]
            yield {"labeled": {"image": X_LABELED[il], "mask": mask, "roi": torch.ones_like(mask, dtype=torch.bool)},
                   "unlabeled": {"image": X_UNLABELED[iu]}}


def dim_disk_dice(model: nn.Module, images: Tensor = X_TEST, masks: Tensor = Y_TEST) -> float:
    """Foreground Dice pooled over the bottom half (the variable disk) of `images`, the model in eval mode."""
    model.eval()
    with torch.no_grad():
        pred = model(images).argmax(dim=1)[:, SIZE // 2:] == 1
    truth = masks[:, SIZE // 2:] == 1
    return 2 * (pred & truth).sum().item() / max(1, pred.sum().item() + truth.sum().item())


def train(name: str, zeroed: bool = False) -> tuple[nn.Module, dict[str, float]]:
    """Train `name` (unlabeled loss weighted 0 if `zeroed`) with the Trainer: its first trainable net, last losses."""
    seed_everything(0)
    model = build_model("unet", 1, 2, base_channels=4, depth=3)
    options = {"rampup_fraction": 0.2, **OPTIONS.get(name, {})}
    if zeroed:
        options.update(consistency_weight=0.0, options={"mixed_unlabeled_weight": 0.0} if name == "bcp" else {})
    method = build_method(name, model, MethodConfig(name=name, **options), 2, STEPS, build_loss("dice_ce"))
    optimizer = torch.optim.Adam(method.parameters(), lr=LR)
    trainer = Trainer(method, optimizer, constant_lr(LR), batches, STEPS, torch.device("cpu"))
    trainer.fit()
    return next(iter(method.models.values())), trainer.losses


@pytest.fixture(scope="module")
def supervised() -> nn.Module:
    """The supervised baseline, trained once for the module."""
    return train("supervised")[0]


def test_every_semi_supervised_method_is_checked() -> None:
    """Every registered method except supervised has options and unlabeled terms here."""
    assert set(OPTIONS) == set(UNLABELED_TERMS) == set(method_names()) - {"supervised"}


def test_supervised_learns_the_bright_mode_and_misses_the_dim_one(supervised: nn.Module) -> None:
    """The labeled images teach bright bottom disks well but not the test's dim ones."""
    bright_images, bright_masks = two_disk_images(64, LABELED, seed=4)
    assert dim_disk_dice(supervised, bright_images, bright_masks) > 0.8
    assert dim_disk_dice(supervised) < 0.3


@pytest.mark.parametrize("name", list(UNLABELED_TERMS))
def test_method_gains_only_through_its_unlabeled_loss(
    name: str, supervised: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The method beats supervised by MARGIN on the dim disks and its zeroed self by UNLABELED_GAIN; zeroed, it does
    not beat supervised by MARGIN (except BCP, whose copy-paste alone does)."""
    baseline = dim_disk_dice(supervised)
    full = dim_disk_dice(train(name)[0])
    if name == "unimatch":  # no weight field: its unlabeled terms are scaled by the ramp-up alone
        monkeypatch.setattr(unimatch_module, "sigmoid_rampup", lambda step, length: 0.0)
    zeroed_model, zeroed_losses = train(name, zeroed=True)
    zeroed = dim_disk_dice(zeroed_model)
    assert all(zeroed_losses[term] == 0.0 for term in UNLABELED_TERMS[name]), zeroed_losses
    summary = f"{name}: supervised {baseline:.3f}, method {full:.3f}, zeroed {zeroed:.3f}"
    assert full >= baseline + MARGIN, summary
    assert full >= zeroed + UNLABELED_GAIN, summary
    if name != "bcp":
        assert zeroed < baseline + MARGIN, summary
