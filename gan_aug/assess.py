"""Quality of a synthetic paired dataset, judged by a segmenter of the real task.

* mask fidelity: the segmenter's Dice on synthetic images against their conditioning masks, beside its
  Dice on real test images (a generator that ignores its mask scores far below the real value);
* FID / KID on the segmenter's encoder features (global-average-pooled deepest `encode` output), beside
  the same distance between two halves of the real data (the floor for this sample size);
* memorisation: each synthetic image's nearest real training crop by feature cosine, beside real test
  crops' nearest training crops; synthetic images above the test 99th percentile are near-copies;
* TSTR: real-test Dice of a segmenter trained on synthetic pairs only / of one trained on the real
  labeled pairs with the same recipe.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg
import torch

from ssl_seg.config import RunConfig
from ssl_seg.data.sample import SampleSource
from ssl_seg.data.sources import open_source
from ssl_seg.data.transforms import normalize
from ssl_seg.device import resolve_device
from ssl_seg.errors import UserError
from ssl_seg.experiments.profiles import native_patch
from ssl_seg.io_utils import atomic_path, atomic_write_json, inside, jsonable, read_json
from ssl_seg.models.blocks import pad_to_multiple

from .config import GanConfig
from .data import gan_split, pad_to

NEAR_COPY_PERCENTILE = 99.0


# ------------------------------------------------------------------------------------------- distances


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians (the FID formula)."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # singular product (fewer samples than features): regularise
        offset = np.eye(len(mu1)) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)  # numerical error leaves tiny imaginary parts
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean), 0.0))


def fid(x: np.ndarray, y: np.ndarray) -> float:
    """FID between feature sets x (N, D) and y (M, D) (N, M >= 2)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))


def mmd2_polynomial(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic kernel k(a, b) = (a.b / D + 1)^3 (Binkowski et al. 2018)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d, n, m = x.shape[1], len(x), len(y)
    k_xx, k_yy, k_xy = ((x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3)
    return float((k_xx.sum() - np.trace(k_xx)) / (n * (n - 1)) + (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
                 - 2 * k_xy.mean())


def kid(x: np.ndarray, y: np.ndarray, subsets: int = 10, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID: mean and std of the unbiased polynomial MMD^2 over random subsets of min(subset_size, N, M)."""
    rng = np.random.default_rng(seed)
    size = min(subset_size, len(x), len(y))
    values = [mmd2_polynomial(x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)])
              for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def nearest_cosine(queries: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query row, the highest cosine similarity to a reference row and that row's index."""
    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    sims = unit(queries) @ unit(reference).T  # (Nq, Nr)
    return sims.max(axis=1), sims.argmax(axis=1)


# ------------------------------------------------------------------------------------------- features


def crop_pairs(source: SampleSource, owners: list[str], size: int,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random (size, size) crop per entry of `owners` (sample ids; a repeated id is loaded once per run of
    repeats), zero-padded when smaller -> images (N, C, S, S) float32 in [0, 1], masks (N, S, S) int64 (background
    where a sample has no mask)."""
    images, masks, loaded = [], [], None
    for sample_id in owners:
        if loaded is None or loaded[0] != sample_id:
            sample = source.load(source.index_of(sample_id))
            mask = sample.mask if sample.mask is not None else np.zeros(sample.image.shape[-2:], np.int64)
            loaded = (sample_id, pad_to(sample.image, size), pad_to(mask, size))
        _, image, mask = loaded
        y, x = (int(rng.integers(image.shape[-2] - size + 1)), int(rng.integers(image.shape[-1] - size + 1)))
        images.append(image[:, y:y + size, x:x + size])
        masks.append(mask[y:y + size, x:x + size])
    return np.stack(images).astype(np.float32), np.stack(masks).astype(np.int64)


def random_crops(source: SampleSource, ids: list[str], size: int, per_image: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """`per_image` random (size, size) crops of each sample's image (zero-padded if smaller) -> (N, C, S, S), ids."""
    owners = [sample_id for sample_id in ids for _ in range(per_image)]
    return crop_pairs(source, owners, size, rng)[0], owners


@torch.no_grad()
def encoder_features(model: torch.nn.Module, images: np.ndarray, device: torch.device,
                     batch_size: int = 32) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] -> (N, D) global-average-pooled deepest encoder features (float64)."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = torch.stack([normalize(torch.from_numpy(im)) for im in images[start:start + batch_size]])  # as in training
        x = pad_to_multiple(x.to(device), model.stride)
        out.append(model.encode(x)[-1].float().mean(dim=(2, 3)).cpu().double().numpy())  # (b, D)
    return np.concatenate(out)


# ------------------------------------------------------------------------------------------- assess


def load_synthetic(syn_dir: str | Path) -> tuple[SampleSource, str, dict[str, Any]]:
    """The synthetic dataset of a SYN_DIR, the DATA string it opens from, and its manifest."""
    syn_dir = Path(syn_dir)
    manifest_path = syn_dir / "manifest.json"
    if not manifest_path.is_file():
        raise UserError(f"--synthetic {syn_dir}: no manifest.json; pass a folder made by 'gan-aug synthesize'")
    fix = "regenerate the folder with 'gan-aug synthesize'"
    manifest = read_json(manifest_path, fix)
    try:
        hdf5 = manifest["format"] == "hdf5"
        data = str(inside(syn_dir, manifest["files"]["hdf5"], str(manifest_path))) if hdf5 else str(syn_dir)
        manifest["gan_config"]
    except (TypeError, KeyError) as e:
        raise UserError(f"{manifest_path}: not a synthesize manifest (no {e}); {fix}") from None
    return open_source(data), data, manifest


# crop of assess's own segmenters: the quick profile's, cut to the images' native size, never below the GAN's crop
SEGMENTER_PATCH = 64


def segmenter_patch(gan_cfg: GanConfig, data: str) -> int:
    """The crop of assess's segmenters: SEGMENTER_PATCH cut to the data's size (ssl-seg's `native_patch`), or the
    GAN's crop when larger. A GAN cropping inside small images (32 px of a 35 x 50 slice) leaves its segmenters
    at ssl-seg's size: at 32 px and 300 steps the real-only U-Net never left background (TRTR 0)."""
    return max(gan_cfg.patch_size, native_patch(data, SEGMENTER_PATCH))


def segmenter_config(gan_cfg: GanConfig, data: str, patch: int, out: Path, iterations: int, seed: int, device: str,
                     progress: bool, synthetic: str | None = None) -> RunConfig:
    """A small supervised U-Net on the GAN's split at `patch`; with `synthetic`, every labeled batch is synthetic."""
    cfg = RunConfig(out=str(out))
    d = cfg.data
    d.data, d.patch_size, d.split_file, d.split_seed = data, patch, gan_cfg.split_file, gan_cfg.split_seed
    d.fractions, d.group_by = tuple(gan_cfg.fractions), gan_cfg.group_by
    d.labeled_fraction, d.labeled_cases = gan_cfg.labeled_fraction, gan_cfg.labeled_cases
    if synthetic is not None:
        d.synthetic, d.synthetic_ratio = [synthetic], 1.0
    cfg.model.backbone, cfg.model.base_channels = "unet", 16
    cfg.method.name = "supervised"
    t = cfg.train
    t.iterations, t.seed, t.device, t.progress = iterations, seed, device, progress
    t.val_every = t.log_every = max(iterations // 4, 1)
    t.image_every = iterations
    return cfg


def train_or_reuse(cfg: RunConfig, device: torch.device) -> torch.nn.Module:
    """Train the run (or reuse it when its folder already holds result.json) and return its best model."""
    from ssl_seg.engine.run_models import load_run
    from ssl_seg.engine.runner import run_training

    if not (Path(cfg.out) / "result.json").is_file():
        run_training(cfg)
    return load_run(cfg.out, "best", device)[0]


def whole_cases(source: SampleSource, ids: list[str], limit: int) -> list[str]:
    """The first `limit` of `ids`; on slices of volumes, the whole cases among them (at least one), since a cut
    volume scores as a smaller one."""
    if not getattr(source, "volumetric", False):
        return ids[:limit]
    by_case: dict[str, list[str]] = {}
    for sample_id in ids:
        by_case.setdefault(source.cases[source.index_of(sample_id)], []).append(sample_id)
    kept: list[str] = []
    for members in by_case.values():
        if kept and len(kept) + len(members) > limit:
            break
        kept += members
    return kept


def real_score(model: torch.nn.Module, source: SampleSource, ids: list[str], patch: int,
               device: torch.device) -> float | None:
    """The score the runs select and report on: per-volume 3D Dice on slices of volumes (where an empty slice,
    predicted empty, would count as Dice 1 in the slice mean), else the case-mean Dice."""
    from ssl_seg.evaluation.scoring import evaluate_model, selection_score

    value = selection_score(evaluate_model(model, source, ids, patch, device))
    return None if math.isnan(value) else value


def mask_fidelity(model: torch.nn.Module, patch: int, syn: SampleSource, syn_ids: list[str], real: SampleSource,
                  test_ids: list[str], device: torch.device) -> dict[str, Any]:
    """Segmenter Dice on synthetic images vs their conditioning masks, and on real test images."""
    return {"synthetic_dice": real_score(model, syn, syn_ids, patch, device),
            "real_dice": real_score(model, real, test_ids, patch, device),
            "n_synthetic": len(syn_ids), "n_real": len(test_ids)}


def train_synthetic_test_real(syn_model: torch.nn.Module, real_model: torch.nn.Module, patch: int,
                              real: SampleSource, test_ids: list[str], device: torch.device) -> dict[str, Any]:
    """Real-test Dice of the synthetic-only segmenter, of the real-only one, and their ratio (TSTR / TRTR)."""
    tstr = real_score(syn_model, real, test_ids, patch, device)
    trtr = real_score(real_model, real, test_ids, patch, device)
    return {"synthetic_only_dice": tstr, "real_only_dice": trtr,
            "ratio": tstr / trtr if tstr is not None and trtr else float("nan")}


def feature_distances(feats_syn: np.ndarray, feats_real: np.ndarray, seed: int) -> dict[str, Any]:
    """FID and KID of synthetic vs real half A, beside real half B vs A, all three sets of one size (both
    distances shrink with the sample size, so only equal sizes compare)."""
    n = min(len(feats_real) // 2, len(feats_syn))
    a, b, s = feats_real[:n], feats_real[n:2 * n], feats_syn[:n]
    kid_syn, kid_real = kid(s, a, seed=seed), kid(b, a, seed=seed)
    return {"fid": {"synthetic_vs_real": fid(s, a), "real_vs_real": fid(b, a), "n_per_set": len(s)},
            "kid": {"synthetic_vs_real": kid_syn[0], "synthetic_vs_real_std": kid_syn[1],
                    "real_vs_real": kid_real[0], "real_vs_real_std": kid_real[1]}}


def memorisation(feats_syn: np.ndarray, syn_ids: list[str], feats_train: np.ndarray, train_ids: list[str],
                 feats_test: np.ndarray) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Nearest training crop per synthetic and per real test image; near-copies beat the test 99th percentile."""
    centre = feats_train.mean(0)  # post-ReLU features are all positive: centre them so cosine discriminates
    sim_syn, nearest = nearest_cosine(feats_syn - centre, feats_train - centre)
    sim_test, _ = nearest_cosine(feats_test - centre, feats_train - centre)
    threshold = float(np.percentile(sim_test, NEAR_COPY_PERCENTILE))
    flagged = np.argsort(-sim_syn)[: int((sim_syn > threshold).sum())]
    report = {
        "threshold": threshold, "near_copies": len(flagged), "near_copy_fraction": len(flagged) / len(sim_syn),
        "expected_fraction": round(1 - NEAR_COPY_PERCENTILE / 100, 6),
        "synthetic_similarity": _quantiles(sim_syn), "test_similarity": _quantiles(sim_test),
        "flagged": [{"synthetic": syn_ids[i], "train": train_ids[nearest[i]], "similarity": float(sim_syn[i])}
                    for i in flagged[:20]],
    }
    return report, sim_syn, sim_test


def assess(synthetic: str | Path, data: str | None = None, segmenter: str | Path | None = None,
           out: str | Path | None = None, device: str = "auto", iterations: int = 300, max_samples: int = 256,
           seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Score SYN_DIR against the real DATA; writes OUT/quality.json and OUT/quality.png, returns the report.

    Without `segmenter`, the small real-data U-Net trained for the TSTR baseline also scores fidelity and
    provides the features. Segmenters trained here live in OUT/segmenter_{real,synthetic} and are reused.
    """
    from ssl_seg.engine.run_models import load_run

    if max_samples < 4:
        raise UserError(f"--max-samples {max_samples}: use at least 4 (FID needs a covariance)")
    dev = resolve_device(device)
    syn, syn_data, manifest = load_synthetic(synthetic)
    gan_cfg = GanConfig.from_dict(manifest["gan_config"])
    real = open_source(data or gan_cfg.data)
    _check_task(real.name, real.num_classes, real.in_channels, syn, "--data")
    split = gan_split(gan_cfg, real)
    test_ids = whole_cases(real, split.test or split.val, max_samples)
    if not test_ids:
        raise UserError(f"{real.name}: the split has no test or val samples to score on; change the split")
    out = Path(out) if out is not None else Path(synthetic) / "quality"
    out.mkdir(parents=True, exist_ok=True)

    given = None
    if segmenter is not None:
        model, run_cfg, info = load_run(segmenter, "best", dev)
        _check_task(f"{segmenter}", info["num_classes"], info["in_channels"], syn, "--segmenter")
        given = (model, run_cfg.data.patch_size)
    seg_patch = segmenter_patch(gan_cfg, real.name)
    real_model = train_or_reuse(segmenter_config(gan_cfg, real.name, seg_patch, out / "segmenter_real", iterations,
                                                 seed, device, progress), dev)
    model, patch = given or (real_model, seg_patch)
    syn_ids = list(syn.ids[:max_samples])
    report: dict[str, Any] = {"synthetic": str(synthetic), "data": real.name, "out": str(out),
                              "segmenter": str(segmenter or out / "segmenter_real"),
                              "fidelity": mask_fidelity(model, patch, syn, syn_ids, real, test_ids, dev)}

    rng = np.random.default_rng(seed)
    size = gan_cfg.patch_size
    pool = [real.ids[i] for i in rng.permutation(len(real))[:2 * max_samples]]
    if len(pool) < 4:
        raise UserError(f"{real.name}: need at least 4 real images for the real-vs-real reference")
    feats_real = encoder_features(model, random_crops(real, pool, size, 1, rng)[0], dev)
    feats_syn = encoder_features(model, np.stack([syn.load(syn.index_of(i)).image for i in syn_ids]), dev)
    report.update(feature_distances(feats_syn, feats_real, seed))

    per_image = max(1, min(16, math.ceil(max_samples / len(split.labeled))))
    train_crops, train_owner = random_crops(real, split.labeled, size, per_image, rng)
    feats_test = encoder_features(model, random_crops(real, test_ids, size, 1, rng)[0], dev)
    report["memorisation"], sim_syn, sim_test = memorisation(
        feats_syn, syn_ids, encoder_features(model, train_crops, dev), train_owner, feats_test)

    syn_model = train_or_reuse(segmenter_config(gan_cfg, real.name, seg_patch, out / "segmenter_synthetic",
                                                iterations, seed, device, progress, synthetic=syn_data), dev)
    report["tstr"] = train_synthetic_test_real(syn_model, real_model, seg_patch, real, test_ids, dev)
    report["tstr"]["iterations"] = iterations
    atomic_write_json(out / "quality.json", jsonable(report))
    _plot(report, sim_syn, sim_test, out / "quality.png")
    return report


def _check_task(name: str, num_classes: int, in_channels: int, syn: SampleSource, flag: str) -> None:
    if (num_classes, in_channels) != (syn.num_classes, syn.in_channels):
        raise UserError(f"{flag} {name} has {num_classes} classes / {in_channels} channels but the synthetic data "
                        f"has {syn.num_classes} / {syn.in_channels}; use one of the GAN's task")


def _quantiles(values: np.ndarray) -> dict[str, float]:
    return {f"p{q}": float(np.percentile(values, q)) for q in (1, 50, 99)} | {"mean": float(values.mean())}


def _plot(report: dict[str, Any], sim_syn: np.ndarray, sim_test: np.ndarray, path: Path) -> None:
    """Four panels: fidelity, FID/KID against the real floor, memorisation histograms, TSTR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    f = report["fidelity"]
    axes[0].bar(["synthetic", "real test"], [f["synthetic_dice"] or 0, f["real_dice"] or 0], color=["C1", "C0"])
    axes[0].set(title="mask fidelity (segmenter Dice)", ylim=(0, 1))
    d, k = report["fid"], report["kid"]
    axes[1].bar(["FID syn/real", "FID real/real"], [d["synthetic_vs_real"], d["real_vs_real"]], color=["C1", "C0"])
    axes[1].set(title=f"encoder FID (KID {k['synthetic_vs_real']:.3g} vs {k['real_vs_real']:.3g})")
    bins = np.linspace(min(sim_syn.min(), sim_test.min()), 1, 30)
    axes[2].hist(sim_test, bins=bins, alpha=0.6, density=True, label="real test", color="C0")
    axes[2].hist(sim_syn, bins=bins, alpha=0.6, density=True, label="synthetic", color="C1")
    axes[2].axvline(report["memorisation"]["threshold"], color="k", ls="--", label="test p99")
    axes[2].set(title=f"nearest train crop ({report['memorisation']['near_copies']} near-copies)", xlabel="cosine")
    axes[2].legend(fontsize=7)
    t = report["tstr"]
    axes[3].bar(["synthetic only", "real only"], [t["synthetic_only_dice"] or 0, t["real_only_dice"] or 0],
                color=["C1", "C0"])
    axes[3].set(title="real-test Dice (TSTR)", ylim=(0, 1))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
