"""Volume rendering of an ``NRCModel``: rays -> RGB, depth and the distribution over codes.

``volume_weights`` is the vectorised compositing (exclusive cumulative sum of optical depth);
``volume_weights_reference`` is the textbook front-to-back loop it is tested against.
``render_rays`` evaluates the field only on samples whose occupancy-grid cell is occupied
(training's path); ``use_occupancy=False`` evaluates every sample (its reference). By default
(None) every renderer culls with the grid exactly when training did (``SamplerConfig.culls_in_training``):
a field trained without the grid is rendered without it.
``march_rays`` (inference) also stops each ray once it is opaque; it is tested against both.
"""
from __future__ import annotations

import numpy as np
import torch

from ingest import conventions as cv
from nrc.data import Camera, camera_rays
from nrc.field import NRCModel
from nrc.proposal import interlevel_loss, pdf_edges
from nrc.sampling import s_from_t, sample_along_rays, t_from_s

OUTPUTS = ("rgb", "depth", "codes", "accumulation")


def volume_weights(sigma: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Per-sample weights T_i * alpha_i, (R, N), for densities and interval lengths (R, N)."""
    return volume_weights_and_transmittance(sigma, deltas)[0]


def volume_weights_and_transmittance(sigma: torch.Tensor, deltas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights T_i * alpha_i, transmittance T_i: the light reaching sample i), each (R, N)."""
    optical = sigma * deltas
    alpha = 1 - torch.exp(-optical)
    transmittance = torch.exp(-torch.cumsum(optical, -1) + optical)  # exclusive
    return alpha * transmittance, transmittance


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


def distortion_loss(weights: torch.Tensor, s_edges: torch.Tensor) -> torch.Tensor:
    """mip-NeRF 360's distortion loss per ray (R,), in O(N): sum_ij w_i w_j |m_i - m_j| +
    1/3 sum_i w_i^2 (s_i+1 - s_i), on normalised s-space intervals. It pulls each ray's weight
    into one compact interval, the cure for "fog" fields that paint colour along the whole ray."""
    mids = 0.5 * (s_edges[:, 1:] + s_edges[:, :-1])
    widths = s_edges[:, 1:] - s_edges[:, :-1]
    w_before = torch.cumsum(weights, -1) - weights
    wm_before = torch.cumsum(weights * mids, -1) - weights * mids
    pairwise = 2 * (weights * (mids * w_before - wm_before)).sum(-1)
    return pairwise + (weights**2 * widths).sum(-1) / 3


def distortion_loss_reference(weights: torch.Tensor, s_edges: torch.Tensor) -> torch.Tensor:
    """The double sum written out: the reference for :func:`distortion_loss`."""
    mids = 0.5 * (s_edges[:, 1:] + s_edges[:, :-1])
    widths = s_edges[:, 1:] - s_edges[:, :-1]
    pairwise = (weights[:, :, None] * weights[:, None, :] * (mids[:, :, None] - mids[:, None, :]).abs()).sum((1, 2))
    return pairwise + (weights**2 * widths).sum(-1) / 3


def ray_intervals(encoder, sampler, o: torch.Tensor, d: torch.Tensor, *, stratified: bool,
                  generator: torch.Generator | None = None,
                  use_occupancy: bool = True) -> tuple[torch.Tensor, torch.Tensor, tuple | None]:
    """Where the radiance field is evaluated along normalised rays: interval edges (R, N + 1) and
    sample distances (R, N) in scene radii, and, with a proposal field, (its s-space edges, its
    weights, the drawn s-space edges) for :func:`nrc.proposal.interlevel_loss`, else None."""
    n_rays = len(o)
    if encoder.proposal is None:
        t_edges, t_mid = sample_along_rays(n_rays, sampler.n_samples, stratified=stratified, generator=generator,
                                           device=o.device, **encoder.ray_range())
        return t_edges, t_mid, None
    t_edges_p, t_mid_p = sample_along_rays(n_rays, sampler.proposal_samples, stratified=stratified, generator=generator,
                                           device=o.device, **encoder.ray_range())
    points = o[:, None, :] + d[:, None, :] * t_mid_p[..., None]
    if use_occupancy:
        keep = encoder.occupancy.query(points)
        sigma = torch.zeros(keep.shape, device=o.device)
        if keep.any():
            sigma = sigma.index_put(keep.nonzero(as_tuple=True), encoder.proposal(points[keep]).float())
    else:
        sigma = encoder.proposal(points.reshape(-1, 3)).float().view(points.shape[:2])
    weights = volume_weights(sigma, t_edges_p[:, 1:] - t_edges_p[:, :-1])
    L = encoder.linear_until
    s_edges_p = s_from_t(t_edges_p / L)
    s_edges = pdf_edges(s_edges_p, weights, sampler.n_samples, stratified=stratified, generator=generator)
    return L * t_from_s(s_edges), L * t_from_s(0.5 * (s_edges[:, 1:] + s_edges[:, :-1])), (s_edges_p, weights, s_edges)


def render_rays(model: NRCModel, scene: int, origins: torch.Tensor, directions: torch.Tensor, *,
                stratified: bool = False, generator: torch.Generator | None = None, use_occupancy: bool | None = None,
                outputs: tuple[str, ...] = ("rgb",), min_transmittance: float = 0.0) -> dict:
    """Render world-frame rays (R, 3) with unit directions. Returns the requested outputs
    ("rgb" (R,3), "depth" (R,) world units, "codes" (R,K) rendering weight per code,
    "accumulation" (R,), "distortion" (R,) see :func:`distortion_loss`, "interlevel" (R,) the
    proposal field's loss when there is one) plus "vq_loss" (2,), "variation_cost" (the
    codebook's bottleneck price) and "n_evaluated" (samples the field computed). Colour is
    computed only where at least ``min_transmittance`` of the light is left (training's saving:
    hidden samples cost no colour MLP; the colour changes by at most that fraction)."""
    cfg = model.config.sampler
    use_occupancy = cfg.culls_in_training if use_occupancy is None else use_occupancy
    encoder = model.encoders[scene]
    o = encoder.normalise(origins.float())
    d = directions.float()
    n_rays, n_samples = len(o), cfg.n_samples
    t_edges, t_mid, proposal = ray_intervals(encoder, cfg, o, d, stratified=stratified, generator=generator,
                                             use_occupancy=use_occupancy)
    points = (o[:, None, :] + d[:, None, :] * t_mid[..., None]).reshape(-1, 3)
    # Field outputs stay packed (one row per evaluated sample ``flat``): only density is scattered
    # into the dense (R, N) layout the transmittance cumsum needs; colour and codes are summed per
    # ray with index_add, which skips the dense (R, N, 3) tensors and their scatter/gather backward.
    # Without the grid every sample is evaluated and the packed layout is the dense one.
    every = not use_occupancy
    flat = torch.arange(len(points), device=o.device) if every else encoder.occupancy.query(points).nonzero().squeeze(1)
    ray = torch.div(flat, n_samples, rounding_mode="floor")
    vq_loss, variation_cost = torch.zeros(2, device=o.device), torch.zeros((), device=o.device)
    field = None
    sigma = torch.zeros(n_rays * n_samples, device=o.device)
    if len(flat):
        field = model.query(scene, points if every else points[flat], None)
        sigma = field.sigma.float() if every else sigma.index_put((flat,), field.sigma.float())
        vq_loss, variation_cost = field.assignment.vq_loss, field.assignment.variation_cost
    sigma = sigma.view(n_rays, n_samples)
    weights, transmittance = volume_weights_and_transmittance(sigma, t_edges[:, 1:] - t_edges[:, :-1])
    w = weights.reshape(-1) if every else weights.reshape(-1)[flat]
    out = {"vq_loss": vq_loss, "variation_cost": variation_cost, "n_evaluated": len(flat)}
    if "rgb" in outputs:
        rgb = torch.zeros(n_rays, 3, device=o.device)
        if field is not None:
            lit_t = transmittance.detach().reshape(-1)
            lit = ((lit_t if every else lit_t[flat]) >= min_transmittance).nonzero().squeeze(1)
            # Nothing hidden (the usual case early in training): skip the gathers and their backward.
            geo, lit_ray, lit_w = (field.geo, ray, w) if len(lit) == len(flat) else (field.geo[lit], ray[lit], w[lit])
            rgb = rgb.index_add(0, lit_ray, lit_w[:, None] * model.decoder.color(geo, d, lit_ray).float())
        out["rgb"] = rgb
        out["n_coloured"] = len(lit) if field is not None else 0
    if "depth" in outputs:
        out["depth"] = composite(weights, t_mid) * encoder.radius
    if "accumulation" in outputs:
        out["accumulation"] = weights.sum(1)
    if "distortion" in outputs:
        s_edges = s_from_t(t_edges / encoder.linear_until)
        uniform = s_edges if proposal is None else proposal[0]  # its ends are the ray's whole s-range
        out["distortion"] = distortion_loss(weights, (s_edges - uniform[:, :1]) / (uniform[:, -1:] - uniform[:, :1]))
    if proposal is not None and "interlevel" in outputs:
        s_edges_p, weights_p, s_edges = proposal
        out["interlevel"] = interlevel_loss(s_edges, weights, s_edges_p, weights_p)
    if "codes" in outputs:
        codes = torch.zeros(n_rays * model.codebook.n_codes, device=o.device)
        if field is not None:
            codes = codes.index_add(0, ray * model.codebook.n_codes + field.assignment.index, w)
        out["codes"] = codes.view(n_rays, model.codebook.n_codes)
    return out


@torch.no_grad()
def march_rays(model: NRCModel, scene: int, origins: torch.Tensor, directions: torch.Tensor, *,
               outputs: tuple[str, ...] = ("rgb",), min_transmittance: float = 1e-3, segment: int = 8,
               use_occupancy: bool | None = None) -> dict:
    """Inference-only :func:`render_rays` with early ray termination: samples are visited front
    to back ``segment`` at a time, and a ray stops once less than ``min_transmittance`` of its
    light is left, so the field is never evaluated behind an opaque surface. Same outputs as
    ``render_rays(..., stratified=False)``; they differ by at most ``min_transmittance`` of
    the remaining colour/depth."""
    cfg = model.config.sampler
    use_occupancy = cfg.culls_in_training if use_occupancy is None else use_occupancy
    encoder = model.encoders[scene]
    o = encoder.normalise(origins.float())
    d = directions.float()
    n_rays, n_codes = len(o), model.codebook.n_codes
    t_edges, t_mid, _ = ray_intervals(encoder, cfg, o, d, stratified=False, use_occupancy=use_occupancy)
    deltas = t_edges[:, 1:] - t_edges[:, :-1]
    transmittance = torch.ones(n_rays, device=o.device)
    acc = {"rgb": torch.zeros(n_rays, 3, device=o.device), "depth": torch.zeros(n_rays, device=o.device),
           "codes": torch.zeros(n_rays, n_codes, device=o.device)}
    alive = torch.arange(n_rays, device=o.device)
    n_evaluated = 0
    for start in range(0, cfg.n_samples, segment):
        if len(alive) == 0:
            break
        stop = min(start + segment, cfg.n_samples)
        t_seg = t_mid[alive, start:stop]
        points = o[alive, None, :] + d[alive, None, :] * t_seg[..., None]
        keep = encoder.occupancy.query(points) if use_occupancy else torch.ones(points.shape[:2], dtype=torch.bool,
                                                                               device=o.device)
        flat = keep.nonzero(as_tuple=True)
        if len(flat[0]) == 0:
            continue
        n_evaluated += len(flat[0])
        field = model.query(scene, points[flat], d[alive][flat[0]] if "rgb" in outputs else None)
        sigma = torch.zeros_like(t_seg).index_put(flat, field.sigma.float())
        weights = volume_weights(sigma, deltas[alive, start:stop]) * transmittance[alive, None]
        if "rgb" in outputs:
            rgb = torch.zeros(*t_seg.shape, 3, device=o.device).index_put(flat, field.rgb.float())
            acc["rgb"][alive] += composite(weights, rgb)
        acc["depth"][alive] += composite(weights, t_seg)
        if "codes" in outputs:
            index = torch.zeros_like(t_seg, dtype=torch.long).index_put(flat, field.assignment.index)
            acc["codes"][alive] = acc["codes"][alive].scatter_add_(1, index, weights)
        transmittance[alive] *= torch.exp(-(sigma * deltas[alive, start:stop]).sum(-1))
        alive = alive[transmittance[alive] >= min_transmittance]
    out = {"n_evaluated": n_evaluated, "accumulation": 1 - transmittance}
    if "depth" in outputs:
        out["depth"] = acc["depth"] * encoder.radius
    for key in ("rgb", "codes"):
        if key in outputs:
            out[key] = acc[key]
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
                scene: int = 0, chunk: int | None = None, use_occupancy: bool | None = None,
                min_transmittance: float = 1e-3, baked=None) -> dict[str, np.ndarray]:
    """Render one view: ``camera`` is an ``Intrinsics`` (pinhole), an int height or (H, W)
    (equirectangular), or a ``nrc.data.Camera``. Returns float32 numpy arrays: "rgb" (H,W,3),
    "depth" (H,W), "codes" (H,W,K) and "segmentation" (H,W) argmax code, "accumulation" (H,W).
    Rays go through the model ``chunk`` at a time, so memory stays bounded at any size. Rays stop
    once less than ``min_transmittance`` of their light is left (0: march every sample;
    ``use_occupancy=False`` also evaluates empty cells: the plain reference render; None: the grid
    culls when it did in training, and rays still stop early). ``baked``, an
    ``nrc.baked.BakedField`` of this scene, renders from the baked grid instead (previews)."""
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
            if baked is not None:
                res = baked.render(origins[i:i + chunk], dirs[i:i + chunk], outputs=tuple(outputs))
            elif use_occupancy is not False and min_transmittance > 0:
                res = march_rays(model, scene, origins[i:i + chunk], dirs[i:i + chunk], outputs=tuple(outputs),
                                 min_transmittance=min_transmittance, use_occupancy=use_occupancy)
            else:
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
