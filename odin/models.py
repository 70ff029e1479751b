"""The Odin denoiser (a diffusers UNet2DModel with conditioning channels) and the image codecs.

Input channels: noisy target (C) + source image (C) + Plücker map of the target camera (6).
Output channels: the diffusion target (C, epsilon or v) + one motion-mask logit.
The global pose code goes through a Fourier + MLP embedding and is added to the timestep
embedding through the UNet's ``class_embed_type="identity"`` hook.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ingest.errors import OdinError
from odin.conditioning import PLUCKER_CHANNELS, POSE_VECTOR_DIM
from odin.config import ModelConfig


class PoseEmbedding(nn.Module):
    """Fourier features of the 10-D pose code, then a two-layer MLP to the UNet's embedding width."""

    def __init__(self, out_dim: int, bands: int):
        super().__init__()
        self.register_buffer("freqs", 2.0 ** torch.arange(bands, dtype=torch.float32) * math.pi, persistent=False)
        in_dim = POSE_VECTOR_DIM * (1 + 2 * bands)
        self.mlp = nn.Sequential(nn.Linear(in_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))
        # Zero output at first: a pretrained UNet starts unchanged; the pose signal is learned in.
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        angles = pose[..., None] * self.freqs
        feats = torch.cat([pose, angles.sin().flatten(1), angles.cos().flatten(1)], dim=-1)
        return self.mlp(feats.to(self.mlp[0].weight.dtype))


class OdinDenoiser(nn.Module):
    def __init__(self, unet, image_channels: int, pose_fourier_bands: int):
        super().__init__()
        self.unet = unet
        self.image_channels = image_channels
        embed_dim = unet.time_embedding.linear_2.out_features
        self.pose_embedding = PoseEmbedding(embed_dim, pose_fourier_bands)
        # Learned "no pose" code for the unconditional branch of classifier-free guidance.
        self.null_pose = nn.Parameter(torch.zeros(embed_dim))

    def forward(self, noisy, timesteps, source, plucker, pose, keep=None):
        """Returns (prediction (B, C, H, W), motion-mask logit (B, 1, H, W))."""
        if keep is None:
            keep = torch.ones(noisy.shape[0], dtype=torch.bool, device=noisy.device)
        k = keep.to(noisy.dtype)[:, None, None, None]
        x = torch.cat([noisy, source.to(noisy.dtype) * k, plucker.to(noisy.dtype) * k], dim=1)
        emb = self.pose_embedding(pose)
        emb = torch.where(keep[:, None], emb, self.null_pose.to(emb.dtype).expand_as(emb))
        out = self.unet(x, timesteps, class_labels=emb).sample
        return out[:, : self.image_channels], out[:, self.image_channels:]


def _block_types(attention_levels) -> tuple[list[str], list[str]]:
    down = ["AttnDownBlock2D" if a else "DownBlock2D" for a in attention_levels]
    up = ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention_levels)]
    return down, up


def pixel_unet_config(cfg: ModelConfig) -> dict:
    if len(cfg.attention_levels) != len(cfg.block_out_channels):
        raise OdinError(f"model.attention_levels has {len(cfg.attention_levels)} entries but "
                        f"model.block_out_channels has {len(cfg.block_out_channels)}")
    if cfg.resolution % 2 ** (len(cfg.block_out_channels) - 1):
        raise OdinError(f"model.resolution {cfg.resolution} is not divisible by the UNet's downsampling")
    down, up = _block_types(cfg.attention_levels)
    return {"sample_size": cfg.resolution, "in_channels": 3 + 3 + PLUCKER_CHANNELS, "out_channels": 3 + 1,
            "block_out_channels": list(cfg.block_out_channels), "layers_per_block": cfg.layers_per_block,
            "down_block_types": down, "up_block_types": up, "norm_num_groups": cfg.norm_num_groups,
            "class_embed_type": "identity", "attention_head_dim": 8}


def build_denoiser(unet_config: dict, cfg: ModelConfig) -> OdinDenoiser:
    """A denoiser with fresh weights from a UNet config (as stored in checkpoints)."""
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_config(unet_config)
    image_channels = unet_config["out_channels"] - 1
    model = OdinDenoiser(unet, image_channels, cfg.pose_fourier_bands)
    with torch.no_grad():
        unet.conv_out.bias[image_channels:] = cfg.mask_logit_init
    return model


def widen_pretrained_unet(unet_dir: Path, latent_channels: int, cfg: ModelConfig) -> OdinDenoiser:
    """Load a pretrained UNet2DModel and widen it for Odin (the Zero-1-to-3 recipe).

    The extra input channels start with zero weights and the extra mask output channel with zero
    weights, so at step 0 the network computes exactly what the pretrained one did.
    """
    from diffusers import UNet2DModel

    if not (unet_dir / "config.json").exists():
        raise OdinError("missing unet/config.json (expected a diffusers folder with vae/ and unet/)", unet_dir)
    kind = _diffusers_class(unet_dir)
    if kind != "UNet2DModel":
        raise OdinError(f"holds a {kind}; --pretrained supports UNet2DModel UNets only", unet_dir)
    base = UNet2DModel.from_pretrained(unet_dir)
    if base.config.in_channels != latent_channels or base.config.out_channels != latent_channels:
        raise OdinError(f"UNet has {base.config.in_channels}->{base.config.out_channels} channels but the VAE "
                        f"has {latent_channels} latent channels", unet_dir)
    unet_config = {k: v for k, v in dict(base.config).items() if not k.startswith("_")}
    unet_config.update(in_channels=2 * latent_channels + PLUCKER_CHANNELS, out_channels=latent_channels + 1,
                       class_embed_type="identity", num_class_embeds=None)
    model = build_denoiser(unet_config, cfg)
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("class_embedding.")}
    with torch.no_grad():
        w_in = torch.zeros_like(model.unet.conv_in.weight)
        w_in[:, :latent_channels] = state.pop("conv_in.weight")
        w_out = torch.zeros_like(model.unet.conv_out.weight)
        w_out[:latent_channels] = state.pop("conv_out.weight")
        b_out = model.unet.conv_out.bias.clone()
        b_out[:latent_channels] = state.pop("conv_out.bias")
        state.update({"conv_in.weight": w_in, "conv_out.weight": w_out, "conv_out.bias": b_out})
    model.unet.load_state_dict(state, strict=True)
    return model


def _diffusers_class(folder: Path) -> str:
    import json

    return json.loads((folder / "config.json").read_text()).get("_class_name", "unknown")


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


def load_vae(pretrained: str | Path):
    from diffusers import AutoencoderKL

    vae_dir = Path(pretrained) / "vae"
    if not (vae_dir / "config.json").exists():
        raise OdinError("missing vae/config.json (expected a diffusers folder with vae/ and unet/)", pretrained)
    kind = _diffusers_class(vae_dir)
    if kind != "AutoencoderKL":
        raise OdinError(f"holds a {kind}; --pretrained needs an AutoencoderKL VAE", vae_dir)
    return AutoencoderKL.from_pretrained(vae_dir)


def make_codec(cfg: ModelConfig):
    return LatentCodec(load_vae(cfg.pretrained)) if cfg.latent else PixelCodec()


def new_denoiser(cfg: ModelConfig, codec) -> tuple[OdinDenoiser, dict]:
    """Fresh model for a new run, and the UNet config to store with its checkpoints."""
    if cfg.latent:
        if cfg.resolution % codec.factor:
            raise OdinError(f"model.resolution {cfg.resolution} is not a multiple of the VAE factor {codec.factor}")
        model = widen_pretrained_unet(Path(cfg.pretrained) / "unet", codec.channels, cfg)
        model.unet.register_to_config(sample_size=cfg.resolution // codec.factor)
    else:
        model = build_denoiser(pixel_unet_config(cfg), cfg)
    unet_config = {k: v for k, v in dict(model.unet.config).items() if not k.startswith("_")}
    return model, json_ready(unet_config)


def json_ready(d: dict) -> dict:
    import json

    return json.loads(json.dumps(d))
