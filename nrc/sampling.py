"""Where to evaluate the field: scene contraction, samples along rays, occupancy grid.

Coordinates: a scene is normalised by its ``SceneFrame`` (``x_n = (x - center) / radius``),
then contracted mip-NeRF-360 style with the L-infinity norm, so all of space maps into the
cube [-2, 2]^3 (the foreground cube |x_n| <= 1 unchanged, the rest squeezed into the shell).
The hash grid reads ``(contract(x_n) + 2) / 4`` in [0, 1]^3.

Samples along a ray are uniform in "s-space", ``s = t`` for ``t <= 1`` and ``s = 2 - 1/t``
beyond (t in scene radii), i.e. linear in distance nearby and linear in disparity far away:
the same spacing the contraction gives space, so far content costs no more samples than near.
"""
from __future__ import annotations

import torch


def contract(x: torch.Tensor) -> torch.Tensor:
    """Normalised points (..., 3) -> contracted points in [-2, 2]^3 (L-inf norm)."""
    n = x.abs().amax(-1, keepdim=True).clamp_min(1e-12)
    return torch.where(n <= 1, x, (2 - 1 / n) * x / n)


def uncontract(y: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`contract` for |y|_inf < 2."""
    n = y.abs().amax(-1, keepdim=True).clamp_min(1e-12)
    return torch.where(n <= 1, y, y / (n * (2 - n).clamp_min(1e-6)))


def unit_cube_from_normalised(x: torch.Tensor) -> torch.Tensor:
    """Normalised points -> hash-grid input in [0, 1]^3."""
    return ((contract(x) + 2) / 4).clamp(0, 1)


def t_from_s(s: torch.Tensor) -> torch.Tensor:
    return torch.where(s <= 1, s, 1 / (2 - s).clamp_min(1e-9))


def s_from_t(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t <= 1, t, 2 - 1 / t.clamp_min(1e-9))


def sample_along_rays(n_rays: int, n_samples: int, near: float, far: float, *, stratified: bool,
                      generator: torch.Generator | None = None, device=None,
                      linear_until: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Interval edges (R, N+1) and midpoints (R, N) as distances in scene radii, uniform in
    distance up to ``linear_until`` and in disparity beyond (s-space of ``t / linear_until``).

    ``stratified`` jitters each interval (training); otherwise samples sit at interval centres.
    """
    L = float(linear_until)
    s0, s1 = float(s_from_t(torch.tensor(near / L))), float(s_from_t(torch.tensor(far / L)))
    edges = torch.linspace(s0, s1, n_samples + 1, device=device).expand(n_rays, n_samples + 1)
    if stratified:
        u = torch.rand(n_rays, n_samples, generator=generator, device=generator.device if generator else device).to(edges)
    else:
        u = torch.full((n_rays, n_samples), 0.5, device=edges.device)
    mids = edges[:, :-1] + (edges[:, 1:] - edges[:, :-1]) * u
    return L * t_from_s(edges), L * t_from_s(mids)


def s_spacing(n_samples: int, near: float, far: float, linear_until: float = 1.0) -> float:
    """Length of one sampling interval where samples are uniform in distance, in scene radii."""
    L = float(linear_until)
    return L * (float(s_from_t(torch.tensor(far / L))) - float(s_from_t(torch.tensor(near / L)))) / n_samples


class OccupancyGrid(torch.nn.Module):
    """Which cells of the contracted cube hold any density (instant-ngp's bitfield, one cascade:
    the contraction already folds unbounded space into the cube).

    ``density_ema`` keeps a decaying max of the density seen in each cell; ``occupied`` marks
    cells whose opacity over one sampling step exceeds the threshold. Until the first update
    every cell counts as occupied.
    """

    def __init__(self, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.register_buffer("density_ema", torch.zeros(resolution**3))
        self.register_buffer("occupied", torch.ones(resolution**3, dtype=torch.bool))
        # Cells some training camera sees (see :func:`visible_cells`); not saved: ``occupied``
        # already carries it, and a fit recomputes it from its cameras.
        self.register_buffer("seen", torch.ones(resolution**3, dtype=torch.bool), persistent=False)

    def restrict_to(self, seen: torch.Tensor) -> None:
        """Never mark a cell no training camera sees as occupied (instant-ngp does the same):
        nothing constrains its density, and without this every unseen cell of a forward-facing
        capture stays foggy and costs samples."""
        self.seen.copy_(seen)
        self.occupied &= seen

    def cell_index(self, contracted: torch.Tensor) -> torch.Tensor:
        r = self.resolution
        ijk = ((contracted + 2) / 4 * r).long().clamp(0, r - 1)
        return (ijk[..., 0] * r + ijk[..., 1]) * r + ijk[..., 2]

    def query(self, normalised_points: torch.Tensor) -> torch.Tensor:
        """Bool mask (...,): True where a point's cell may hold density."""
        return self.occupied[self.cell_index(contract(normalised_points))]

    def cell_samples(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One jittered normalised point per cell, (R^3, 3), in cell order."""
        r = self.resolution
        device = self.density_ema.device
        idx = torch.arange(r**3, device=device)
        ijk = torch.stack([idx // (r * r), (idx // r) % r, idx % r], -1).float()
        jitter = torch.rand(r**3, 3, generator=generator, device=generator.device if generator else device).to(device)
        contracted = ((ijk + jitter) / r * 4 - 2).clamp(-2 + 1e-4, 2 - 1e-4)
        return uncontract(contracted)

    @torch.no_grad()
    def update(self, density_fn, step_size: float, alpha_threshold: float, decay: float,
               generator: torch.Generator | None = None, chunk: int = 1 << 18) -> None:
        """Re-estimate every cell from ``density_fn(normalised_points) -> (N,)``."""
        points = self.cell_samples(generator)
        sigma = torch.cat([density_fn(points[i:i + chunk]).float() for i in range(0, len(points), chunk)])
        self.density_ema.copy_(torch.maximum(self.density_ema * decay, sigma))
        # A step of ``step_size`` in s-space is ``step_size * t^2`` long in the contracted shell,
        # so far cells need less density to matter. Never demand more than the mean: early in
        # training everything is faint.
        step_length = step_size * points.abs().amax(-1).clamp_min(1) ** 2
        sigma_threshold = -torch.log1p(torch.tensor(-alpha_threshold)) / step_length
        threshold = torch.minimum(sigma_threshold.to(self.density_ema), self.density_ema.mean())
        self.occupied.copy_((self.density_ema > threshold) & self.seen)

    def occupied_fraction(self) -> float:
        return float(self.occupied.float().mean())

    def cell_centers(self) -> torch.Tensor:
        """(R^3, 3) contracted coordinates of the cell centres, in cell order."""
        r = self.resolution
        idx = torch.arange(r**3, device=self.density_ema.device)
        ijk = torch.stack([idx // (r * r), (idx // r) % r, idx % r], -1).float()
        return (ijk + 0.5) / r * 4 - 2


@torch.no_grad()
def visible_cells(grid: OccupancyGrid, cameras, center: torch.Tensor, radius: float) -> torch.Tensor:
    """(R^3,) bool: cells of ``grid`` (normalised by ``center``/``radius``) that at least one of
    the pinhole ``cameras`` (``nrc.data.Camera``) sees, with a margin of the cell's own size
    so no cell that touches an image is lost. Any equirectangular camera sees everything."""
    if any(cam.intrinsics is None for cam in cameras):
        return torch.ones(grid.resolution**3, dtype=torch.bool, device=center.device)
    contracted = grid.cell_centers()
    half = 2.0 / grid.resolution  # half a cell, contracted units
    outward = (contracted + half * torch.sign(contracted)).clamp(-2 + 1e-4, 2 - 1e-4)
    middle = uncontract(contracted)
    cell_radius = radius * (uncontract(outward) - middle).norm(dim=-1)  # world units, the larger corner
    world = center + radius * middle
    seen = torch.zeros(len(world), dtype=torch.bool, device=world.device)
    for cam in cameras:
        c2w = torch.as_tensor(cam.c2w, dtype=torch.float32, device=world.device)
        p = (world - c2w[:3, 3]) @ c2w[:3, :3]  # camera frame (x right, y down, z forward)
        z = p[:, 2]
        K = cam.intrinsics
        depth = z.clamp_min(1e-9)
        u, v = K.fx * p[:, 0] / depth + K.cx, K.fy * p[:, 1] / depth + K.cy
        mu, mv = K.fx * cell_radius / depth, K.fy * cell_radius / depth
        inside = (u > -mu) & (u < K.width + mu) & (v > -mv) & (v < K.height + mv)
        seen |= (z <= cell_radius) & (z > -cell_radius) | (z > cell_radius) & inside
    return seen
