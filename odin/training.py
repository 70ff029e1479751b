"""One training step's loss: encode, noise, predict, motion-masked loss."""
from __future__ import annotations

import torch

from odin.conditioning import keep_mask
from odin.config import DiffusionConfig
from odin.data import PairBatch
from odin.losses import motion_masked_loss, resize_mask


def diffusion_loss(model, codec, scheduler, batch: PairBatch, cfg: DiffusionConfig,
                   generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """Loss of one batch; all randomness (timesteps, noise, condition dropout) comes from ``generator``."""
    device = batch.target.device
    x0 = codec.encode(batch.target)
    source = codec.encode(batch.source)
    b = x0.shape[0]
    gen_device = generator.device
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator,
                              device=gen_device).to(device)
    noise = torch.randn(x0.shape, generator=generator, device=gen_device).to(device)
    keep = keep_mask(b, cfg.cond_dropout, generator, device)
    noisy = scheduler.add_noise(x0, noise, timesteps)
    target = noise if cfg.prediction_type == "epsilon" else scheduler.get_velocity(x0, noise, timesteps)
    pred, mask_logit = model(noisy, timesteps, source, batch.plucker, batch.pose, keep)
    mined = resize_mask(batch.motion, tuple(x0.shape[-2:]))
    return motion_masked_loss(pred, target, mask_logit, mined, batch.has_motion,
                              cfg.motion_lambda, cfg.mask_bce_weight)
