"""Starting Odin from a pretrained diffusers checkpoint (``--pretrained SD_DIR`` = ``SD_DIR/{vae,unet}``).

The recipe is Zero-1-to-3's: the UNet's input convolution is widened for the source latent (and the
reprojected source's latent, odin/conditioning.py:plane_reprojection) and the Plücker channels with zero-initialised weights, and its output convolution gains one zero-weight
motion-mask channel, so at step 0 the widened network computes exactly what the pretrained one
did.  A UNet that already takes the source latent (``in_channels = 2C``, as Zero-1-to-3's own)
keeps those weights too.  For a ``UNet2DConditionModel`` (Stable Diffusion family) the pose
becomes cross-attention tokens where the text or image embedding went (odin/models.py); its
time embedding is kept; a class embedding, if any, is dropped.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ingest.errors import OdinError
from odin.conditioning import PLUCKER_CHANNELS
from odin.config import ModelConfig
from odin.models import UNET_CLASSES, OdinDenoiser, _unet_class, build_denoiser


def diffusers_class(folder: Path) -> str:
    try:
        return json.loads((Path(folder) / "config.json").read_text()).get("_class_name", "unknown")
    except json.JSONDecodeError as e:
        raise OdinError(f"config.json is not valid JSON ({e.msg})", folder) from None


def _widened_config(base, kind: str, channels: int, sample_size: int, unet_dir: Path, reproject: bool) -> dict:
    config = {k: v for k, v in dict(base.config).items() if not k.startswith("_")}
    config.update(in_channels=(2 + reproject) * channels + PLUCKER_CHANNELS, out_channels=channels + 1, sample_size=sample_size)
    if kind == "UNet2DModel":
        return {**config, "class_embed_type": "identity", "num_class_embeds": None}
    if config.get("addition_embed_type") or config.get("encoder_hid_dim_type") not in (None, "text_proj"):
        raise OdinError("UNet needs added conditioning inputs (addition_embed_type / encoder_hid_dim_type, "
                        "SDXL-style); --pretrained supports SD 1.x/2.x-style UNet2DConditionModels", unet_dir)
    return {**config, "class_embed_type": None, "num_class_embeds": None}


def widen_pretrained_unet(unet_dir: Path, latent_channels: int, cfg: ModelConfig,
                          sample_size: int | None = None) -> OdinDenoiser:
    """An OdinDenoiser around the pretrained UNet in ``unet_dir``, widened as in the module doc."""
    unet_dir = Path(unet_dir)
    if not (unet_dir / "config.json").exists():
        raise OdinError("missing unet/config.json (expected a diffusers folder with vae/ and unet/)", unet_dir)
    kind = diffusers_class(unet_dir)
    if kind not in UNET_CLASSES:
        raise OdinError(f"holds a {kind}; --pretrained supports {' and '.join(UNET_CLASSES)} UNets", unet_dir)
    base = _unet_class(kind).from_pretrained(unet_dir)
    c, c_in = latent_channels, base.config.in_channels
    if base.config.out_channels != c or c_in not in (c, 2 * c):
        raise OdinError(f"UNet has {c_in}->{base.config.out_channels} channels but the VAE has {c} latent channels "
                        f"(expected {c}->{c}, or {2 * c}->{c} for a UNet that already takes the source)", unet_dir)
    config = _widened_config(base, kind, c, sample_size or base.config.sample_size, unet_dir, cfg.reproject_source)
    model = build_denoiser(config, cfg, kind)
    state = {k: v for k, v in base.state_dict().items() if not k.startswith("class_embedding.")}
    with torch.no_grad():
        w_in = torch.zeros_like(model.unet.conv_in.weight)
        w_in[:, :c_in] = state.pop("conv_in.weight")
        w_out = torch.zeros_like(model.unet.conv_out.weight)
        w_out[:c] = state.pop("conv_out.weight")
        b_out = model.unet.conv_out.bias.clone()
        b_out[:c] = state.pop("conv_out.bias")
        state.update({"conv_in.weight": w_in, "conv_out.weight": w_out, "conv_out.bias": b_out})
    model.unet.load_state_dict(state, strict=True)
    return model


def load_vae(pretrained: str | Path):
    from diffusers import AutoencoderKL

    vae_dir = Path(pretrained) / "vae"
    if not (vae_dir / "config.json").exists():
        raise OdinError("missing vae/config.json (expected a diffusers folder with vae/ and unet/)", pretrained)
    kind = diffusers_class(vae_dir)
    if kind != "AutoencoderKL":
        raise OdinError(f"holds a {kind}; --pretrained needs an AutoencoderKL VAE", vae_dir)
    return AutoencoderKL.from_pretrained(vae_dir)
