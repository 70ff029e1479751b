"""The Odin denoiser (a diffusers ModelMixin around a UNet with conditioning channels) and the codecs.

Input channels: noisy target (C) + source image (C) + [the source reprojected into the target over a
plane at its robust depth (C), when ``model.reproject_source``] + Plücker map of the target camera (6).
Output channels: the diffusion target (C, epsilon or v) + one motion-mask logit.
The global pose code goes through a Fourier + MLP embedding and then

* into a ``UNet2DModel`` (trained from scratch): added to the timestep embedding through the
  UNet's ``class_embed_type="identity"`` hook;
* into a ``UNet2DConditionModel`` (an SD-family checkpoint, ``--pretrained``): ``pose_tokens``
  cross-attention tokens of width ``cross_attention_dim``, where the text/image embedding went;
  the time embedding is kept as it was trained.

``OdinDenoiser`` is a ``ModelMixin`` + ``ConfigMixin``: ``save_pretrained`` / ``from_pretrained``
write and read ``config.json`` + ``diffusion_pytorch_model.safetensors`` like any diffusers model.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ingest.errors import OdinError
from odin.conditioning import PLUCKER_CHANNELS, POSE_VECTOR_DIM
from odin.config import ModelConfig

UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")


class PoseEmbedding(nn.Module):
    """Fourier features of the 10-D pose code, then a two-layer MLP (hidden width -> output width)."""

    def __init__(self, hidden: int, out_dim: int, bands: int):
        super().__init__()
        self.bands = bands
        in_dim = POSE_VECTOR_DIM * (1 + 2 * bands)
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, out_dim))
        # Zero output at first: a pretrained UNet starts unchanged; the pose signal is learned in.
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        # Computed here, not kept as a buffer: from_pretrained builds models on the meta device and
        # fills only what the weights file holds.
        freqs = 2.0 ** torch.arange(self.bands, dtype=pose.dtype, device=pose.device) * math.pi
        angles = pose[..., None] * freqs
        feats = torch.cat([pose, angles.sin().flatten(1), angles.cos().flatten(1)], dim=-1)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))


def _unet_class(name: str):
    from diffusers import UNet2DConditionModel, UNet2DModel

    if name not in UNET_CLASSES:
        raise OdinError(f"unsupported UNet class {name!r}; expected one of {', '.join(UNET_CLASSES)}")
    return UNet2DModel if name == "UNet2DModel" else UNet2DConditionModel


class OdinDenoiser(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, unet_config: dict, unet_class: str = "UNet2DModel", image_channels: int = 3,
                 pose_fourier_bands: int = 6, pose_tokens: int = 4):
        super().__init__()
        self.unet = _unet_class(unet_class).from_config(unet_config)
        self.image_channels = image_channels
        # Read off the UNet, so that denoisers saved before the option existed load unchanged.
        self.reprojected_source = self.unet.config.in_channels == 3 * image_channels + PLUCKER_CHANNELS
        self.cross_attention = unet_class == "UNet2DConditionModel"
        if self.cross_attention:
            self.token_dim = token_width(self.unet.config)
            hidden, out_dim = self.token_dim, self.token_dim * pose_tokens
        else:
            hidden = out_dim = self.unet.time_embedding.linear_2.out_features
        self.pose_embedding = PoseEmbedding(hidden, out_dim, pose_fourier_bands)
        # Learned "no pose" code for the unconditional branch of classifier-free guidance.
        self.null_pose = nn.Parameter(torch.zeros(out_dim))

    def forward(self, noisy, timesteps, source, plucker, pose, keep=None, reprojected=None):
        """Returns (prediction (B, C, H, W), motion-mask logit (B, 1, H, W)).

        ``reprojected`` (encoded like ``source``) is required when the UNet was built to take it."""
        if keep is None:
            keep = torch.ones(noisy.shape[0], dtype=torch.bool, device=noisy.device)
        k = keep.to(noisy.dtype)[:, None, None, None]
        images = [source]
        if self.reprojected_source:
            if reprojected is None:
                raise OdinError("this denoiser takes the reprojected source as input; none was given")
            images.append(reprojected)
        x = torch.cat([noisy, *(im.to(noisy.dtype) * k for im in images), plucker.to(noisy.dtype) * k], dim=1)
        emb = self.pose_embedding(pose)
        emb = torch.where(keep[:, None], emb, self.null_pose.to(emb.dtype).expand_as(emb))
        if self.cross_attention:
            tokens = emb.reshape(emb.shape[0], -1, self.token_dim).to(noisy.dtype)
            out = self.unet(x, timesteps, encoder_hidden_states=tokens).sample
        else:
            out = self.unet(x, timesteps, class_labels=emb).sample
        return out[:, : self.image_channels], out[:, self.image_channels:]


def token_width(unet_config) -> int:
    """Width of the tokens a UNet2DConditionModel attends to (before its optional input projection)."""
    width = unet_config.get("encoder_hid_dim") or unet_config.get("cross_attention_dim")
    if not isinstance(width, int):
        raise OdinError(f"UNet cross_attention_dim {width!r} differs per block; one width is supported")
    return width


def _block_types(attention_levels) -> tuple[list[str], list[str]]:
    down = ["AttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels]
    up = ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels)]
    return down, up


def pixel_unet_config(cfg: ModelConfig) -> dict:
    if len(cfg.attention_levels) != len(cfg.block_out_channels):
        raise OdinError(f"model.attention_levels has {len(cfg.attention_levels)} entries but "
                        f"model.block_out_channels has {len(cfg.block_out_channels)}")
    if cfg.resolution % 2 ** (len(cfg.block_out_channels) - 1):
        raise OdinError(f"{cfg.resolution} is not a multiple of {2 ** (len(cfg.block_out_channels) - 1)} "
                        "(the UNet's downsampling)", "model.resolution (--resolution)")
    down, up = _block_types(cfg.attention_levels)
    return {"sample_size": cfg.resolution, "in_channels": 3 * (2 + cfg.reproject_source) + PLUCKER_CHANNELS,
            "out_channels": 3 + 1,
            "block_out_channels": list(cfg.block_out_channels), "layers_per_block": cfg.layers_per_block,
            "down_block_types": down, "up_block_types": up, "norm_num_groups": cfg.norm_num_groups,
            "class_embed_type": "identity", "attention_head_dim": 8}


def build_denoiser(unet_config: dict, cfg: ModelConfig, unet_class: str = "UNet2DModel") -> OdinDenoiser:
    """A denoiser with fresh weights from a UNet config; the mask logit starts at cfg.mask_logit_init."""
    image_channels = unet_config["out_channels"] - 1
    model = OdinDenoiser(json_ready(unet_config), unet_class, image_channels, cfg.pose_fourier_bands,
                         cfg.pose_tokens)
    with torch.no_grad():
        model.unet.conv_out.bias[image_channels:] = cfg.mask_logit_init
    return model


class PixelCodec:
    """Pixel space: the model works on RGB in [-1, 1] directly."""

    factor = 1
    channels = 3

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(-1, 1)

    def to(self, device, dtype=None):
        return self


class LatentCodec:
    """Latent space through a frozen diffusers AutoencoderKL (latents scaled to about unit variance)."""

    def __init__(self, vae):
        self.vae = vae.eval().requires_grad_(False)
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.channels = vae.config.latent_channels
        self.scaling = float(vae.config.scaling_factor)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        # The posterior mean, not a sample: conditioning and targets stay deterministic for resume.
        return self.vae.encode(images.to(self.vae.dtype)).latent_dist.mean.float() * self.scaling

    @torch.no_grad()
    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.decode((x / self.scaling).to(self.vae.dtype)).sample.float().clamp(-1, 1)

    def to(self, device, dtype=None):
        self.vae.to(device=device, dtype=dtype)
        return self


def make_codec(cfg: ModelConfig):
    from odin.pretrained import load_vae

    return LatentCodec(load_vae(cfg.pretrained)) if cfg.latent else PixelCodec()


def codec_for(vae):
    """The codec of a pipeline's (optional) VAE component."""
    return PixelCodec() if vae is None else LatentCodec(vae)


def new_denoiser(cfg: ModelConfig, codec) -> tuple[OdinDenoiser, dict]:
    """Fresh model for a new run, and its (JSON) config to store with its checkpoints."""
    if cfg.latent:
        from odin.pretrained import widen_pretrained_unet

        if cfg.resolution % codec.factor:
            raise OdinError(f"{cfg.resolution} is not a multiple of the VAE factor {codec.factor}",
                            "model.resolution (--resolution)")
        model = widen_pretrained_unet(Path(cfg.pretrained) / "unet", codec.channels, cfg,
                                      cfg.resolution // codec.factor)
    else:
        model = build_denoiser(pixel_unet_config(cfg), cfg)
    return model, denoiser_config(model)


def denoiser_config(model: OdinDenoiser) -> dict:
    return json_ready({k: v for k, v in dict(model.config).items() if not k.startswith("_")})


def json_ready(d: dict) -> dict:
    import json

    return json.loads(json.dumps(d))
