"""The `pix2pix` and `diffusion` synthesizers of `ssl-seg sweep --train-gan` (`--generator`) and the `pix2pix` one of
`ssl-seg study`: split's labeled pairs -> generator -> pairs.

Layout under OUT_DIR: `gan/` (the `gan-aug train` run) and `synthetic_<mask source>/` (the `gan-aug synthesize`
output, whose `synthetic.h5` is what `ssl_seg.data.sources.open_source` reads; on volumes, `spatial_dims` 3, the
folder itself: an MSD folder of NIfTI volumes). Masks come from the labeled
masks (`deform` by default); `phantom`, the oracle, only when asked for by name. Both stages resume: a finished
synthetic set made by the same GAN settings is returned as is, and a killed GAN run continues from its checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

from ssl_seg.data.sources import open_source
from ssl_seg.experiments import profiles
from ssl_seg.experiments.synthesis import SynthesisRequest
from ssl_seg.errors import UserError

from .checkpoint import CHECKPOINT_NAME
from .config import RESUMABLE, GanConfig
from .networks import auto_n_down
from .synthesize import H5_NAME, synthesize
from .train import train_gan

GAN_SUBDIR = "gan"
SYN_SUBDIR = "synthetic"
# fields that only say where and how a run reports; two GAN configs differing only in these make the same generator
_INCIDENTAL = RESUMABLE - {"iterations"}


def gan_config(data: str, labeled_fraction: float, split_seed: int, gan_dir: Path, profile_name: str,
               device: str, spatial_dims: int = 2, group_by: str | None = None,
               split_file: str | None = None, generator: str = "unet") -> GanConfig:
    """The GanConfig of the profile: ssl-seg's split (default 0.7/0.1/0.2 fractions, the runs' --group-by and
    --split-file) at the profile's patch size, cut to fit inside the images (`profiles.inside_patch`): on a 35 x 50 px
    slice a 64 px crop is mostly padding, which the generator cannot tell from background."""
    budget = profiles.gan_budget(profile_name)
    patch = profiles.inside_patch(data, profiles.profile(profile_name).seg.patch_size, spatial_dims)
    return GanConfig(data=data, spatial_dims=spatial_dims, generator=generator, labeled_fraction=labeled_fraction,
                     split_seed=split_seed, group_by=group_by, split_file=split_file, out=str(gan_dir),
                     iterations=budget.iterations, batch_size=budget.batch_size, patch_size=patch,
                     n_down=auto_n_down(patch), ngf=budget.ngf, ndf=budget.ngf, ema_rampup=budget.ema_rampup,
                     device=device, progress=False,
                     log_every=min(10, budget.iterations), image_every=budget.iterations,
                     val_every=budget.checkpoint_every, checkpoint_every=budget.checkpoint_every)


def same_generator(saved: dict, wanted: GanConfig, ignore: frozenset[str] = _INCIDENTAL) -> bool:
    """Whether a saved GanConfig dict trains the same generator as `wanted` (fields in `ignore` aside)."""
    a, b = GanConfig.from_dict(saved).to_dict(), wanted.to_dict()
    return all(a[k] == b[k] for k in b if k not in ignore)


def synthetic_dir(out_dir: Path, mask_source: str) -> Path:
    """Where the synthetic set drawn from `mask_source` masks lies: OUT_DIR/synthetic_<mask source>."""
    return Path(out_dir) / f"{SYN_SUBDIR}_{mask_source}"


def train_and_synthesize(request: SynthesisRequest, generator: str = "unet") -> Path:
    """The `pix2pix` Synthesizer: train pix2pix on the labeled pairs of ssl-seg's split of the request's data (with
    the runs' `group_by` / `split_file`, so the GAN sees exactly their labeled pairs) and write `n` synthetic pairs
    from `mask_source` masks; returns the synthetic HDF5 file (OUT_DIR/synthetic_<mask_source>/synthetic.h5), or
    with `spatial_dims` 3 the MSD folder of `n` volumes (default: the profile's pairs as slices). Finished work
    is reused, a killed GAN run resumed; several mask sources share one GAN."""
    r = request
    data, out_dir, device, n, mask_source, spatial_dims = (r.data, Path(r.out_dir), r.device, r.n, r.mask_source,
                                                            r.spatial_dims)
    gan_dir, syn_dir = out_dir / GAN_SUBDIR, synthetic_dir(out_dir, mask_source)
    volumes = spatial_dims == 3
    result, last_file = (syn_dir, syn_dir / "dataset.json") if volumes else (syn_dir / H5_NAME, syn_dir / H5_NAME)
    manifest_file = syn_dir / "manifest.json"
    wanted = gan_config(data, r.labeled_fraction, r.split_seed, gan_dir, r.profile, device, spatial_dims, r.group_by,
                        r.split_file, generator)
    if n is None:
        n = profiles.gan_budget(r.profile).n
        if volumes:  # as many slices as the profile's pairs
            n = max(1, round(n / open_source(data, spatial_dims).median_shape()[0]))
    source = mask_source
    if manifest_file.is_file() and last_file.is_file():
        manifest = json.loads(manifest_file.read_text())
        if manifest["n"] == n and manifest["mask_source"] == source and same_generator(manifest["gan_config"], wanted):
            return result
    _train(wanted, gan_dir)
    synthesize(gan_dir, n, syn_dir, mask_source=source, fmt="nifti" if volumes else "hdf5", device=device,
               progress=False, overwrite=syn_dir.exists())
    return result


def train_and_synthesize_diffusion(request: SynthesisRequest) -> Path:
    """The `diffusion` Synthesizer: as `train_and_synthesize`, with the mask-conditioned diffusion generator (at the
    profile's GAN budget of steps, batch and width)."""
    return train_and_synthesize(request, generator="diffusion")


def _train(cfg: GanConfig, gan_dir: Path) -> None:
    """Train (or finish) the GAN run in gan_dir; a run there with other settings is a UserError."""
    saved = gan_dir / "config.json"
    if saved.is_file() and not same_generator(json.loads(saved.read_text()), cfg, _INCIDENTAL | {"iterations"}):
        raise UserError(f"{gan_dir} holds a GAN trained with other settings (data, split or profile); "
                        "delete that folder or choose another --out")
    result = gan_dir / "result.json"
    if result.is_file() and json.loads(result.read_text())["iterations"] == cfg.iterations:
        return
    train_gan(cfg, resume=(gan_dir / CHECKPOINT_NAME).is_file())
