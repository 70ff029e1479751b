"""Volume rendering of an ``NRCModel``: rays -> RGB, depth and the distribution over codes.

``volume_weights`` is the vectorised compositing (exclusive cumulative sum of optical depth);
``volume_weights_reference`` is the textbook front-to-back loop it is tested against.
``render_rays`` evaluates the field only on samples whose occupancy-grid cell is occupied
(the fast path); ``use_occupancy=False`` evaluates every sample (its reference).
"""
from __future__ import annotations

import numpy as np
import torch

from ingest import conventions as cv
from nrc.data import Camera, camera_rays
from nrc.field import NRCModel
from nrc.sampling import sample_along_rays

OUTPUTS = ("rgb", "depth", "codes", "accumulation")


def volume_weights(sigma: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Per-sample weights T_i * alpha_i, (R, N), for densities and interval lengths (R, N)."""
    optical = sigma * deltas
    alpha = 1 - torch.exp(-optical)
    transmittance = torch.exp(-torch.cumsum(optical, -1) + optical)  # exclusive: light reaching sample i
    return alpha * transmittance


def volume_weights_reference(sigma: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Front-to-back loop over samples; the reference for :func:`volume_weights`."""
    transmittance = torch.ones_like(sigma[:, 0])
    weights = []
    for i in range(sigma.shape[1]):
        alpha = 1 - torch.exp(-sigma[:, i] * deltas[:, i])
        weights.append(transmittance * alpha)
        transmittance = transmittance * (1 - alpha)
    return torch.stack(weights, -1)


def composite(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Sum over samples of weight * value; values (R, N) or (R, N, C)."""
    return (weights[..., None] * values).sum(1) if values.dim() == 3 else (weights * values).sum(1)


def render_rays(model: NRCModel, scene: int, origins: torch.Tensor, directions: torch.Tensor, *,
                stratified: bool = False, generator: torch.Generator | None = None, use_occupancy: bool = True,
                outputs: tuple[str, ...] = ("rgb",)) -> dict:
    """Render world-frame rays (R, 3) with unit directions. Returns the requested outputs
    ("rgb" (R,3), "depth" (R,) world units, "codes" (R,K) rendering weight per code,
    "accumulation" (R,)) plus "vq_loss" (2,) and "n_evaluated" (samples the field computed)."""
    cfg = model.config.sampler
    encoder = model.encoders[scene]
    o = encoder.normalise(origins.float())
    d = directions.float()
    n_rays = len(o)
    t_edges, t_mid = sample_along_rays(n_rays, cfg.n_samples, cfg.near, cfg.far, stratified=stratified,
                                       generator=generator, device=o.device)
    points = o[:, None, :] + d[:, None, :] * t_mid[..., None]
    keep = encoder.occupancy.query(points) if use_occupancy else torch.ones_like(t_mid, dtype=torch.bool)
    flat = keep.nonzero(as_tuple=True)
    sigma = torch.zeros_like(t_mid)
    rgb = torch.zeros(*t_mid.shape, 3, device=o.device)
    code_index = torch.zeros_like(t_mid, dtype=torch.long)
    vq_loss = torch.zeros(2, device=o.device)
    if len(flat[0]):
        field = model.query(scene, points[flat], d[flat[0]] if "rgb" in outputs else None)
        sigma = sigma.index_put(flat, field.sigma.float())
        if field.rgb is not None:
            rgb = rgb.index_put(flat, field.rgb.float())
        code_index = code_index.index_put(flat, field.assignment.index)
        vq_loss = field.assignment.vq_loss
    weights = volume_weights(sigma, t_edges[:, 1:] - t_edges[:, :-1])
    out = {"vq_loss": vq_loss, "n_evaluated": len(flat[0])}
    if "rgb" in outputs:
        out["rgb"] = composite(weights, rgb)
    if "depth" in outputs:
        out["depth"] = composite(weights, t_mid) * encoder.radius
    if "accumulation" in outputs:
        out["accumulation"] = weights.sum(1)
    if "codes" in outputs:
        codes = torch.zeros(n_rays, model.codebook.n_codes, device=o.device)
        out["codes"] = codes.scatter_add_(1, code_index, weights)
    return out


def _camera(c2w, camera) -> Camera:
    if isinstance(camera, Camera):
        return camera
    if isinstance(camera, cv.Intrinsics):
        return Camera.perspective(c2w, camera)
    height = camera if isinstance(camera, int) else int(camera[0])
    return Camera.equirect(c2w, height)


@torch.no_grad()
def render_view(model: NRCModel, c2w, camera, outputs: tuple[str, ...] = ("rgb", "depth", "codes"),
                scene: int = 0, chunk: int | None = None, use_occupancy: bool = True) -> dict[str, np.ndarray]:
    """Render one view: ``camera`` is an ``Intrinsics`` (pinhole), an int height or (H, W)
    (equirectangular), or a ``nrc.data.Camera``. Returns float32 numpy arrays: "rgb" (H,W,3),
    "depth" (H,W), "codes" (H,W,K) and "segmentation" (H,W) argmax code, "accumulation" (H,W).
    Rays go through the model ``chunk`` at a time, so memory stays bounded at any size."""
    unknown = set(outputs) - set(OUTPUTS)
    if unknown:
        raise ValueError(f"unknown outputs {sorted(unknown)}; choose from {OUTPUTS}")
    cam = _camera(c2w, camera)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunk = chunk or model.config.train.chunk_rays
    origins, dirs = camera_rays(cam)
    origins = torch.as_tensor(origins, dtype=torch.float32, device=device)
    dirs = torch.as_tensor(dirs, dtype=torch.float32, device=device)
    parts: dict[str, list] = {k: [] for k in outputs}
    for i in range(0, len(dirs), chunk):
        with autocast_for(device, model.config.train.mixed_precision):
            res = render_rays(model, scene, origins[i:i + chunk], dirs[i:i + chunk], outputs=tuple(outputs),
                              use_occupancy=use_occupancy)
        for k in outputs:
            parts[k].append(res[k].float().cpu())
    model.train(was_training)
    result = {k: torch.cat(v).numpy().reshape(cam.height, cam.width, *torch.cat(v).shape[1:])
              for k, v in parts.items()}
    if "codes" in result:
        result["segmentation"] = result["codes"].argmax(-1)
    return result


def autocast_for(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA (H100-class GPUs: no loss scaling needed); a no-op on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")
