"""A mask-conditioned denoising diffusion generator (`--generator diffusion`), built on MONAI's generative parts.

The network is MONAI's `DiffusionModelUNet`; the mask enters as extra input channels (one-hot, beside the noisy
image). Training is DDPM's noise prediction (Ho et al. 2020: a uniform noise level per image, MSE to the added noise,
MONAI's `DDPMScheduler` adding it); sampling is deterministic DDIM (Song et al. 2021, MONAI's `DDIMScheduler`,
eta 0) in `sample_steps` steps from Gaussian noise. `DiffusionGenerator(mask)` samples, so validation, `synthesize`,
`assess` and the sweeps use it as they use a GAN generator; `Diffusion` is its training, a self-updating method of
ssl_seg's Trainer like `Pix2Pix`, with the same EMA generator, learning-rate decay and checkpoint layout.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from torch import Tensor, nn

from ssl_seg.device import amp_dtype, autocast, to_memory_format
from ssl_seg.errors import UserError
from ssl_seg.methods.ema import ema_update, ramped_ema_decay

from .networks import pad_to_stride, one_hot
from .pix2pix import linear_decay

TRAIN_TIMESTEPS = 1000  # DDPM's noise levels (linear betas 1e-4 .. 2e-2, as in Ho et al.)
MAX_LEVELS = 4  # resolutions of the U-Net: at most 3 down-samplings (the GAN's auto --n-down is deeper)


def sampling_levels(steps: int) -> list[int]:
    """The noise levels DDIM visits, highest first: k * (TRAIN_TIMESTEPS // steps) for k = steps - 1 .. 0 (the DDIM
    paper's uniform skip).

    Not MONAI 1.6's `DDIMScheduler.timesteps` (linspace(999, 0, steps)): its `step()` takes the previous level as
    t - TRAIN_TIMESTEPS // steps, which the next linspace level is not (with 2 steps the image reaches level 499 and is
    then denoised as if at level 0). With these levels the two agree.
    >>> sampling_levels(4)
    [750, 500, 250, 0]
    """
    ratio = TRAIN_TIMESTEPS // steps
    return list(range(ratio * (steps - 1), -1, -ratio))


class DiffusionGenerator(nn.Module):
    """Noise predictor eps(x_t, t | mask) and its DDIM sampler; `forward(mask)` is a sample in [-1, 1].

    >>> g = DiffusionGenerator(num_classes=2, out_channels=1, ngf=8, n_down=2, sample_steps=2)
    >>> g(one_hot(torch.zeros(1, 20, 24, dtype=torch.long), 2)).shape
    torch.Size([1, 1, 20, 24])
    """

    def __init__(self, num_classes: int, out_channels: int, ngf: int = 32, n_down: int = 3, sample_steps: int = 50,
                 **_unused: object):
        super().__init__()
        levels = min(n_down, MAX_LEVELS - 1) + 1
        channels = [ngf * min(2**i, 4) for i in range(levels)]
        self.unet = DiffusionModelUNet(
            spatial_dims=2, in_channels=out_channels + num_classes, out_channels=out_channels, num_res_blocks=1,
            channels=channels, attention_levels=[False] * (levels - 1) + [True], norm_num_groups=math.gcd(ngf, 32),
            num_head_channels=channels[-1])
        self.out_channels, self.stride, self.sample_steps = out_channels, 2 ** (levels - 1), sample_steps
        self.noise_sharing: tuple[float, torch.Generator] | None = None  # set by networks.shared_noise
        self.train_scheduler = DDPMScheduler(TRAIN_TIMESTEPS)

    def predict_noise(self, noisy: Tensor, mask: Tensor, timesteps: Tensor) -> Tensor:
        """eps(x_t, t | mask) for noisy images (B, C, H, W) and one-hot masks (B, K, H, W) of any size."""
        h, w = noisy.shape[-2:]
        x = pad_to_stride(torch.cat([noisy, mask.to(noisy.dtype)], dim=1), self.stride)
        return self.unet(x, timesteps=timesteps)[..., :h, :w]

    def denoising_loss(self, image: Tensor, mask: Tensor) -> Tensor:
        """DDPM's loss: MSE between the noise added to `image` at a uniform random level and its prediction."""
        noise = torch.randn_like(image)
        t = torch.randint(0, TRAIN_TIMESTEPS, (image.shape[0],), device=image.device)
        noisy = self.train_scheduler.add_noise(image, noise, t)
        return F.mse_loss(self.predict_noise(noisy, mask, t).float(), noise.float())

    def initial_noise(self, mask: Tensor) -> Tensor:
        """x_T ~ N(0, I), (B, C, H, W); inside `shared_noise(share, seed)` a `share` of its variance is one draw
        common to the batch (the slices of a volume), the rest independent."""
        shape = (mask.shape[0], self.out_channels, *mask.shape[-2:])
        noise = torch.randn(shape, device=mask.device)
        if self.noise_sharing is not None:
            share, rng = self.noise_sharing
            common = torch.randn((1, *shape[1:]), device=mask.device, generator=rng)
            noise = math.sqrt(share) * common + math.sqrt(1 - share) * noise
        return noise

    @torch.no_grad()
    def forward(self, mask: Tensor) -> Tensor:
        """One-hot mask (B, K, H, W) -> sampled image (B, C, H, W) in [-1, 1] (DDIM, `sample_steps` steps)."""
        sampler = DDIMScheduler(TRAIN_TIMESTEPS)
        sampler.set_timesteps(self.sample_steps)  # step() takes the previous level as t - TRAIN_TIMESTEPS // steps
        x = self.initial_noise(mask)
        for t in sampling_levels(self.sample_steps):
            level = torch.full((mask.shape[0],), t, device=mask.device, dtype=torch.long)
            x, _ = sampler.step(self.predict_noise(x, mask, level).float(), t, x)
        return x.clamp(-1, 1)


class Diffusion:
    """The diffusion generator's training: Adam on the noise-prediction loss, the pix2pix learning-rate decay, an
    EMA copy that samples. Masks are one-hot (B, K, H, W), images (B, C, H, W) in [-1, 1], both on `device`."""

    def __init__(self, generator: DiffusionGenerator, *, num_classes: int, total_iterations: int,
                 device: torch.device, lr: float = 2e-4, betas: tuple[float, float] = (0.9, 0.999),
                 ema_decay: float = 0.999, ema_rampup: float = 0.0, amp: str = "auto", channels_last: bool = True):
        if not 0.0 <= ema_decay < 1.0:
            raise UserError(f"--ema-decay {ema_decay}: must be in [0, 1), e.g. 0.999")
        self.device, self.channels_last, self.num_classes = device, channels_last, num_classes
        self.G = to_memory_format(generator.to(device), device, channels_last).train()
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.lr, self.ema_decay, self.ema_rampup, self.total_iterations = lr, ema_decay, ema_rampup, total_iterations
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=lr, betas=betas)
        self.amp_dtype = amp_dtype(device, amp)
        self.scaler_G = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.models = {"G": self.G}
        self.shown_losses = {"G": "G"}  # the progress bar's losses (label -> loss key)

    def eval_models(self) -> dict[str, nn.Module]:
        """The network that validation scores and `synthesize` uses: the EMA generator."""
        return {"G_ema": self.G_ema}

    def prepare(self, x: Tensor) -> Tensor:
        """Move a batch tensor to the device in the networks' memory format."""
        return to_memory_format(x.to(self.device, non_blocking=True), self.device, self.channels_last)

    def lr_at(self, step: int) -> float:
        """The learning rate of 0-based `step`: constant for the first half, then linearly towards 0."""
        return self.lr * linear_decay(step, self.total_iterations)

    def optimization_step(self, batch: dict[str, dict[str, Tensor]], step: int) -> dict[str, Tensor]:
        """The Trainer's update of `step` on batch["labeled"] (mask (B, H, W), image (B, C, H, W))."""
        pair = batch["labeled"]
        mask, image = self.prepare(one_hot(pair["mask"], self.num_classes)), self.prepare(pair["image"])
        for group in self.opt_G.param_groups:
            group["lr"] = self.lr_at(step)
        self.opt_G.zero_grad(set_to_none=True)
        with autocast(self.device, self.amp_dtype):
            loss = self.G.denoising_loss(image, mask)
        self.scaler_G.scale(loss).backward()
        self.scaler_G.step(self.opt_G)
        self.scaler_G.update()
        ema_update(self.G_ema, self.G, ramped_ema_decay(self.ema_decay, step, self.ema_rampup))
        return {"G": loss.detach()}

    @torch.no_grad()
    def sample(self, mask: Tensor) -> Tensor:
        """EMA generator samples (B, C, H, W) in [-1, 1], float32."""
        with autocast(self.device, self.amp_dtype):
            return self.G_ema(mask).float()

    def state_dict(self) -> dict:
        """Networks, optimiser and scaler as plain tensors/dicts (weights_only-loadable)."""
        return {"G": self.G.state_dict(), "G_ema": self.G_ema.state_dict(), "opt_G": self.opt_G.state_dict(),
                "scaler_G": self.scaler_G.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore everything `state_dict` saved."""
        self.G.load_state_dict(state["G"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.opt_G.load_state_dict(state["opt_G"])
        self.scaler_G.load_state_dict(state["scaler_G"])
