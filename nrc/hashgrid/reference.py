"""Readable PyTorch hash-grid encoding: the exact reference every fast backend is tested against.

Runs on CPU and GPU, differentiable with respect to the table and the positions (including
higher orders, through autograd). See ``spec.py`` for the semantics it implements.
"""
from __future__ import annotations

import torch

from .spec import HASH_PRIMES, UINT32_MASK, HashGridSpec, check_positions, check_table


def corner_offsets(n_dims: int, device=None) -> torch.Tensor:
    """(2^D, D) int64 0/1 offsets; bit d of the corner number is the offset along axis d (tcnn's order)."""
    corners = torch.arange(1 << n_dims, device=device)
    return torch.stack([(corners >> d) & 1 for d in range(n_dims)], dim=-1)


def grid_position(x: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell (int64 holding tcnn's uint32) and fractional position of ``fma(x, scale, 0.5)``.

    For float32 inputs the product is formed in float64 (exact for two float32 factors) and
    rounded once to float32, which reproduces a fused multiply-add.
    """
    if x.dtype == torch.float64:
        pos = x * scale + 0.5
    else:
        pos = (x.double() * scale + 0.5).float()
    cell = torch.floor(pos)
    return cell.long() & UINT32_MASK, pos - cell


def interpolation_weight(frac: torch.Tensor, smoothstep: bool) -> torch.Tensor:
    return frac * frac * (3 - 2 * frac) if smoothstep else frac


def axis_terms(coords: torch.Tensor, spec: HashGridSpec, level: int) -> torch.Tensor:
    """Per-axis contributions (..., D, k) to a corner's index: ``coord * stride`` for dense
    levels (summed over axes), ``coord * prime`` for hashed ones (XOR-ed over axes).

    Both combine axis by axis, so the 2^D corners of a cell need only the 2 values per axis."""
    if spec.dense[level]:
        strides = [spec.resolutions[level] ** d for d in range(spec.n_input_dims)]
    else:
        strides = list(HASH_PRIMES[:spec.n_input_dims])
    factors = torch.tensor(strides, dtype=torch.int64, device=coords.device).view(-1, 1)
    return coords * factors


def wrap_index(index: torch.Tensor, spec: HashGridSpec, level: int) -> torch.Tensor:
    size = spec.sizes[level]
    # Only the low 32 bits matter (tcnn indexes in uint32); for a power-of-two table the modulo
    # is a mask, which also drops the high bits in one step.
    if size & (size - 1) == 0:
        return index & (size - 1)
    return (index & UINT32_MASK) % size


def hash_grid_reference(x: torch.Tensor, table: torch.Tensor, spec: HashGridSpec,
                        check_values: bool = True) -> torch.Tensor:
    """Encode positions ``x`` (N, D) in [0, 1] with the flat ``table``; returns (N, L*F).

    Gathers and sums in float32 (float64 when ``x`` is float64), so an fp16 table is read in
    half precision but accumulated - and its gradient accumulated - in float32. The output has
    the table's dtype.

    Per level and axis, the two candidate corner coordinates (cell, cell + 1) give two index
    terms and two weights (1 - w, w); a corner combines one of each per axis, picked by the
    bits of its number (tcnn's corner order).
    """
    check_positions(x, spec, check_values)
    check_table(table, spec)
    compute_dtype = torch.float64 if torch.float64 in (x.dtype, table.dtype) else torch.float32
    x = x.to(compute_dtype)
    features = table.to(compute_dtype).view(-1, spec.n_features_per_level)
    offsets = corner_offsets(spec.n_input_dims, x.device)  # (C, D)
    pick = [offsets[:, d] for d in range(spec.n_input_dims)]
    outputs = []
    for level in range(spec.n_levels):
        cell, frac = grid_position(x, spec.scales[level])
        w = interpolation_weight(frac, spec.smoothstep).to(compute_dtype)
        both = torch.stack([cell, cell + 1], dim=-1)  # (N, D, 2)
        terms = axis_terms(both, spec, level)
        factors = torch.stack([1 - w, w], dim=-1)  # (N, D, 2)
        index, weights = terms[:, 0, pick[0]], factors[:, 0, pick[0]]  # (N, C)
        for d in range(1, spec.n_input_dims):
            t = terms[:, d, pick[d]]
            index = (index + t) if spec.dense[level] else (index ^ t)
            weights = weights * factors[:, d, pick[d]]
        entries = spec.offsets[level] + wrap_index(index, spec, level)
        outputs.append(torch.bmm(weights[:, None, :], features[entries]).squeeze(1))
    return torch.cat(outputs, dim=-1).to(table.dtype)
