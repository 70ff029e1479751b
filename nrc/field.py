"""The radiance field: per-scene hash-grid features -> shared codebook -> shared decoder of codes.

``NRCModel`` holds one ``SceneEncoder`` per scene of a run (hash grid, feature MLP, frame of
reference, occupancy grid) and one codebook and decoder shared by all of them, so a code
means the same kind of stuff in every scene. Points are given in each scene's normalised
coordinates (see ``nrc.sampling``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from nrc import field_cpu
from nrc.codebook import Assignment, Codebook
from nrc.codebook_cpu import assign_and_decode, fused_available
from nrc.config import ModelConfig, NRCConfig, SamplerConfig, SceneFrame
from nrc.hashgrid import HashGridEncoding
from nrc.sampling import OccupancyGrid, s_spacing, unit_cube_from_normalised


class _TruncExp(torch.autograd.Function):
    """exp with its gradient clamped (instant-ngp): density can grow fast without exploding."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(-15, 15))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    return _TruncExp.apply(x.float())


def spherical_harmonics_deg2(d: torch.Tensor) -> torch.Tensor:
    """Real SH basis up to degree 2 (9 values) of unit directions (..., 3)."""
    x, y, z = d.unbind(-1)
    return torch.stack([
        torch.full_like(x, 0.28209479177387814),
        -0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x,
        1.0925484305920792 * x * y, -1.0925484305920792 * y * z, 0.94617469575755997 * z * z - 0.31539156525251999,
        -1.0925484305920792 * x * z, 0.54627421529603959 * (x * x - y * y),
    ], -1)


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            # In place: a Linear's backward needs its inputs, not its output, and a fresh (N, hidden)
            # tensor is a pass through memory.
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def proposal_grid(levels: int, finest_resolution: int, log2_hashmap_size: int) -> dict:
    """tcnn-style dict of the proposal field's hash grid (base resolution 16, 1 feature per level)."""
    scale = math.exp((math.log(finest_resolution) - math.log(16)) / max(1, levels - 1))
    return {"otype": "HashGrid", "n_levels": levels, "n_features_per_level": 1, "log2_hashmap_size": log2_hashmap_size,
            "base_resolution": 16, "per_level_scale": scale}


class ProposalField(nn.Module):
    """Density only, per scene radius, from normalised points (N, 3) -> (N,)."""

    LOGIT_OFFSET = 1.0  # the initial density, about one e-folding per radius (see Decoder.code_density)

    def __init__(self, grid: dict, hidden: int = 16, backend: str = "auto"):
        super().__init__()
        self.hashgrid = HashGridEncoding(3, grid, backend=backend)
        self.mlp = nn.Sequential(nn.Linear(self.hashgrid.n_output_dims, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        # One C++ kernel on CPU (nrc.field_cpu); False: the torch modules, its reference. Not
        # the scene encoder's: its table (~10 MB) does not stay in cache when every point visits
        # every level, and the kernel ran 2.5x slower than the level-by-level hash grid + MLP.
        self.fused = True

    def forward(self, x_normalised: torch.Tensor) -> torch.Tensor:
        if self.fused and field_cpu.fused_available(self.hashgrid, self.mlp, x_normalised):
            return field_cpu.fused_field(self.hashgrid, self.mlp, x_normalised, density_offset=self.LOGIT_OFFSET)
        h = self.hashgrid(unit_cube_from_normalised(x_normalised).float())
        return trunc_exp(self.mlp(h).squeeze(-1) + self.LOGIT_OFFSET)


class SceneEncoder(nn.Module):
    """Hash-grid features of one scene, and where the scene sits in the world."""

    def __init__(self, frame: SceneFrame, model: ModelConfig, sampler: SamplerConfig, backend: str = "auto"):
        super().__init__()
        self.hashgrid = HashGridEncoding(3, model.hashgrid.tcnn(), backend=backend)
        self.code_inputs = (model.code_levels or model.hashgrid.n_levels) * model.hashgrid.n_features_per_level
        self.mlp = _mlp([self.code_inputs, model.feature_hidden, model.code_dim])
        # The variation's own view of every level, when the code sees only the coarse ones.
        self.detail_mlp = (_mlp([self.hashgrid.n_output_dims, model.feature_hidden, model.code_dim])
                           if self.code_inputs < self.hashgrid.n_output_dims else None)
        self.register_buffer("center", torch.tensor(frame.center, dtype=torch.float32))
        self.register_buffer("radius", torch.tensor(float(frame.radius)))
        self.occupancy = OccupancyGrid(sampler.occupancy_resolution)
        self.proposal = (ProposalField(proposal_grid(sampler.proposal_levels, sampler.proposal_finest_resolution,
                                                     sampler.proposal_log2_hashmap_size), sampler.proposal_hidden, backend)
                         if sampler.proposal_samples else None)
        r = float(frame.radius)
        self.near = sampler.near if frame.near is None else frame.near / r
        self.far = sampler.far if frame.far is None else frame.far / r
        self.linear_until = float(frame.linear_until)

    def ray_range(self) -> dict:
        """Keyword arguments of ``sample_along_rays`` for this scene (distances in radii)."""
        return {"near": self.near, "far": self.far, "linear_until": self.linear_until}

    def sample_spacing(self, n_samples: int) -> float:
        return s_spacing(n_samples, self.near, self.far, self.linear_until)

    def normalise(self, x_world: torch.Tensor) -> torch.Tensor:
        return (x_world - self.center) / self.radius

    def forward(self, x_normalised: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(features that pick the code, features the variation reads): one tensor twice unless
        the code sees only the coarse levels."""
        h = self.hashgrid(unit_cube_from_normalised(x_normalised).float())
        code = self.mlp(h[:, :self.code_inputs])
        return code, (code if self.detail_mlp is None else self.detail_mlp(h))


# "brightness" colour variation: a code's colour times 2^(SHADE_OCTAVES * v), v in [-1, 1]. Two
# octaves, not one: a photograph's dark and light parts are more than 4x apart, and with one octave
# the field painted them by other means (bench/nrc_objects.py --quick, objects mode K=8: textured
# family 28.33 dB with one octave, 30.48 with two, FG-ARI 0.08 and 0.29; coloured 29.32 and 29.80 dB).
SHADE_OCTAVES = 2.0


class Decoder(nn.Module):
    """Code -> density and geometry features; geometry + colour variation + view direction -> colour.

    The density MLP reads the codes, not the points: it is evaluated once per code (a (K, .)
    table) and each point takes its code's row, so density and geometry are the code's. The
    only per-point signal is the codebook's bounded variation: ``density_variation`` e-folds
    of density (one number) and ``variation_dim`` numbers into the colour MLP ("mlp") or, with
    ``colour_variation`` "brightness", one number that shades the code's own colour."""

    def __init__(self, model: ModelConfig):
        super().__init__()
        self.density_mlp = _mlp([model.code_dim, model.decoder_hidden, 1 + model.geo_dim])
        # "brightness": each code's colour is its own three logits (columns of the code table) and
        # the variation's first colour number shades it; "mlp": a colour MLP of geometry + variation.
        # Not a colour MLP of the code there: the M step then moved code vectors, and with them
        # density and assignment, to change a colour (bench/nrc_objects.py --quick --coloured, E step
        # 3e-2, before the density floor, seeds 0-2: FG-ARI 0.59/0.58/0.35 and depth error 0.8-0.9
        # with the MLP, 0.77/0.83/0.82 and 0.25-0.30 with the logits; textured, seed 0: 0.33, 0.35).
        self.shaded = model.colour_variation == "brightness"
        if self.shaded:
            self.code_rgb = nn.Parameter(torch.randn(model.n_codes, 3))
            self.color_mlp = None
        else:
            self.color_mlp = _mlp([model.geo_dim + model.variation_dim, model.color_hidden, model.color_hidden, 3])
        # View dependence is a bounded, per-code SH offset: seen from inside a room the view
        # direction tells which wall a ray hits, and a free direction input let one code paint
        # every wall (K=1 within 1 dB of K=8 with it).
        self.view_head = nn.Linear(model.geo_dim + 9, 3)
        self.geo_dim = model.geo_dim
        self.view_dependence = model.view_dependence
        self.density_variation = model.density_variation
        self.surface_density_floor = model.surface_density_floor

    @property
    def code_width(self) -> int:
        """Columns of a code's row that the colour reads: geometry features (+ 3 colour logits)."""
        return self.geo_dim + (3 if self.shaded else 0)

    def code_table(self, codes: torch.Tensor) -> torch.Tensor:
        """(K, 1 + code_width): density logit, geometry features (and colour logits) of each surface code."""
        table = self.density_mlp(codes)
        return torch.cat([table, self.code_rgb.to(table.dtype)], -1) if self.shaded else table

    def code_density(self, table: torch.Tensor) -> torch.Tensor:
        """(K,) density of each surface code from its ``code_table`` row, at least
        ``surface_density_floor``. +1: about one e-folding of opacity per scene radius at the
        start, so the first gradients reach the foreground instead of painting colour on the far
        shell."""
        return trunc_exp(table[:, 0].float() + 1.0) + self.surface_density_floor

    def density(self, assignment: Assignment, table: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma (N,), what ``color`` reads (N, code_width + variation_dim)) of points with this assignment.
        Per code, then mixed by the assignment (one-hot forward, soft gradient): the empty code
        has density 0 and no geometry."""
        surface = assignment.probs[:, :-1]
        # exp(a_k + v) = exp(a_k) exp(v): a (K,) exp and a matmul instead of an (N, K) exp, sum
        # and their backward (the variation is bounded, so trunc_exp's clamp never bites on it).
        sigma = surface.float() @ self.code_density(table)
        variation = assignment.variation
        if variation is not None:
            sigma = sigma * trunc_exp(self.density_variation * variation[:, 0].float())
        geo = surface.to(table.dtype) @ table[:, 1:]
        if variation is not None:
            geo = torch.cat([geo, variation[:, 1:].to(geo.dtype)], -1)
        return sigma, geo

    def color(self, geo: torch.Tensor, directions: torch.Tensor, rays: torch.Tensor | None = None) -> torch.Tensor:
        """Colour of points (N, 3) from their colour-MLP input ``geo`` and unit view ``directions``:
        one per point, or one per ray with ``rays`` (N,) the ray of each point, so the SH basis
        and its share of the view head are computed per ray (a ray's samples share them)."""
        width = self.code_width
        if not self.shaded or geo.shape[-1] == width:
            return self.code_colour(geo, directions, rays)
        shade = torch.exp2(SHADE_OCTAVES * geo[:, width:width + 1].float())
        return (self.code_colour(geo[:, :width], directions, rays) * shade).clamp(max=1.0)

    def code_colour(self, geo: torch.Tensor, directions: torch.Tensor, rays: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`color` before shading: with ``colour_variation`` "brightness", the one colour a
        code (``geo`` without the variation) has from these directions."""
        logit = (geo[:, self.geo_dim:self.code_width] if self.shaded else self.color_mlp(geo)).float()
        if self.view_dependence:
            # view_head(cat([geo, sh])) split into its two blocks: no (N, geo_dim + 9) concatenation.
            w, b = self.view_head.weight, self.view_head.bias
            sh = spherical_harmonics_deg2(directions).to(geo.dtype)
            sh_term = nn.functional.linear(sh, w[:, self.geo_dim:])
            if rays is not None:
                sh_term = sh_term[rays]
            view = (nn.functional.linear(geo[:, :self.geo_dim], w[:, :self.geo_dim], b) + sh_term).float()
            logit = logit + self.view_dependence * torch.tanh(view)
        return torch.sigmoid(logit)


@dataclass
class FieldOutput:
    sigma: torch.Tensor  # (N,) density per scene radius
    rgb: torch.Tensor | None  # (N, 3) in [0, 1]
    assignment: Assignment
    geo: torch.Tensor | None = None  # (N, code_width + variation_dim) what ``decoder.color`` reads


class NRCModel(nn.Module):
    def __init__(self, config: NRCConfig, backend: str = "auto"):
        super().__init__()
        if not config.scenes:
            raise ValueError("an NRC model needs at least one scene frame")
        m = config.model
        self.config = config
        self.encoders = nn.ModuleList(SceneEncoder(f, m, config.sampler, backend) for f in config.scenes)
        self.codebook = Codebook(m.n_codes, m.code_dim, m.variation_dim, m.assign_temperature)
        self.decoder = Decoder(m)
        # The codebook and the code's density as one C++ kernel on CPU (nrc.codebook_cpu); False:
        # the torch modules, its reference.
        self.fused_codebook = True

    @property
    def n_scenes(self) -> int:
        return len(self.encoders)

    def query(self, scene: int, x_normalised: torch.Tensor, directions: torch.Tensor | None) -> FieldOutput:
        """Density, colour (when ``directions`` are given) and code assignment at points."""
        features, detail = self.encoders[scene](x_normalised)
        table = self.decoder.code_table(self.codebook.codes[:-1])
        if self.fused_codebook and fused_available(self.codebook, features):
            assignment, sigma, geo = assign_and_decode(self.codebook, self.decoder.code_density(table), table[:, 1:],
                                                       self.decoder.density_variation, features, detail)
        else:
            assignment = self.codebook(features, detail)
            sigma, geo = self.decoder.density(assignment, table)
        rgb = None if directions is None else self.decoder.color(geo, directions)
        return FieldOutput(sigma, rgb, assignment, geo)

    def density(self, scene: int, x_normalised: torch.Tensor) -> torch.Tensor:
        return self.query(scene, x_normalised, None).sigma
