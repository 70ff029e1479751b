"""Fused Triton hash-grid kernels: one launch for the forward, one for the backward, all levels.

Each program owns a block of points (one or two per thread) and walks every level in a
compile-time-unrolled loop. The per-level constants of the spec (scale, offset, size, dense
flag, resolution) are constexpr tuples, so each level compiles to straight-line code: no
dense/hash branch at run time, modulo by a constant (a mask on hashed levels, whose size is a
power of two), and 2^D * L independent gathers per point for the scheduler to overlap.
The price is one compiled kernel per distinct grid config, which is cheap (there are few).

Table gradients are accumulated with relaxed fp32 atomics into an fp32 buffer (cast to the
table's dtype afterwards), the strategy tiny-cuda-nn uses; on sm_90 Triton emits one
``red.v2.f32`` per corner for F = 2. Sorted/segmented reduction and fp16x2 atomics were not
implemented: choosing between them needs GPU measurements this code has not had yet. Position gradients re-read the corner
values in the backward kernel instead of storing tcnn's (N, D, L*F) Jacobian in the forward.
"""
from __future__ import annotations

import triton
import triton.language as tl

from .spec import HASH_PRIMES

PRIME_1: tl.constexpr = tl.constexpr(HASH_PRIMES[1])
PRIME_2: tl.constexpr = tl.constexpr(HASH_PRIMES[2])


@triton.jit
def _pick(upper: tl.constexpr, lower_value, upper_value):
    if upper:
        return upper_value
    else:
        return lower_value


@triton.jit
def _load_axis(x_ptr, rows, row_ok, stride_xn, stride_xd, dim: tl.constexpr):
    return tl.load(x_ptr + rows * stride_xn + dim * stride_xd, mask=row_ok, other=0.0).to(tl.float32)


@triton.jit
def _axis(x, SCALE: tl.constexpr, SMOOTHSTEP: tl.constexpr):
    """Lower cell (uint32), interpolation weight and its derivative along one axis of one level."""
    pos = tl.fma(x, SCALE, 0.5)
    cell = tl.floor(pos)
    frac = pos - cell
    if SMOOTHSTEP:
        weight = frac * frac * (3.0 - 2.0 * frac)
        dweight = 6.0 * frac * (1.0 - frac)
    else:
        weight = frac
        dweight = frac * 0.0 + 1.0
    return cell.to(tl.int32).to(tl.uint32), weight, dweight


@triton.jit
def _entry(c0, c1, c2, D: tl.constexpr, OFFSET: tl.constexpr, SIZE: tl.constexpr, DENSE: tl.constexpr,
           RESOLUTION: tl.constexpr):
    """Flat table entry of one corner (uint32 cells), tcnn's dense or hashed index, uint32 wrap-around."""
    if DENSE:
        index = c0 + c1 * RESOLUTION
        if D == 3:
            index += c2 * (RESOLUTION * RESOLUTION)
    else:
        index = c0 ^ (c1 * PRIME_1)
        if D == 3:
            index ^= c2 * PRIME_2
    return (index % SIZE).to(tl.int32) + OFFSET


@triton.jit
def hash_grid_forward_kernel(
    x_ptr, table_ptr, out_ptr, N, stride_xn, stride_xd,
    D: tl.constexpr, L: tl.constexpr, F: tl.constexpr, SMOOTHSTEP: tl.constexpr,
    SCALES: tl.constexpr, OFFSETS: tl.constexpr, SIZES: tl.constexpr, DENSE: tl.constexpr,
    RESOLUTIONS: tl.constexpr, BLOCK: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    row_ok = rows < N
    rows = rows.to(tl.int64)
    feature = tl.arange(0, F)
    x0 = _load_axis(x_ptr, rows, row_ok, stride_xn, stride_xd, 0)
    x1 = _load_axis(x_ptr, rows, row_ok, stride_xn, stride_xd, 1)
    x2 = _load_axis(x_ptr, rows, row_ok, stride_xn, stride_xd, D - 1)  # an x1 duplicate when D == 2
    out_rows = out_ptr + rows[:, None] * (L * F) + feature[None, :]

    for level in tl.static_range(L):
        c0, w0, _ = _axis(x0, SCALES[level], SMOOTHSTEP)
        c1, w1, _ = _axis(x1, SCALES[level], SMOOTHSTEP)
        c2, w2, _ = _axis(x2, SCALES[level], SMOOTHSTEP)
        acc = tl.zeros((BLOCK, F), dtype=tl.float32)
        for corner in tl.static_range(1 << D):
            weight = _pick(corner & 1, 1.0 - w0, w0) * _pick((corner >> 1) & 1, 1.0 - w1, w1)
            if D == 3:
                weight *= _pick((corner >> 2) & 1, 1.0 - w2, w2)
            entry = _entry(_pick(corner & 1, c0, c0 + 1), _pick((corner >> 1) & 1, c1, c1 + 1),
                           _pick((corner >> 2) & 1, c2, c2 + 1), D,
                           OFFSETS[level], SIZES[level], DENSE[level], RESOLUTIONS[level])
            # No mask: rows past N read x = 0, whose corners are valid entries, and are not stored.
            values = tl.load(table_ptr + entry[:, None] * F + feature[None, :])
            acc += values.to(tl.float32) * weight[:, None]
        tl.store(out_rows + level * F, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])


@triton.jit
def hash_grid_backward_kernel(
    x_ptr, table_ptr, grad_out_ptr, grad_table_ptr, grad_x_ptr,
    N, stride_xn, stride_xd, stride_gn, stride_gf,
    D: tl.constexpr, L: tl.constexpr, F: tl.constexpr, SMOOTHSTEP: tl.constexpr,
    SCALES: tl.constexpr, OFFSETS: tl.constexpr, SIZES: tl.constexpr, DENSE: tl.constexpr,
    RESOLUTIONS: tl.constexpr, TABLE_GRAD: tl.constexpr, X_GRAD: tl.constexpr, BLOCK: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    row_ok = rows < N
    rows = rows.to(tl.int64)
    feature = tl.arange(0, F)
    x0 = _load_axis(x_ptr, rows, row_ok, stride_xn, stride_xd, 0)
    x1 = _load_axis(x_ptr, rows, row_ok, stride_xn, stride_xd, 1)
    x2 = _load_axis(x_ptr, rows, row_ok, stride_xn, stride_xd, D - 1)
    grad_rows = grad_out_ptr + rows[:, None] * stride_gn + feature[None, :] * stride_gf
    grad_x0 = tl.zeros((BLOCK,), dtype=tl.float32)
    grad_x1 = tl.zeros((BLOCK,), dtype=tl.float32)
    grad_x2 = tl.zeros((BLOCK,), dtype=tl.float32)

    for level in tl.static_range(L):
        grad_out = tl.load(grad_rows + level * F * stride_gf, mask=row_ok[:, None], other=0.0).to(tl.float32)
        c0, w0, dw0 = _axis(x0, SCALES[level], SMOOTHSTEP)
        c1, w1, dw1 = _axis(x1, SCALES[level], SMOOTHSTEP)
        c2, w2, dw2 = _axis(x2, SCALES[level], SMOOTHSTEP)
        # d(level output . grad_out) / d(weight_d), summed over the corners.
        slope0 = tl.zeros((BLOCK,), dtype=tl.float32)
        slope1 = tl.zeros((BLOCK,), dtype=tl.float32)
        slope2 = tl.zeros((BLOCK,), dtype=tl.float32)
        for corner in tl.static_range(1 << D):
            f0 = _pick(corner & 1, 1.0 - w0, w0)
            f1 = _pick((corner >> 1) & 1, 1.0 - w1, w1)
            if D == 3:
                f2 = _pick((corner >> 2) & 1, 1.0 - w2, w2)
            else:
                f2 = w0 * 0.0 + 1.0
            entry = _entry(_pick(corner & 1, c0, c0 + 1), _pick((corner >> 1) & 1, c1, c1 + 1),
                           _pick((corner >> 2) & 1, c2, c2 + 1), D,
                           OFFSETS[level], SIZES[level], DENSE[level], RESOLUTIONS[level])
            address = entry[:, None] * F + feature[None, :]
            if TABLE_GRAD:
                tl.atomic_add(grad_table_ptr + address, grad_out * (f0 * f1 * f2)[:, None],
                              mask=row_ok[:, None], sem="relaxed")
            if X_GRAD:
                grad_value = tl.sum(grad_out * tl.load(table_ptr + address).to(tl.float32), axis=1)
                slope0 += _pick(corner & 1, -grad_value, grad_value) * f1 * f2
                slope1 += _pick((corner >> 1) & 1, -grad_value, grad_value) * f0 * f2
                if D == 3:
                    slope2 += _pick((corner >> 2) & 1, -grad_value, grad_value) * f0 * f1
        if X_GRAD:
            # pos = x * scale + 0.5 and weight = w(frac(pos)), so d weight / dx = w'(frac) * scale.
            grad_x0 += slope0 * dw0 * SCALES[level]
            grad_x1 += slope1 * dw1 * SCALES[level]
            grad_x2 += slope2 * dw2 * SCALES[level]

    if X_GRAD:
        grad_x = grad_x_ptr + rows * D
        tl.store(grad_x, grad_x0, mask=row_ok)
        tl.store(grad_x + 1, grad_x1, mask=row_ok)
        if D == 3:
            tl.store(grad_x + 2, grad_x2, mask=row_ok)
