"""Sampling: one view from one image and a relative pose, and trajectories of chained views.

Guidance with several conditioning views (trajectory mode) composes their scores:

    eps = eps_uncond + g * sum_i w_i (eps(view_i) - eps_uncond),   sum_i w_i = 1

Each step of a trajectory is conditioned on the previously generated frame (as in the paper,
which keeps consecutive frames consistent) and on the original image (ours: the one view that
is not generated, which keeps errors from accumulating along the path).
"""
from __future__ import annotations

from dataclasses import dataclass

from pathlib import Path

import numpy as np
import torch
from diffusers import DiffusionPipeline

from ingest import conventions as cv
from ingest.errors import OdinError
from odin.conditioning import check_rotation, plane_reprojection, plucker_maps, pose_vector, resize_intrinsics
from odin.config import DiffusionConfig, OdinConfig
from odin.schedulers import sampler_from, training_scheduler


@dataclass
class ViewCondition:
    """One conditioning view for a batch: its image and the target's pose relative to it."""

    image: torch.Tensor  # (B, 3, H, W) in [-1, 1]
    R: torch.Tensor  # (B, 3, 3) rotation of T_tgt_from_view
    t: torch.Tensor  # (B, 3), scale-normalised
    scale: torch.Tensor  # (B,)
    weight: float = 1.0
    plucker: torch.Tensor | None = None  # (B, 6, h, w) when already computed (training batches carry it)
    reprojected: torch.Tensor | None = None  # (B, 3, H, W) likewise (odin/conditioning.py:plane_reprojection)
    K_src: list[cv.Intrinsics] | None = None  # the view's intrinsics at any size; default: the target's

    @classmethod
    def from_batch(cls, batch) -> "ViewCondition":
        """The condition of a PairBatch: its sources at its pairs' poses, maps already computed."""
        return cls(batch.source, batch.R.double(), batch.t.double(), torch.exp(batch.pose[:, -1].double()),
                   plucker=batch.plucker, reprojected=batch.reprojected)


class OdinPipeline(DiffusionPipeline):
    """Odin's sampler as a diffusers pipeline: components ``denoiser`` (OdinDenoiser), ``scheduler``
    (the training DDPM schedule; samplers are derived from it per call) and ``vae`` (latent mode
    only).  ``save_pretrained`` writes the hub layout (model_index.json + one folder per
    component); ``OdinPipeline.from_pretrained`` reads it back."""

    model_cpu_offload_seq = "denoiser->vae"
    _optional_components = ["vae"]

    def __init__(self, denoiser, scheduler, vae=None, resolution: int = 64, odin_config: dict | None = None):
        super().__init__()
        self.register_modules(denoiser=denoiser, scheduler=scheduler, vae=vae)
        self.register_to_config(resolution=resolution, odin_config=odin_config)
        # Denormals from near-zero (zero-initialised) weights slow CPU kernels many times over.
        torch.set_flush_denormal(True)

    @classmethod
    def assemble(cls, model, codec, diffusion: DiffusionConfig, resolution: int, device="cpu",
                 dtype: torch.dtype = torch.float32, odin_config: dict | None = None) -> "OdinPipeline":
        """A pipeline around a live model and codec (training previews, evaluation, exports)."""
        # ModelMixin.to warns about any dtype argument, even an unchanged one.
        model = model.to(device) if model.dtype == dtype else model.to(device=device, dtype=dtype)
        pipe = cls(model.eval(), training_scheduler(diffusion),
                   getattr(codec, "vae", None), resolution, odin_config)
        codec.to(device)
        return pipe

    @property
    def resolution(self) -> int:
        return self.config.resolution

    @property
    def codec(self):
        from odin.models import codec_for

        return codec_for(self.vae)

    @property
    def work_resolution(self) -> int:
        return self.resolution // self.codec.factor

    def _encode_condition(self, cond: ViewCondition, Ks: list[cv.Intrinsics] | None):
        check_rotation(cond.R)
        dtype = self.denoiser.dtype
        image = self.codec.encode(cond.image.to(self.device)).to(dtype)
        plucker = cond.plucker if cond.plucker is not None else plucker_maps(cond.R.double().cpu(), cond.t.double().cpu(), Ks)
        plucker = plucker.to(self.device, dtype)
        pose = pose_vector(cond.R.double(), cond.t.double(), cond.scale.double()).to(self.device, dtype)
        reprojected = None
        if self.denoiser.reprojected_source:
            reprojected = cond.reprojected
            if reprojected is None:
                if Ks is None:
                    raise OdinError("the targets' intrinsics (Ks) are needed to reproject the source")
                side = cond.image.shape[-1]
                K_tgt = [resize_intrinsics(K, side, side) for K in Ks]
                K_src = [resize_intrinsics(K, side, side) for K in (cond.K_src or Ks)]
                reprojected = plane_reprojection(cond.image.float(), cond.R.double().cpu(), cond.t.double().cpu(),
                                                 K_src, K_tgt)
            reprojected = self.codec.encode(reprojected.to(self.device)).to(dtype)
        return image, plucker, pose, reprojected

    @torch.no_grad()
    def __call__(self, conditions: list[ViewCondition], Ks: list[cv.Intrinsics] | None = None, steps: int = 50,
                 sampler: str = "ddim", guidance: float = 2.0, generator: torch.Generator | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (B, 3, H, W) in [-1, 1], motion masks (B, 1, h, w) in [0, 1]).

        ``Ks`` are the targets' intrinsics at the working resolution (needed unless every
        condition carries its Plücker map)."""
        scheduler = sampler_from(sampler, self.scheduler.config, pixel_space=self.vae is None)
        scheduler.set_timesteps(steps, device=self.device)
        codec, dtype = self.codec, self.denoiser.dtype
        encoded = [self._encode_condition(c, Ks) for c in conditions]
        weights = torch.tensor([c.weight for c in conditions], dtype=torch.float32)
        weights = (weights / weights.sum()).tolist()
        b = conditions[0].image.shape[0]
        shape = (b, codec.channels, self.work_resolution, self.work_resolution)
        noise_gen = generator.device if generator is not None else "cpu"
        x = torch.randn(shape, generator=generator, device=noise_gen).to(self.device) * scheduler.init_noise_sigma
        use_uncond = guidance != 1.0
        n = len(encoded) + int(use_uncond)
        images = torch.cat([e[0] for e in encoded] + ([torch.zeros_like(encoded[0][0])] if use_uncond else []))
        plucker = torch.cat([e[1] for e in encoded] + ([torch.zeros_like(encoded[0][1])] if use_uncond else []))
        pose = torch.cat([e[2] for e in encoded] + ([encoded[0][2]] if use_uncond else []))
        reprojected = None
        if encoded[0][3] is not None:
            reprojected = torch.cat([e[3] for e in encoded] + ([torch.zeros_like(encoded[0][3])] if use_uncond else []))
        keep = torch.ones(n * b, dtype=torch.bool, device=self.device)
        if use_uncond:
            keep[-b:] = False
        mask_logit = None
        for t in scheduler.timesteps:
            inp = scheduler.scale_model_input(x, t).to(dtype).repeat(n, 1, 1, 1)
            ts = t.reshape(1).expand(n * b).to(self.device)
            pred, logits = self.denoiser(inp, ts, images, plucker, pose, keep, reprojected)
            pred = pred.float().reshape(n, b, *shape[1:])
            cond = sum(w * pred[i] for i, w in enumerate(weights))
            guided = pred[-1] + guidance * (cond - pred[-1]) if use_uncond else cond
            x = scheduler.step(guided, t, x, generator=generator).prev_sample
            mask_logit = logits.float().reshape(n, b, 1, *shape[2:])[: len(encoded)].mean(0)
        return codec.decode(x), torch.sigmoid(mask_logit)


def _condition(view: torch.Tensor, c2w_view, c2w_tgt, scale: float, weight: float) -> ViewCondition:
    T = cv.relative_pose(np.asarray(c2w_view, np.float64), np.asarray(c2w_tgt, np.float64))
    return ViewCondition(view[None], torch.from_numpy(T[:3, :3])[None], torch.from_numpy(T[:3, 3] / scale)[None],
                         torch.tensor([scale], dtype=torch.float64), weight)


def next_frame(pipe: OdinPipeline, image: torch.Tensor, c2w_image, previous: tuple | None, c2w_tgt,
               K: cv.Intrinsics, scale: float = 1.0, anchor_weight: float = 0.5, **sample_kwargs) -> torch.Tensor:
    """One trajectory step: the view at ``c2w_tgt`` conditioned on the original ``image`` (taken at
    ``c2w_image``) and, when given, on ``previous = (frame, c2w)``, the last generated view."""
    check_rotation(np.asarray(c2w_tgt)[:3, :3], "target camera pose")
    if previous is None or anchor_weight >= 1:
        conds = [_condition(image, c2w_image, c2w_tgt, scale, 1.0)]
    else:
        conds = [_condition(image, c2w_image, c2w_tgt, scale, anchor_weight),
                 _condition(previous[0], previous[1], c2w_tgt, scale, 1 - anchor_weight)]
    out, _ = pipe(conds, [K], **sample_kwargs)
    return out[0].cpu()


def trajectory(pipe: OdinPipeline, image: torch.Tensor, c2ws: list[np.ndarray], Ks: list[cv.Intrinsics],
               scale: float = 1.0, anchor_weight: float = 0.5, progress=None, **sample_kwargs) -> list[torch.Tensor]:
    """Frames along a camera path whose first camera took ``image`` (3, H, W); returns (3, H, W) tensors.

    Camera positions are in scene units; ``scale`` converts them to the model's normalised unit
    (the pairs' ``t`` is the scene translation divided by a robust depth of the source view).
    """
    for i, c2w in enumerate(c2ws):
        check_rotation(np.asarray(c2w)[:3, :3], f"camera path pose {i}")
    frames = [image]
    for k in range(1, len(c2ws)):
        previous = (frames[-1], c2ws[k - 1]) if k > 1 else None
        frames.append(next_frame(pipe, image, c2ws[0], previous, c2ws[k], Ks[k], scale, anchor_weight, **sample_kwargs))
        if progress is not None:
            progress.update(1)
    return frames


def load_pipeline(run: str | Path, device: str | None = None, use_ema: bool = True):
    """(OdinPipeline, OdinConfig) for a RUN folder, a checkpoint folder or a pipeline folder
    (model_index.json, as RUN/pipeline); bf16 on CUDA."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if (Path(run) / "model_index.json").exists():
        pipe = OdinPipeline.from_pretrained(run)
        pipe.denoiser.to(device) if dtype == pipe.denoiser.dtype else pipe.denoiser.to(device=device, dtype=dtype)
        pipe.codec.to(device)
        return pipe, OdinConfig.from_dict(pipe.config.odin_config, Path(run) / "model_index.json")
    from odin.checkpoint import load_for_inference
    from odin.models import make_codec

    model, cfg, _ = load_for_inference(run, use_ema=use_ema)
    pipe = OdinPipeline.assemble(model, make_codec(cfg.model), cfg.diffusion, cfg.model.resolution, device, dtype,
                                 cfg.to_dict())
    return pipe, cfg
