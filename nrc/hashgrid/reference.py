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


def level_index(corners: torch.Tensor, spec: HashGridSpec, level: int) -> torch.Tensor:
    """Entry (within the level) of integer corner coordinates (..., D), with uint32 wrap-around."""
    index = torch.zeros_like(corners[..., 0])
    if spec.dense[level]:
        stride = 1
        for d in range(spec.n_input_dims):
            index = (index + corners[..., d] * stride) & UINT32_MASK
            stride *= spec.resolutions[level]
        return index % spec.sizes[level]
    for d in range(spec.n_input_dims):
        index = index ^ (corners[..., d] * HASH_PRIMES[d])
    size = spec.sizes[level]
    # Only the low 32 bits matter (tcnn hashes in uint32); for a power-of-two table the modulo
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
    """
    check_positions(x, spec, check_values)
    check_table(table, spec)
    compute_dtype = torch.float64 if torch.float64 in (x.dtype, table.dtype) else torch.float32
    x = x.to(compute_dtype)
    features = table.to(compute_dtype).view(-1, spec.n_features_per_level)
    offsets = corner_offsets(spec.n_input_dims, x.device)  # (C, D)
    upper = offsets.bool()
    outputs = []
    for level in range(spec.n_levels):
        cell, frac = grid_position(x, spec.scales[level])
        w = interpolation_weight(frac, spec.smoothstep).to(compute_dtype)
        corners = cell[:, None, :] + offsets  # (N, C, D)
        weights = torch.where(upper, w[:, None, :], 1 - w[:, None, :]).prod(-1)  # (N, C)
        entries = spec.offsets[level] + level_index(corners, spec, level)
        outputs.append((features[entries] * weights[..., None]).sum(1))
    return torch.cat(outputs, dim=-1).to(table.dtype)
