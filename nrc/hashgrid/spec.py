"""Geometry of a multiresolution hash grid, identical to tiny-cuda-nn's ``HashGrid``.

Everything every backend needs to agree on lives here, so that a table trained by one backend
(torch, triton, tiny-cuda-nn) loads into any other.

tiny-cuda-nn semantics (``include/tiny-cuda-nn/encodings/grid.h``), reproduced exactly:

Levels
    ``scale_l = exp2(l * log2(per_level_scale)) * base_resolution - 1`` evaluated in float32
    as tcnn does, ``resolution_l = ceil(scale_l) + 1``. (Ours comes from numpy's float32 exp2;
    CUDA's exp2f may differ by an ulp, which would only matter for a scale within an ulp of an
    integer.)
    ``per_level_scale`` is given directly; the usual choice for a finest resolution R is
    ``exp((ln R - ln base_resolution) / (n_levels - 1))``.
Positions
    ``pos = fma(x, scale_l, 0.5)`` in float32 (the +0.5 staggers the levels so that their
    vertices never align), ``cell = uint32(floor(pos))``, ``frac = pos - floor(pos)``.
    The 2^D corners ``cell + {0,1}^D`` are weighted by products of ``w`` or ``1 - w`` per axis,
    with ``w = frac`` (Linear) or ``w = frac^2 (3 - 2 frac)`` (Smoothstep, derivative
    ``6 frac (1 - frac)``). At x = 1 a corner may sit one past the grid; tcnn lets it wrap
    (the ``% size`` below) and so do we.
Table layout
    Level l owns ``size_l = min(next_multiple_of_8(resolution_l^D), 2^log2_hashmap_size)``
    entries starting at entry ``offset_l = sum(size_k for k < l)``; every entry holds the
    level's F features contiguously, so the whole table is one flat vector of
    ``offsets[-1] * F`` values and feature f of entry i of level l sits at
    ``(offset_l + i) * F + f``.
Indexing (uint32 arithmetic, wrapping)
    Dense when ``resolution_l^D <= size_l``: ``i = c_0 + c_1 r + c_2 r^2``.
    Hashed otherwise: ``i = c_0 * 1 ^ c_1 * 2654435761 ^ c_2 * 805459861`` (the "coherent"
    primes: 1 on the first axis keeps neighbours along x in neighbouring entries).
    Either way the entry is ``i % size_l``.
Initialisation
    Uniform in [-1e-4, 1e-4], as tcnn.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

HASH_PRIMES = (1, 2654435761, 805459861)
UINT32_MASK = 0xFFFFFFFF
INTERPOLATIONS = ("Linear", "Smoothstep")
SUPPORTED_FEATURES_PER_LEVEL = (1, 2, 4, 8)
PARAM_DTYPES = (torch.float32, torch.float16)
INIT_RANGE = 1e-4

_DEFAULTS = {
    "otype": "HashGrid",
    "n_levels": 16,
    "n_features_per_level": 2,
    "log2_hashmap_size": 19,
    "base_resolution": 16,
    "per_level_scale": 2.0,
    "interpolation": "Linear",
}
# "type" is tcnn's grid-type switch; only the hashed grid is implemented here.
_ALLOWED_KEYS = set(_DEFAULTS) | {"type"}


def _next_multiple(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def level_scale(level: int, base_resolution: int, per_level_scale: float) -> float:
    """tcnn's float32 ``exp2f(l * log2(b)) * base - 1`` (returned as the exact float32 value)."""
    log2_scale = np.log2(np.float32(per_level_scale))
    scale = np.exp2(np.float32(level) * log2_scale) * np.float32(base_resolution) - np.float32(1.0)
    return float(np.float32(scale))


@dataclass(frozen=True)
class HashGridSpec:
    """Per-level constants of one grid; hashable, so kernels and caches can key on it."""

    n_input_dims: int
    n_levels: int
    n_features_per_level: int
    log2_hashmap_size: int
    base_resolution: int
    per_level_scale: float
    interpolation: str
    scales: tuple[float, ...]
    resolutions: tuple[int, ...]
    offsets: tuple[int, ...]  # n_levels + 1 entry offsets; offsets[-1] entries in all
    sizes: tuple[int, ...]
    dense: tuple[bool, ...]

    @classmethod
    def from_config(cls, n_input_dims: int, config: dict) -> "HashGridSpec":
        if not isinstance(config, dict):
            raise ValueError(f"hash grid config must be a dict, got {type(config).__name__}")
        unknown = sorted(set(config) - _ALLOWED_KEYS)
        if unknown:
            raise ValueError(f"unknown hash grid config key(s) {unknown}; allowed: {sorted(_ALLOWED_KEYS)}")
        cfg = {**_DEFAULTS, **config}
        if cfg["otype"] not in ("HashGrid", "Grid"):
            raise ValueError(f"config otype must be 'HashGrid', got {cfg['otype']!r}")
        if cfg.get("type", "Hash") != "Hash":
            raise ValueError(f"only the hashed grid is implemented, got type={cfg['type']!r}")
        if n_input_dims not in (2, 3):
            raise ValueError(f"n_input_dims must be 2 or 3, got {n_input_dims}")
        n_levels = _positive_int(cfg, "n_levels")
        n_features = _positive_int(cfg, "n_features_per_level")
        log2_size = _positive_int(cfg, "log2_hashmap_size")
        base = _positive_int(cfg, "base_resolution")
        if n_features not in SUPPORTED_FEATURES_PER_LEVEL:
            raise ValueError(f"n_features_per_level must be one of {SUPPORTED_FEATURES_PER_LEVEL}, got {n_features}")
        if n_levels > 32:
            raise ValueError(f"n_levels must be at most 32 (tcnn's limit), got {n_levels}")
        if log2_size > 30:
            raise ValueError(f"log2_hashmap_size must be at most 30, got {log2_size}")
        per_level_scale = cfg["per_level_scale"]
        if isinstance(per_level_scale, bool) or not isinstance(per_level_scale, (int, float)) \
                or not math.isfinite(per_level_scale) or per_level_scale < 1.0:
            raise ValueError(f"per_level_scale must be a finite number >= 1, got {per_level_scale!r}")
        if cfg["interpolation"] not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {cfg['interpolation']!r}")

        table_size = 1 << log2_size
        scales, resolutions, offsets, sizes, dense = [], [], [0], [], []
        for level in range(n_levels):
            scale = level_scale(level, base, per_level_scale)
            resolution = int(math.ceil(scale)) + 1
            dense_size = resolution ** n_input_dims
            size = min(_next_multiple(dense_size, 8), table_size)
            scales.append(scale)
            resolutions.append(resolution)
            sizes.append(size)
            dense.append(dense_size <= size)
            offsets.append(offsets[-1] + size)
        return cls(n_input_dims, n_levels, n_features, log2_size, base, float(per_level_scale),
                   cfg["interpolation"], tuple(scales), tuple(resolutions), tuple(offsets),
                   tuple(sizes), tuple(dense))

    @property
    def n_entries(self) -> int:
        return self.offsets[-1]

    @property
    def n_params(self) -> int:
        return self.offsets[-1] * self.n_features_per_level

    @property
    def n_output_dims(self) -> int:
        return self.n_levels * self.n_features_per_level

    @property
    def smoothstep(self) -> bool:
        return self.interpolation == "Smoothstep"

    def to_config(self) -> dict:
        """The tcnn config dict this spec was built from (defaults filled in)."""
        return {"otype": "HashGrid", "n_levels": self.n_levels,
                "n_features_per_level": self.n_features_per_level,
                "log2_hashmap_size": self.log2_hashmap_size, "base_resolution": self.base_resolution,
                "per_level_scale": self.per_level_scale, "interpolation": self.interpolation}


def _positive_int(cfg: dict, key: str) -> int:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"config {key} must be a positive integer, got {value!r}")
    return value


def init_table(table: torch.Tensor) -> torch.Tensor:
    """tcnn's initialisation, in place: uniform in [-1e-4, 1e-4]."""
    with torch.no_grad():
        return table.uniform_(-INIT_RANGE, INIT_RANGE)


def check_table(table: torch.Tensor, spec: HashGridSpec) -> None:
    if not isinstance(table, torch.Tensor) or table.shape != (spec.n_params,):
        shape = tuple(table.shape) if isinstance(table, torch.Tensor) else type(table).__name__
        raise ValueError(f"table must be a flat tensor of {spec.n_params} parameters, got {shape}")
    if not table.is_floating_point():
        raise ValueError(f"table must be floating point, got {table.dtype}")


def check_positions(x: torch.Tensor, spec: HashGridSpec, check_values: bool = True) -> None:
    """Shape and dtype always; NaNs and range only when ``check_values`` (costs a device sync)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != spec.n_input_dims:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"positions must have shape (N, {spec.n_input_dims}), got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"positions must be floating point, got {x.dtype}")
    if check_values and x.numel() and bool(((x < 0) | (x > 1) | x.isnan()).any()):
        raise ValueError("positions must lie in [0, 1] (found NaN or out-of-range values)")
