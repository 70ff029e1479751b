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


def sampling_scheduler(name: str, cfg: DiffusionConfig):
    """A fresh sampler sharing the training schedule: "ddim" or "dpm" (DPM-Solver++ multistep)."""
    return sampler_from(name, training_scheduler(cfg).config)


def sampler_from(name: str, base):
    """A sampler of kind ``name`` on the schedule of a training scheduler's config ``base``."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if name == "ddim":
        return DDIMScheduler.from_config(base, clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing")
    if name == "dpm":
        return DPMSolverMultistepScheduler.from_config(base, algorithm_type="dpmsolver++", solver_order=2,
                                                       timestep_spacing="trailing")
    raise OdinError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
