"""pix2pix optimisation: adversarial + L1 (+ feature matching, + mode seeking, + a cVAE-GAN latent encoder) losses,
a D step then a G step, EMA generator.

`Pix2Pix` is a self-updating method of ssl_seg's Trainer (ssl_seg.engine.trainer.SelfUpdating): the loop
hands it each batch and it steps its two optimizers itself.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_seg.device import amp_dtype, autocast, to_memory_format
from ssl_seg.errors import UserError
from ssl_seg.methods.ema import ema_update, ramped_ema_decay

from .diff_augment import diff_augment
from .networks import kl_to_standard_normal, one_hot
from .task_aware import TaskAware

GAN_LOSSES = ("vanilla", "lsgan", "hinge")


def _check_loss(kind: str) -> None:
    if kind not in GAN_LOSSES:
        raise UserError(f"--gan-loss {kind}: unknown adversarial loss; valid: {', '.join(GAN_LOSSES)}")


def d_adversarial_loss(kind: str, real: list[Tensor], fake: list[Tensor]) -> tuple[Tensor, Tensor]:
    """Discriminator loss terms (on real, on fake), each averaged over scales; inputs are per-scale logits."""
    _check_loss(kind)
    loss_real, loss_fake = [], []
    for r, f in zip(real, fake, strict=True):
        r, f = r.float(), f.float()
        if kind == "vanilla":
            loss_real.append(F.binary_cross_entropy_with_logits(r, torch.ones_like(r)))
            loss_fake.append(F.binary_cross_entropy_with_logits(f, torch.zeros_like(f)))
        elif kind == "lsgan":
            loss_real.append(F.mse_loss(r, torch.ones_like(r)))
            loss_fake.append(F.mse_loss(f, torch.zeros_like(f)))
        else:
            loss_real.append(F.relu(1 - r).mean())
            loss_fake.append(F.relu(1 + f).mean())
    return torch.stack(loss_real).mean(), torch.stack(loss_fake).mean()


def g_adversarial_loss(kind: str, fake: list[Tensor]) -> Tensor:
    """Generator adversarial loss averaged over scales (non-saturating for vanilla, -D(fake) for hinge)."""
    _check_loss(kind)
    losses = []
    for f in fake:
        f = f.float()
        if kind == "vanilla":
            losses.append(F.binary_cross_entropy_with_logits(f, torch.ones_like(f)))
        elif kind == "lsgan":
            losses.append(F.mse_loss(f, torch.ones_like(f)))
        else:
            losses.append(-f.mean())
    return torch.stack(losses).mean()


def feature_matching_loss(real: list[list[Tensor]], fake: list[list[Tensor]]) -> Tensor:
    """pix2pixHD feature matching: L1 between D features of real and fake, mean over layers (not logits) and scales."""
    terms = [F.l1_loss(f.float(), r.detach().float())
             for rs, fs in zip(real, fake, strict=True) for r, f in zip(rs[:-1], fs[:-1], strict=True)]
    return torch.stack(terms).mean()


MS_EPS = 1e-5  # MSGAN's eps in 1 / (lz + eps)


def mode_seeking_loss(fake1: Tensor, fake2: Tensor) -> Tensor:
    """MSGAN's term 1 / (mean|fake2 - fake1| + eps) for two samples of the same masks. MSGAN divides the image
    distance by mean|z2 - z1| of its latent codes; here the noise is dropout (and the optional noise map), so the
    image distance stands alone (for a Gaussian map the divisor would be about 2 / sqrt(pi) = 1.13)."""
    return 1.0 / ((fake2.float() - fake1.float()).abs().mean() + MS_EPS)


def linear_decay(step: int, total: int) -> float:
    """pix2pix schedule: factor 1 for the first half of `total` steps, then linearly towards 0."""
    half = total // 2
    return 1.0 - max(0, step - half) / float(total - half + 1)


@torch.no_grad()
def copy_buffers(target: nn.Module, source: nn.Module) -> None:
    """target's buffers (BatchNorm running statistics) <- source's, as StyleGAN's EMA generator does.

    G_ema runs in eval mode and never updates its own statistics; without this copy they stay at their
    initial values (mean 0, var 1) under --norm batch. Unlike a segmentation teacher, G_ema is never
    trained on its own outputs, and at decay 0.999 its weights stay close to G's.
    """
    for t, s in zip(target.buffers(), source.buffers(), strict=True):
        t.copy_(s)


class Pix2Pix:
    """G, D, the EMA generator, their Adam optimisers and grad scalers; `train_step` is pix2pix's optimize_parameters.

    Masks are one-hot (B, K, H, W) with K = `num_classes` and images (B, C, H, W) in [-1, 1], both already
    on `device`. With `task` (task_aware.py), G's loss also has the segmenter's look-ahead term and a segmenter
    step follows each G step. With `lambda_ms` > 0 (MSGAN) G draws two samples of each mask in one batch: D and G's
    adversarial term see both, L1 (and the task term) the first, and G also lowers `mode_seeking_loss` between them.
    With `encoder` (BicycleGAN's cVAE-GAN with a shared D, Zhu et al. 2017) the first sample's latent code is encoded
    from its real image, so L1 can reconstruct that image instead of the median of every image of the mask, and the
    second sample's is drawn from N(0, I), as at sampling; E trains with G, under `lambda_kl` times its KL to N(0, I).
    With `encode_background_only`, E sees the real image with every labeled structure (mask class > 0) set to 0, so
    the code can describe the background but not the structures' grey levels.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, *, num_classes: int, total_iterations: int,
                 device: torch.device, gan_loss: str = "vanilla", lambda_l1: float = 100.0, lambda_fm: float = 0.0,
                 lambda_ms: float = 0.0, lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999),
                 ema_decay: float = 0.999, ema_rampup: float = 0.0, amp: str = "auto", channels_last: bool = True,
                 augment_d: bool = False, task: TaskAware | None = None, encoder: nn.Module | None = None,
                 lambda_kl: float = 0.01, encode_background_only: bool = False):
        _check_loss(gan_loss)
        if not 0.0 <= ema_decay < 1.0:
            raise UserError(f"--ema-decay {ema_decay}: must be in [0, 1), e.g. 0.999")
        self.device, self.channels_last, self.num_classes = device, channels_last, num_classes
        self.G = to_memory_format(generator.to(device), device, channels_last).train()
        self.D = to_memory_format(discriminator.to(device), device, channels_last).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.E = encoder.to(device).train() if encoder is not None else None
        self.lambda_kl, self.encode_background_only = lambda_kl, encode_background_only
        self.gan_loss, self.lambda_l1, self.lambda_fm, self.lambda_ms = gan_loss, lambda_l1, lambda_fm, lambda_ms
        self.augment_d = augment_d  # DiffAugment on every D input (real and fake)
        self.lr, self.ema_decay, self.ema_rampup, self.total_iterations = lr, ema_decay, ema_rampup, total_iterations
        g_params = list(self.G.parameters()) + (list(self.E.parameters()) if self.E is not None else [])
        self.opt_G = torch.optim.Adam(g_params, lr=lr, betas=betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=lr, betas=betas)
        self.amp_dtype = amp_dtype(device, amp)
        fp16 = self.amp_dtype == torch.float16  # bf16 has fp32's range and needs no loss scaling
        self.scaler_G = torch.amp.GradScaler(device.type, enabled=fp16)
        self.scaler_D = torch.amp.GradScaler(device.type, enabled=fp16)
        self.task = task
        self.models = {"G": self.G, "D": self.D}  # the trained networks (the Trainer keeps them in train mode)
        self.shown_losses = {"D": "D", "G": "G"}  # the progress bar's losses (label -> loss key)
        if task is not None:
            self.models["S"] = task.segmenter
        if self.E is not None:
            self.models["E"] = self.E

    def eval_models(self) -> dict[str, nn.Module]:
        """The network that validation scores and `synthesize` uses: the EMA generator."""
        return {"G_ema": self.G_ema}

    def optimization_step(self, batch: dict[str, dict[str, Tensor]], step: int) -> dict[str, Tensor]:
        """The Trainer's update of `step`: `train_step` on batch["labeled"] (mask (B, H, W), image (B, C, H, W))."""
        pair = batch["labeled"]
        return self.train_step(self.prepare(one_hot(pair["mask"], self.num_classes)), self.prepare(pair["image"]),
                               step)

    def prepare(self, x: Tensor) -> Tensor:
        """Move a batch tensor to the device in the networks' memory format."""
        return to_memory_format(x.to(self.device, non_blocking=True), self.device, self.channels_last)

    def lr_at(self, step: int) -> float:
        """The linear-decay learning rate of 0-based `step`."""
        return self.lr * linear_decay(step, self.total_iterations)

    def set_lr(self, step: int) -> float:
        """Apply `lr_at(step)` to both optimisers; returns it."""
        lr = self.lr_at(step)
        for opt in (self.opt_G, self.opt_D):
            for group in opt.param_groups:
                group["lr"] = lr
        return lr

    def d_inputs(self, mask: Tensor, *images: Tensor) -> tuple[Tensor, ...]:
        """(mask, *images) as D sees them: DiffAugmented together (same transform) when augment_d is on."""
        return diff_augment(mask, *images) if self.augment_d else (mask, *images)

    def d_step(self, mask: Tensor, real: Tensor, fake: Tensor, fake2: Tensor | None = None) -> dict[str, Tensor]:
        """One D update on (mask, real) vs (mask, fake.detach()) (and fake2's, the second samples of mode seeking,
        in the same fake batch); returns its named losses."""
        self.D.requires_grad_(True)
        self.opt_D.zero_grad(set_to_none=True)
        fake_mask, fakes = (mask, fake) if fake2 is None else (torch.cat([mask, mask]), torch.cat([fake, fake2]))
        with autocast(self.device, self.amp_dtype):
            pred_real = [f[-1] for f in self.D(*self.d_inputs(mask, real))]
            pred_fake = [f[-1] for f in self.D(*self.d_inputs(fake_mask, fakes.detach()))]
        loss_real, loss_fake = d_adversarial_loss(self.gan_loss, pred_real, pred_fake)
        loss = 0.5 * (loss_real + loss_fake)
        self.scaler_D.scale(loss).backward()
        self.scaler_D.step(self.opt_D)
        self.scaler_D.update()
        return {"D": loss.detach(), "D_real": loss_real.detach(), "D_fake": loss_fake.detach()}

    def g_step(self, mask: Tensor, real: Tensor, fake: Tensor, labels: Tensor | None = None,
               fake2: Tensor | None = None, kl: Tensor | None = None) -> dict[str, Tensor]:
        """One G update: fool the (frozen) D, stay close to real in L1, optionally match D features, lower the
        task-aware segmenter's look-ahead loss (on `labels`, the class indices of `mask`), with `fake2` (second
        samples of the same masks) the mode-seeking term, and with `kl` (the encoder's) its weighted KL."""
        self.D.requires_grad_(False)
        self.opt_G.zero_grad(set_to_none=True)
        fake_mask, fakes, reals = ((mask, fake, real) if fake2 is None else
                                   (torch.cat([mask, mask]), torch.cat([fake, fake2]), torch.cat([real, real])))
        with autocast(self.device, self.amp_dtype):
            # real only for feature matching, under the same transform (the draws do not depend on how many images)
            d_mask, d_fake, *d_real = self.d_inputs(fake_mask, fakes, *([reals] if self.lambda_fm > 0 else []))
            feats_fake = self.D(d_mask, d_fake)
            feats_real = None
            if d_real:
                with torch.no_grad():
                    feats_real = self.D(d_mask, d_real[0])
        losses = {"G_adv": g_adversarial_loss(self.gan_loss, [f[-1] for f in feats_fake]),
                  "G_L1": F.l1_loss(fake.float(), real.float())}
        loss = losses["G_adv"] + self.lambda_l1 * losses["G_L1"]
        if feats_real is not None:
            losses["G_FM"] = feature_matching_loss(feats_real, feats_fake)
            loss = loss + self.lambda_fm * losses["G_FM"]
        if self.task is not None:
            losses["G_task"] = self.task.generator_loss(fake, real, labels)
            loss = loss + losses["G_task"]
        if fake2 is not None and self.lambda_ms > 0:
            losses["G_ms"] = mode_seeking_loss(fake, fake2)
            loss = loss + self.lambda_ms * losses["G_ms"]
        if kl is not None:
            losses["G_KL"] = kl
            loss = loss + self.lambda_kl * kl
        self.scaler_G.scale(loss).backward()
        self.scaler_G.step(self.opt_G)
        self.scaler_G.update()
        self.D.requires_grad_(True)
        return {"G": loss.detach(), **{k: v.detach() for k, v in losses.items()}}

    def train_step(self, mask: Tensor, real: Tensor, step: int) -> dict[str, Tensor]:
        """Generate once (twice per mask in one batch with mode seeking or the encoder), update D then G, then the EMA
        generator; returns all named losses (detached)."""
        self.set_lr(step)
        fake2 = kl = None
        with autocast(self.device, self.amp_dtype):
            if self.E is not None:
                seen = real * mask[:, :1] if self.encode_background_only else real  # class 0: background
                mu, logvar = (t.float() for t in self.E(seen))  # (B, latent_dim) each
                encoded = mu + torch.randn_like(mu) * (0.5 * logvar).exp()  # reparameterised
                kl = kl_to_standard_normal(mu, logvar)
                fake, fake2 = self.G(torch.cat([mask, mask]), torch.cat([encoded, torch.randn_like(mu)])).chunk(2)
            elif self.lambda_ms > 0:
                fake, fake2 = self.G(torch.cat([mask, mask])).chunk(2)  # (B, C, H, W) each, own dropout and noise
            else:
                fake = self.G(mask)  # (B, C, H, W)
        losses = self.d_step(mask, real, fake, fake2)
        labels = mask.argmax(dim=1) if self.task is not None else None
        losses.update(self.g_step(mask, real, fake, labels, fake2, kl))
        if self.task is not None:
            losses.update(self.task.segmenter_step(fake, real, labels))
        ema_update(self.G_ema, self.G, ramped_ema_decay(self.ema_decay, step, self.ema_rampup))
        copy_buffers(self.G_ema, self.G)
        return losses

    @torch.no_grad()
    def sample(self, mask: Tensor) -> Tensor:
        """EMA generator output (B, C, H, W) in [-1, 1], float32 (dropout/noise stay active: samples vary)."""
        self.G_ema.eval()
        with autocast(self.device, self.amp_dtype):
            return self.G_ema(mask).float()

    def state_dict(self) -> dict:
        """Networks, optimisers and scalers as plain tensors/dicts (weights_only-loadable)."""
        return {"G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
                "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
                "scaler_G": self.scaler_G.state_dict(), "scaler_D": self.scaler_D.state_dict(),
                **({"E": self.E.state_dict()} if self.E is not None else {}),
                **(self.task.state_dict() if self.task is not None else {})}

    def load_state_dict(self, state: dict) -> None:
        """Restore everything `state_dict` saved."""
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.scaler_G.load_state_dict(state["scaler_G"])
        self.scaler_D.load_state_dict(state["scaler_D"])
        if self.E is not None:
            self.E.load_state_dict(state["E"])
        if self.task is not None:
            self.task.load_state_dict(state)
