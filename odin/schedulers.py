"""Noise schedules: the DDPM schedule used in training and the samplers built from it."""
from __future__ import annotations

from ingest.errors import OdinError
from odin.config import DiffusionConfig

SAMPLERS = ("ddim", "dpm")


def training_scheduler(cfg: DiffusionConfig):
    from diffusers import DDPMScheduler

    if cfg.prediction_type not in ("epsilon", "v_prediction"):
        raise OdinError(f"diffusion.prediction_type must be 'epsilon' or 'v_prediction', got {cfg.prediction_type!r}")
    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                         prediction_type=cfg.prediction_type, clip_sample=False)


def sampling_scheduler(name: str, cfg: DiffusionConfig, pixel_space: bool = True):
    """A fresh sampler sharing the training schedule: "ddim" or "dpm" (DPM-Solver++ multistep)."""
    return sampler_from(name, training_scheduler(cfg).config, pixel_space)


def sampler_from(name: str, base, pixel_space: bool = True):
    """A sampler of kind ``name`` on the schedule of a training scheduler's config ``base``.

    The cosine schedule ends at alpha_bar ~ 2e-9: the first of few trailing steps divides the
    prediction's error by sqrt(alpha_bar) when it forms x0.  In pixel space x0 is known to lie in
    [-1, 1], so it is clipped there (latents have no such bound)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if name == "ddim":
        return DDIMScheduler.from_config(base, clip_sample=pixel_space, clip_sample_range=1.0, set_alpha_to_one=False,
                                         timestep_spacing="trailing")
    if name == "dpm":
        return DPMSolverMultistepScheduler.from_config(base, algorithm_type="dpmsolver++", solver_order=2,
                                                       timestep_spacing="trailing", thresholding=pixel_space,
                                                       dynamic_thresholding_ratio=1.0, sample_max_value=1.0)
    raise OdinError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
