"""Configuration of an Odin run: model, diffusion, data and training, as dataclasses saved as JSON.

One code path serves both configurations of the issue:

* pixel space (``model.pretrained is None``): a UNet trained from scratch on RGB in [-1, 1];
* latent space (``model.pretrained = PATH``): a local diffusers folder holding ``vae/`` and
  ``unet/``; the UNet is widened for the conditioning channels and fine-tuned on VAE latents.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ingest.errors import OdinError, read_json_object


@dataclass
class ModelConfig:
    resolution: int = 64  # image side in pixels (the UNet sees resolution / vae_factor in latent mode)
    block_out_channels: tuple[int, ...] = (64, 128, 128)
    layers_per_block: int = 2
    attention_levels: tuple[bool, ...] = (False, False, True)
    norm_num_groups: int = 32
    pose_fourier_bands: int = 6  # Fourier features of the 10-D pose vector before its MLP
    pose_tokens: int = 4  # cross-attention tokens the pose becomes in a pretrained UNet2DConditionModel
    mask_logit_init: float = 2.0  # M starts near sigmoid(2) = 0.88: most pixels count at first
    # Also give the network the source reprojected into the target camera over a plane at the
    # source's robust depth (odin/conditioning.py:plane_reprojection): geometry it need not learn.
    reproject_source: bool = True
    pretrained: str | None = None  # local diffusers folder with vae/ and unet/ -> latent mode

    @property
    def latent(self) -> bool:
        return self.pretrained is not None


@dataclass
class DiffusionConfig:
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    # v: at high noise an epsilon loss barely depends on x0, so an epsilon model learns late to use the
    # source image (measured at 48 px: after 2,500 CPU steps its conditional and unconditional
    # predictions agreed to 1% and its samples ignored the source).
    prediction_type: str = "v_prediction"  # or "epsilon" (e.g. to fine-tune an epsilon-trained checkpoint)
    # Motion masking: loss = mean(M * (1 - mined) * err) - motion_lambda * mean(M * (1 - mined)).
    # err is the per-pixel squared error of a unit-variance target (epsilon or v), so predicting
    # zero costs about 1; with motion_lambda = 1 a pixel is dropped (M -> 0) only when the model
    # cannot beat that trivial error there.  See odin/losses.py.
    motion_lambda: float = 1.0
    mask_bce_weight: float = 0.1  # supervises M with (1 - mined motion) where a mask was mined
    cond_dropout: float = 0.1  # probability of dropping all conditioning (classifier-free guidance)


@dataclass
class DataConfig:
    fov_deg: float = 90.0  # assumed field of view for `odin generate --image` (pairs carry their own K)
    shuffle_buffer: int = 256
    # Which pairs are held out (odin/splits.py): "video" (whole videos or synthetic rooms), "time" (the
    # last val_fraction of each video's frames), "recorded" (the pairs' own split column, refused if a
    # val pair shares a frame with a train pair) or "auto" (video when there are enough videos, else time).
    split_by: str = "auto"
    val_fraction: float = 0.2


@dataclass
class TrainConfig:
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 200
    max_steps: int = 20000
    max_minutes: float | None = None  # stop (after a checkpoint) when this wall time is spent
    mixed_precision: str = "bf16"  # used on GPU only; CPU runs in fp32
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    sample_every: int = 1000
    sample_steps: int = 25
    sample_count: int = 4


@dataclass
class OdinConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, d: dict, source: str | Path | None = None) -> "OdinConfig":
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = set(d) - set(sections)
        if unknown:
            raise OdinError(f"unknown config sections {sorted(unknown)}; expected {sorted(sections)}", source)
        kinds = {"model": ModelConfig, "diffusion": DiffusionConfig, "data": DataConfig, "train": TrainConfig}
        return cls(**{name: _section(kinds[name], d.get(name, {}), name, source) for name in sections})

    @classmethod
    def load(cls, path: str | Path) -> "OdinConfig":
        return cls.from_dict(read_json_object(path), path)


def _section(kind, values: dict, name: str, source):
    names = {f.name: f for f in dataclasses.fields(kind)}
    unknown = set(values) - set(names)
    if unknown:
        raise OdinError(f"unknown keys in [{name}]: {sorted(unknown)}", source)
    # JSON has no tuples; the dataclasses use them so configs compare equal after a round trip.
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return kind(**fixed)


def model_signature(config: OdinConfig) -> dict:
    """The part of a config that fixes the shape and meaning of the weights."""
    return json.loads(json.dumps({"model": asdict(config.model),
                                  "diffusion": {"prediction_type": config.diffusion.prediction_type}}))


def tiny_config(resolution: int = 32) -> OdinConfig:
    """A CPU-sized configuration for tests and smoke runs."""
    return OdinConfig(
        model=ModelConfig(resolution=resolution, block_out_channels=(16, 32), layers_per_block=1,
                          attention_levels=(False, False), norm_num_groups=8, pose_fourier_bands=4),
        train=TrainConfig(batch_size=4, lr=1e-3, warmup_steps=0, max_steps=20, log_every=5,
                          checkpoint_every=10, sample_every=10, sample_steps=4, sample_count=2, ema_decay=0.9),
    )


def cpu_config(resolution: int = 48) -> OdinConfig:
    """The CPU quality configuration (bench/odin_quality.py): a UNet sized for two cores at 48-64 px."""
    return OdinConfig(
        model=ModelConfig(resolution=resolution, block_out_channels=(32, 64, 96), layers_per_block=1,
                          attention_levels=(False, False, True), norm_num_groups=8, pose_fourier_bands=4),
        data=DataConfig(shuffle_buffer=512),
        train=TrainConfig(batch_size=8, lr=5e-4, warmup_steps=100, max_steps=1_000_000, ema_decay=0.995,
                          log_every=20, checkpoint_every=200, sample_every=0, sample_steps=20, sample_count=4),
    )
