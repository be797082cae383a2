"""Per-step speed of every method and of the GAN step, each as a ratio to a bare PyTorch loop timed beside it.

Every candidate is timed in ONE process next to its reference (the same network, batch and optimizer in a
plain loop, float32, contiguous layout): both warm up, then alternating segments of `--steps` steps each; the ratio is candidate time /
reference time summed over the segments (the spread over segments is printed too). On a shared machine
only these ratios mean something; absolute seconds move with the other jobs' load. Also the data pipeline
alone: batches per second of the training batches (decode, augment, crop) at 128 and 256 px; and
`gan-aug synthesize` (64 pairs at 128 px) as now against its float32 path of before, also side by side.

    OMP_NUM_THREADS=1 python benchmarks/speed.py                   # default: a few minutes on 2 cores
    OMP_NUM_THREADS=1 python benchmarks/speed.py --only mean-teacher gan --segments 6
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ssl_seg.config import RunConfig
from ssl_seg.data.sources import open_source
from ssl_seg.device import amp_dtype, cpu_supports_bf16
from ssl_seg.methods import method_names
from ssl_seg.models import build_model
from ssl_seg.engine.run_models import build_method_for
from ssl_seg.engine.runner import build_split, loader_factory, step_batches
from ssl_seg.engine.optim import build_optimizer
from ssl_seg.engine.trainer import Trainer

K = 4  # phantom:cardiac classes


def side_by_side(candidate: Callable[[], None], reference: Callable[[], None], warmup: int, segments: int,
                 steps: int) -> tuple[float, list[float], float]:
    """(total ratio candidate/reference, per-segment ratios, reference seconds per step) over alternating segments."""
    for _ in range(warmup):
        reference()
        candidate()
    ratios, cand_total, ref_total = [], 0.0, 0.0
    for segment in range(segments):
        times = {}
        order = (("ref", reference), ("cand", candidate)) if segment % 2 == 0 else (("cand", candidate), ("ref", reference))
        for key, fn in order:
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            times[key] = time.perf_counter() - t0
        ratios.append(times["cand"] / times["ref"])
        cand_total += times["cand"]
        ref_total += times["ref"]
    return cand_total / ref_total, ratios, ref_total / (segments * steps)


def phantom_images(n: int, size: int, seed: int, spatial_dims: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """n z-scored-like images (n, 1, *S) with K-class masks (n, *S), S = (size,) * spatial_dims: fixed data shared
    by both loops."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.randint(0, K, (n, *(size // 8,) * spatial_dims), generator=g)
    masks = F.interpolate(masks[:, None].float(), size=(size,) * spatial_dims, mode="nearest")[:, 0].long()
    return masks[:, None].float() + 0.3 * torch.randn(n, 1, *(size,) * spatial_dims, generator=g), masks


def bare_supervised(size: int, base: int, batch: int, seed: int, spatial_dims: int = 2) -> Callable[[], None]:
    """SSL4MIS-style plain step: one U-Net, CE + soft Dice on `batch` labeled images, SGD (momentum, nesterov)."""
    torch.manual_seed(seed)
    model = build_model("unet", 1, K, base_channels=base, spatial_dims=spatial_dims).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4, nesterov=True)
    x, y = phantom_images(batch, size, seed, spatial_dims)
    onehot = F.one_hot(y, K).movedim(-1, 1).float()
    dims = (0, *range(2, onehot.ndim))

    def step() -> None:
        logits = model(x)
        probs = logits.softmax(dim=1)
        inter, union = (probs * onehot).sum(dims), (probs + onehot).sum(dims)
        loss = F.cross_entropy(logits, y) + 1 - (2 * inter[1:] / (union[1:] + 1e-5)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def method_step(name: str, size: int, base: int, labeled: int, unlabeled: int, seed: int,
                amp: str, channels_last: bool = True, spatial_dims: int = 2, backbone: str = "unet",
                backbone_options: str | None = None) -> Callable[[], None]:
    """One medseg-lab training step (Trainer.train_step: method losses, backward, optimizer, after_step)."""
    torch.manual_seed(seed)
    cfg = RunConfig()  # the run defaults (channels_last on), as `ssl-seg train` builds them
    cfg.model.base_channels, cfg.method.name, cfg.train.iterations = base, name, 10_000
    cfg.model.backbone, cfg.model.backbone_options = backbone, backbone_options
    cfg.data.spatial_dims, cfg.data.patch_size = spatial_dims, size
    cfg.train.channels_last = channels_last
    device = torch.device("cpu")
    method = build_method_for(cfg, {"in_channels": 1, "num_classes": K}, device)
    opt, lr_at = build_optimizer(cfg.train, method.parameters())  # the run default: SGD 0.01, poly decay
    trainer = Trainer(method, opt, lr_at, lambda s: [], 10_000, device, amp_dtype(device, amp), cfg.train.channels_last)
    x, y = phantom_images(labeled + unlabeled, size, seed, spatial_dims)
    batch = {"labeled": {"image": x[:labeled], "mask": y[:labeled], "roi": torch.ones_like(y[:labeled], dtype=torch.bool)},
             "unlabeled": {"image": x[labeled:]} if name != "supervised" else None}
    counter = iter(range(5_000, 10_000))  # mid-run steps: past any pre-training stage (BCP's)
    return lambda: trainer.train_step(next(counter), batch)


def gan_steps(size: int, batch: int, seed: int, amp: str) -> dict[str, Callable[[], None]]:
    """One GAN step three ways, each on its own copy of the same G and D: "trainer" (what `gan-aug train` runs:
    ssl_seg's Trainer driving Pix2Pix), "direct" (one_hot, Pix2Pix.train_step and the loss check with no loop
    around them: the training loop of before) and "bare" (pix2pix's optimize_parameters as a plain loop)."""
    from gan_aug.config import GanConfig
    from gan_aug.networks import auto_n_down, one_hot
    from gan_aug.train import build_model

    device = torch.device("cpu")
    cfg = GanConfig(patch_size=size, iterations=10_000, n_down=auto_n_down(size), amp=amp)
    torch.manual_seed(seed)
    model = build_model(cfg, K, 1, device)
    torch.manual_seed(seed)
    direct_model = build_model(cfg, K, 1, device)
    G, D = copy.deepcopy(model.G), copy.deepcopy(model.D)
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    x, y = phantom_images(batch, size, seed)
    real = x.clamp(-1, 1)
    mask = one_hot(y, K)
    bce = torch.nn.BCEWithLogitsLoss()

    def bare() -> None:
        fake = G(mask)
        pred_fake, pred_real = D(mask, fake.detach())[0][-1], D(mask, real)[0][-1]
        loss_d = 0.5 * (bce(pred_fake, torch.zeros_like(pred_fake)) + bce(pred_real, torch.ones_like(pred_real)))
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        D.requires_grad_(False)
        pred = D(mask, fake)[0][-1]
        loss_g = bce(pred, torch.ones_like(pred)) + 100.0 * F.l1_loss(fake, real)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        D.requires_grad_(True)

    steps = iter(range(10**9))

    def direct() -> None:
        losses = direct_model.train_step(direct_model.prepare(one_hot(y, K)), direct_model.prepare(real), next(steps))
        assert torch.isfinite(torch.stack(list(losses.values())).cpu()).all()

    trainer = Trainer(model, None, model.lr_at, lambda s: [], 10**9, device)
    counter = iter(range(10**9))
    step_batch = {"labeled": {"mask": y, "image": real}}
    return {"trainer": lambda: trainer.train_step(next(counter), step_batch), "direct": direct, "bare": bare}


def synthesize_rates(tmp: Path, n: int, segments: int) -> tuple[float, float, list[float]]:
    """pairs/s of `gan-aug synthesize` as now (--amp auto) and on its float32 path of before, alternating runs.

    The rate is the manifest's: the generation loop (masks, generator, writing), without loading the checkpoint.
    The generator is the full-width pix2pix U-Net of a 1-step GAN at 128 px: its weights do not change the speed.
    """
    from gan_aug.config import GanConfig
    from gan_aug.synthesize import synthesize
    from gan_aug.train import train_gan

    train_gan(GanConfig(data="phantom:cardiac?n=16&size=128", labeled_fraction=0.5, out=str(tmp / "gan"),
                        iterations=1, batch_size=2, patch_size=128, device="cpu", progress=False))
    seconds = {"auto": [], "off": []}
    for segment in range(segments + 1):  # the first pair warms up
        for amp in ("off", "auto") if segment % 2 == 0 else ("auto", "off"):
            manifest = synthesize(tmp / "gan", n, tmp / f"syn_{amp}", seed=0, device="cpu", amp=amp, overwrite=True,
                                  progress=False)
            if segment:
                seconds[amp].append(manifest["seconds"])
    ratios = [off / auto for auto, off in zip(seconds["auto"], seconds["off"])]
    return n * segments / sum(seconds["auto"]), n * segments / sum(seconds["off"]), ratios


def data_rate(size: int, batch: int, workers: int, n: int) -> float:
    """Training batches per second (labeled + unlabeled parts of `batch` each) from phantom:cardiac at `size` px."""
    cfg = RunConfig()
    cfg.data.data = f"phantom:cardiac?n=64&size={size}"
    cfg.data.patch_size, cfg.data.num_workers = size, workers
    cfg.method.name, cfg.train.batch_size, cfg.train.iterations = "mean-teacher", batch, n
    source = open_source(cfg.data.data)
    steps = step_batches(cfg, source, build_split(cfg, source), 0)
    for s in range(min(n, 16)):  # decode every sample once: the rate of a warm pipeline
        steps[s]
    t0 = time.perf_counter()
    for _ in loader_factory(steps, cfg)(0):
        pass
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", help="subset of: the method names, gan, synthesize, data, 3d (default: all)")
    p.add_argument("--size-3d", type=int, default=32, help="cubic patch side of the 3D step benchmarks (voxels)")
    p.add_argument("--size", type=int, default=128, help="patch size of the step benchmarks (px)")
    p.add_argument("--base-channels", type=int, default=16)
    p.add_argument("--threads", type=int, default=1, help="torch threads (pinned for the whole run)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--segments", type=int, default=4)
    p.add_argument("--steps", type=int, default=2, help="steps per segment")
    p.add_argument("--amp", default="off", help="autocast of the method and GAN steps: off | bf16 (references stay fp32)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="method steps in the contiguous layout (the run default is channels_last)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    wanted = set(args.only or [*method_names(), "gan", "synthesize", "data", "3d"])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# speed.py  commit {commit}  torch {torch.__version__}  threads {torch.get_num_threads()}  "
          f"size {args.size}  segments {args.segments} x {args.steps} steps (warm-up {args.warmup})")
    print("| step | reference | ref s/step | ratio | segment ratios |\n|---|---|---|---|---|")

    def row(label: str, ref_label: str, cand: Callable[[], None], ref: Callable[[], None]) -> None:
        ratio, ratios, ref_s = side_by_side(cand, ref, args.warmup, args.segments, args.steps)
        spread = " ".join(f"{r:.2f}" for r in ratios)
        print(f"| {label} | {ref_label} | {ref_s:.3f} | **{ratio:.2f}** | {spread} |", flush=True)

    for name in method_names():
        if name not in wanted:
            continue
        labeled, unlabeled = (8, 0) if name == "supervised" else (4, 4)
        cand = method_step(name, args.size, args.base_channels, labeled, unlabeled, 0, args.amp, args.channels_last)
        ref = bare_supervised(args.size, args.base_channels, 8, 0)
        layout = "channels_last" if args.channels_last else "contiguous"
        row(f"{name} ({labeled}+{unlabeled}, amp {args.amp}, {layout})", "bare supervised U-Net, 8 images", cand, ref)
    if "3d" in wanted:  # volumes: a 3D U-Net on (B, 1, S, S, S) patches, 2 labeled (+ 2 unlabeled) per step
        ref = bare_supervised(args.size_3d, args.base_channels, 2, 0, spatial_dims=3)
        for name, labeled, unlabeled in (("supervised", 2, 0), ("mean-teacher", 2, 2)):
            cand = method_step(name, args.size_3d, args.base_channels, labeled, unlabeled, 0, args.amp,
                               args.channels_last, spatial_dims=3)
            row(f"3D {name} ({labeled}+{unlabeled}, {args.size_3d}^3 voxels, amp {args.amp})",
                "bare supervised 3D U-Net, 2 volumes", cand, ref)
    if "gan" in wanted:
        gan = gan_steps(128, 8, 0, args.amp)
        row(f"gan-aug train step: Trainer + Pix2Pix (batch 8, 128 px, amp {args.amp})",
            "bare pix2pix loop, same G and D", gan["trainer"], gan["bare"])
        row("the same Trainer step", "Pix2Pix.train_step without the Trainer (the GAN loop before issue 11)",
            gan["trainer"], gan["direct"])
    if "synthesize" in wanted:
        with tempfile.TemporaryDirectory() as tmp:
            now, before, ratios = synthesize_rates(Path(tmp), 64, args.segments)
        mode = "bf16" if cpu_supports_bf16() else "fp32"
        print(f"\n| gan-aug synthesize, 64 pairs at 128 px | pairs/s now (--amp auto = {mode}) | pairs/s float32 "
              f"(before) | speed-up | per segment |\n|---|---|---|---|---|\n| generation loop | {now:.1f} | "
              f"{before:.1f} | **{now / before:.2f}x** | {' '.join(f'{r:.2f}' for r in ratios)} |", flush=True)
    if "data" in wanted:
        print("\n| data pipeline (mean-teacher batch 8 + 8, phantom:cardiac) | workers | batches/s |\n|---|---|---|")
        for size in (128, 256):
            for workers in (0, 2):
                print(f"| {size} px | {workers} | {data_rate(size, 8, workers, 24):.1f} |", flush=True)


if __name__ == "__main__":
    main()
