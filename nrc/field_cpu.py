"""A hash-grid field fused into one CPU kernel (field_kernels.cpp): contraction, hash grid and a
Linear-ReLU-Linear MLP, ``fused_field(hashgrid, mlp, x_normalised, density_offset=None)``.

A density field (one output: ``trunc_exp(output + density_offset)``, (N,)) such as the proposal
field, or features (no offset: the MLP's outputs, (N, M)). Same contract as the torch modules,
the reference in the tests, for float32 CPU tensors and points that need no gradient (ray
samples never do). On the cpu preset's 24k proposal samples a step the torch path makes ~15
passes over (N, 16)-sized tensors each way (contraction, the hash grid's layout changes, the
matrix products, ReLU, exp); the kernel reads each point once forward and once backward,
recomputing the features instead of storing them. Every point visits every level, so it suits
tables that stay in cache (the proposal's 0.3 MB, not the radiance field's 10 MB).
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .hashgrid import HashGridEncoding, cpu_backend
from .native import LazyLibrary, build_library

SOURCE = Path(__file__).with_name("field_kernels.cpp")
MAX_INPUTS, MAX_HIDDEN, MAX_OUTPUTS = 64, 128, 64  # the kernel's per-block arrays


def _build() -> ctypes.CDLL:
    # No trapping math (results unchanged): lets GCC vectorise the selects over a block's lanes.
    library = build_library("odin360_field_cpu", SOURCE, ("-fno-trapping-math",), headers=(cpu_backend.HEADER,))
    p, i64, i32, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_float
    grid = [p] * 5 + [i64, i32, i32]  # scales, offsets, sizes, dense, resolutions, L, smoothstep, threads
    library.field_forward.argtypes = [p] * 7 + [i64, i64, i32, f32, i64, i32, i32] + grid
    library.field_backward.argtypes = [p] * 14 + [i64, i64, i32, f32, i64, i32, i32] + grid
    library.field_forward.restype = library.field_backward.restype = i32
    return library


_kernels = LazyLibrary(_build)


def fused_available(hashgrid: HashGridEncoding, mlp: nn.Sequential, x: torch.Tensor) -> bool:
    """Whether ``fused_field`` serves this field and these points: a 3-D grid on the CPU backend,
    ``mlp`` exactly Linear-ReLU-Linear within the kernel's widths, float32 CPU tensors, points
    without gradient, no autocast, kernels built."""
    if not (len(mlp) == 3 and isinstance(mlp[0], nn.Linear) and isinstance(mlp[1], nn.ReLU)
            and isinstance(mlp[2], nn.Linear)):
        return False
    first, last = mlp[0], mlp[2]
    params = (hashgrid.table, first.weight, first.bias, last.weight, last.bias)
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad and x.dim() == 2
            and x.shape[1] == 3 and not torch.is_autocast_enabled("cpu")
            and all(p.dtype == torch.float32 and p.device.type == "cpu" for p in params)
            and hashgrid.n_input_dims == 3 and hashgrid.spec.n_features_per_level in (1, 2, 4, 8)
            and first.in_features == hashgrid.n_output_dims <= MAX_INPUTS and first.out_features <= MAX_HIDDEN
            and last.out_features <= MAX_OUTPUTS
            and hashgrid.resolved_backend(x.device) == "cpu" and _kernels.load() is not None)


class _FusedField(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, table, w1, b1, w2, b2, spec, density_offset):
        x, w1, w2 = x.contiguous(), w1.contiguous(), w2.contiguous()
        n, outputs = len(x), w2.shape[0]
        density = density_offset is not None
        out = torch.empty(n) if density else torch.empty(n, outputs)
        scalars = (w1.shape[0], outputs, int(density), float(density_offset or 0.0))
        if n:
            cpu_backend._call(_kernels.library.field_forward, (x, table, w1, b1, w2, b2, out), n, spec, *scalars)
        ctx.save_for_backward(x, table, w1, b1, w2, b2)
        ctx.constants = (spec, scalars)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, table, w1, b1, w2, b2 = ctx.saved_tensors
        spec, scalars = ctx.constants
        n = len(x)
        grads = [torch.empty_like(t) for t in (table, w1, b1, w2, b2)]
        if n == 0:
            return (None, *(g.zero_() for g in grads), None, None)
        scratch_u = torch.empty(n, 3)
        scratch_h = torch.empty(spec.n_levels, n, spec.n_features_per_level)
        cpu_backend._call(_kernels.library.field_backward,
                          (x, table, w1, b1, w2, b2, grad_out.float().contiguous(), *grads, scratch_u, scratch_h),
                          n, spec, *scalars)
        return (None, *grads, None, None)


def fused_field(hashgrid: HashGridEncoding, mlp: nn.Sequential, x_normalised: torch.Tensor,
                density_offset: float | None = None) -> torch.Tensor:
    """``mlp(hashgrid(unit_cube_from_normalised(x)))`` (N, M), or with ``density_offset`` the
    density ``trunc_exp(that + offset)`` (N,) of a one-output MLP. Check ``fused_available`` first."""
    first, last = mlp[0], mlp[2]
    if density_offset is not None and last.out_features != 1:
        raise ValueError(f"a density field has one output, this MLP has {last.out_features}")
    return _FusedField.apply(x_normalised, hashgrid.table, first.weight, first.bias, last.weight, last.bias,
                             hashgrid.spec, None if density_offset is None else float(density_offset))
