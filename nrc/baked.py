"""A baked preview of a trained field: density, colour and code on a grid over the contracted cube.

Rendering it is trilinear lookups instead of network evaluations, which is what a viewer needs
while the camera moves (the full field refines the frame once the camera is still). What it
gives up: colour is baked as seen from the scene centre (no view dependence), and detail finer
than one cell of the grid. ``bench/viewer.py`` prints its PSNR against the full render.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nrc.field import NRCModel
from nrc.rendering import composite, volume_weights
from nrc.sampling import contract, sample_along_rays, uncontract


@dataclass
class BakedField:
    values: torch.Tensor  # (1, 4, R, R, R): density per scene radius, then RGB; grid_sample layout (z, y, x)
    codes: torch.Tensor  # (1, 1, R, R, R) hard code index, as float for nearest lookup
    center: torch.Tensor  # (3,)
    radius: float
    n_samples: int
    near: float
    far: float
    n_codes: int
    linear_until: float = 1.0

    def render(self, origins: torch.Tensor, directions: torch.Tensor, outputs: tuple[str, ...] = ("rgb",)) -> dict:
        return render_baked(self, origins, directions, outputs)


@torch.no_grad()
def bake(model: NRCModel, scene: int = 0, resolution: int = 128, chunk: int = 1 << 16) -> BakedField:
    """Evaluate the field at the centre of every cell of a ``resolution``^3 grid over [-2, 2]^3."""
    encoder = model.encoders[scene]
    device = encoder.center.device
    axis = (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) / resolution * 4 - 2
    # grid_sample reads (x, y, z) coordinates from a (D=z, H=y, W=x) volume.
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    points = uncontract(torch.stack([x, y, z], -1).reshape(-1, 3))
    # Colour as a viewer near the centre sees it: looking outwards through the point.
    directions = F.normalize(points, dim=-1)
    values, codes = [], []
    was_training = model.training
    model.eval()
    for i in range(0, len(points), chunk):
        out = model.query(scene, points[i:i + chunk], directions[i:i + chunk])
        values.append(torch.cat([out.sigma.float()[:, None], out.rgb.float()], -1))
        codes.append(out.assignment.index.float())
    model.train(was_training)
    shape = (resolution,) * 3
    cfg = model.config.sampler
    # Rendered with uniform samples only: as many as a proposal-sampled ray takes in all.
    return BakedField(torch.cat(values).T.reshape(1, 4, *shape).contiguous(), torch.cat(codes).reshape(1, 1, *shape),
                      encoder.center.clone(), float(encoder.radius), cfg.n_samples + cfg.proposal_samples,
                      encoder.near, encoder.far,
                      model.codebook.n_codes, encoder.linear_until)


@torch.no_grad()
def render_baked(baked: BakedField, origins: torch.Tensor, directions: torch.Tensor,
                 outputs: tuple[str, ...] = ("rgb",)) -> dict:
    """Like ``nrc.rendering.render_rays`` for world-frame rays (R, 3), from the baked grid."""
    o = (origins.float() - baked.center) / baked.radius
    d = directions.float()
    t_edges, t_mid = sample_along_rays(len(o), baked.n_samples, baked.near, baked.far, stratified=False, device=o.device,
                                       linear_until=baked.linear_until)
    grid = contract(o[:, None, :] + d[:, None, :] * t_mid[..., None]) / 2  # grid_sample wants [-1, 1]
    grid = grid.reshape(1, 1, 1, -1, 3)
    values = F.grid_sample(baked.values, grid, mode="bilinear", align_corners=False).reshape(4, *t_mid.shape)
    weights = volume_weights(values[0].clamp_min(0), t_edges[:, 1:] - t_edges[:, :-1])
    out = {"accumulation": weights.sum(1)}
    if "rgb" in outputs:
        out["rgb"] = composite(weights, values[1:].permute(1, 2, 0))
    if "depth" in outputs:
        out["depth"] = composite(weights, t_mid) * baked.radius
    if "codes" in outputs:
        index = F.grid_sample(baked.codes, grid, mode="nearest", align_corners=False).reshape(t_mid.shape).long()
        out["codes"] = torch.zeros(len(o), baked.n_codes, device=o.device).scatter_add_(1, index, weights)
    return out
