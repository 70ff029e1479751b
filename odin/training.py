"""One training step's loss: encode, noise, predict, motion-masked loss.

Training draws its randomness (timestep, noise, condition dropout) per sample from a generator
seeded by (run seed, the sample's key = its place in the global data stream).  So a sample gets
the same draws whichever process takes it and whatever the process count: N processes with
batch B/N follow one process with batch B, and a resumed run needs only the stream position.
"""
from __future__ import annotations

import torch

from odin.conditioning import keep_mask
from odin.config import DiffusionConfig
from odin.data import PairBatch
from odin.losses import motion_masked_loss, resize_mask

_GOLDEN = 0x9E3779B97F4A7C15  # spreads run seeds far apart in the 64-bit seed space


def sample_generator(seed: int, key: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * _GOLDEN + key) & (2**63 - 1))


def _draws(batch: PairBatch, shape, num_timesteps: int, dropout: float, rng: torch.Generator | int):
    """(timesteps (B,), noise shaped ``shape``, keep (B,)) on the CPU.

    ``rng``: an int run seed (per-sample draws keyed by ``batch.keys``, see the module doc), or one
    generator for the whole batch (evaluation code with fixed noise)."""
    b = shape[0]
    if isinstance(rng, torch.Generator):
        timesteps = torch.randint(0, num_timesteps, (b,), generator=rng, device=rng.device).cpu()
        noise = torch.randn(shape, generator=rng, device=rng.device).cpu()
        return timesteps, noise, keep_mask(b, dropout, rng, "cpu")
    keys = batch.keys.tolist() if batch.keys is not None else list(range(b))
    timesteps, noise, keep = [], [], []
    for key in keys:
        g = sample_generator(rng, key)
        timesteps.append(torch.randint(0, num_timesteps, (1,), generator=g))
        keep.append(torch.rand(1, generator=g) >= dropout if dropout > 0 else torch.ones(1, dtype=torch.bool))
        noise.append(torch.randn(shape[1:], generator=g))
    return torch.cat(timesteps), torch.stack(noise), torch.cat(keep)


def diffusion_loss(model, codec, scheduler, batch: PairBatch, cfg: DiffusionConfig,
                   rng: torch.Generator | int) -> tuple[torch.Tensor, dict]:
    """Loss of one batch; all randomness comes from ``rng`` (see :func:`_draws`)."""
    device = batch.target.device
    x0 = codec.encode(batch.target)
    source = codec.encode(batch.source)
    timesteps, noise, keep = _draws(batch, x0.shape, scheduler.config.num_train_timesteps, cfg.cond_dropout, rng)
    timesteps, noise, keep = timesteps.to(device), noise.to(device), keep.to(device)
    noisy = scheduler.add_noise(x0, noise, timesteps)
    target = noise if cfg.prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, timesteps)
    takes_reprojection = getattr(model, "module", model).reprojected_source  # model may be DDP-wrapped
    reprojected = codec.encode(batch.reprojected) if takes_reprojection else None
    pred, mask_logit = model(noisy, timesteps, source, batch.plucker, batch.pose, keep, reprojected)
    mined = resize_mask(batch.motion, tuple(x0.shape[-2:]))
    return motion_masked_loss(pred, target, mask_logit, mined, batch.has_motion,
                              cfg.motion_lambda, cfg.mask_bce_weight)
