"""Plain PyTorch API over the C++/OpenMP CPU kernels (cpu_kernels.cpp): ``hash_grid_cpu(x, table, spec)``.

Chosen by measurement (2^16 uniform points, 16 levels x 2, T = 2^19, 2 threads, CPU time on
the shared 2-core machine): the same algorithm written with numba (``parallel=True``) took 3.1x
longer forward and 1.8x longer for the table gradient than this C++, and ``torch.compile`` of
the reference is the baseline bench/hashgrid.py reports. The kernels are built on first use
by ``nrc.native`` (g++ and ninja, cached) and called through ctypes. The source includes no
torch or Python header, so the build takes about 7 s instead of the ~1 CPU-minute that
``torch/extension.h`` costs. Threads follow ``torch.get_num_threads()``.
"""
from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from ..native import LazyLibrary, build_library
from .spec import PARAM_DTYPES, HashGridSpec, check_positions, check_table

SOURCE = Path(__file__).with_name("cpu_kernels.cpp")
HEADER = Path(__file__).with_name("grid_core.h")  # the arithmetic it shares with nrc/field_kernels.cpp

def _build() -> ctypes.CDLL:
    library = build_library("odin360_hashgrid_cpu", SOURCE, headers=(HEADER,))
    pointer, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    grid = [pointer] * 5 + [i64, i32, i32]  # scales, offsets, sizes, dense, resolutions, L, smoothstep, threads
    library.hashgrid_forward.argtypes = [pointer] * 3 + [i64, i32, i32] + grid
    library.hashgrid_backward_table.argtypes = [pointer] * 3 + [i64, i32, i32] + grid
    library.hashgrid_backward_x.argtypes = [pointer] * 4 + [i64, i32, i32] + grid
    for function in (library.hashgrid_forward, library.hashgrid_backward_table, library.hashgrid_backward_x):
        function.restype = i32
    library.hashgrid_transpose.argtypes = [pointer, pointer, i64, i64, i32, i32, i32]
    library.hashgrid_transpose.restype = None
    return library


_kernels = LazyLibrary(_build)


def _load_library():
    """The built kernels, or None (with the reason in ``_kernels.failure``) when they cannot be built."""
    return _kernels.load()


def cpu_backend_available() -> bool:
    """Builds the kernels if need be (seconds, once per machine and source version)."""
    return _load_library() is not None


def unavailable_reason() -> str | None:
    _load_library()
    return _kernels.failure


@functools.lru_cache(maxsize=32)
def _grid(spec: HashGridSpec) -> tuple:
    """The spec as arrays for the kernels (kept alive by the cache while their pointers are used)."""
    return (np.array(spec.scales, dtype=np.float64), np.array(spec.offsets, dtype=np.int64),
            np.array(spec.sizes, dtype=np.int64), np.array(spec.dense, dtype=np.uint8),
            np.array(spec.resolutions, dtype=np.int64))


def _call(function, tensors, n: int, spec: HashGridSpec, *scalars) -> None:
    arrays = _grid(spec)
    status = function(*[t.data_ptr() for t in tensors], *scalars, n, spec.n_input_dims, spec.n_features_per_level,
                      *[a.ctypes.data for a in arrays], spec.n_levels, int(spec.smoothstep),
                      torch.get_num_threads())
    if status:
        raise ValueError(f"cpu backend: unsupported D={spec.n_input_dims}, F={spec.n_features_per_level}")


def _transpose(src: torch.Tensor, spec: HashGridSpec, to_point_major: bool) -> torch.Tensor:
    """(N, L*F) point-major <-> (L, N, F) level-major, the kernels' layout for per-level tasks."""
    n = src.numel() // spec.n_output_dims
    shape = (n, spec.n_output_dims) if to_point_major else (spec.n_levels, n, spec.n_features_per_level)
    dst = torch.empty(shape, dtype=torch.float32)
    _kernels.library.hashgrid_transpose(src.data_ptr(), dst.data_ptr(), n, spec.n_levels, spec.n_features_per_level,
                                int(to_point_major), torch.get_num_threads())
    return dst


def _float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to(torch.float32).contiguous()


class _HashGridCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, table, spec: HashGridSpec):
        n, features = x.shape[0], spec.n_features_per_level
        out = torch.empty(spec.n_levels, n, features, dtype=torch.float32)  # level-major, see the kernels
        if n:
            _call(_kernels.library.hashgrid_forward, (_float32(x), _float32(table), out), n, spec)
        ctx.save_for_backward(x, table)
        ctx.spec = spec
        return _transpose(out, spec, to_point_major=True).to(table.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, table = ctx.saved_tensors
        spec = ctx.spec
        x_grad, table_grad = ctx.needs_input_grad[:2]
        n, features = x.shape[0], spec.n_features_per_level
        x32, grad32 = _float32(x), _float32(grad_out)
        grad_table = grad_x = None
        if table_grad:
            grad_table = torch.empty(spec.n_params, dtype=torch.float32)
            by_level = _transpose(grad32, spec, to_point_major=False)
            _call(_kernels.library.hashgrid_backward_table, (x32, by_level, grad_table), n, spec)
            grad_table = grad_table.to(table.dtype)
        if x_grad:
            grad_x = torch.empty(n, spec.n_input_dims, dtype=torch.float32)
            if n:
                _call(_kernels.library.hashgrid_backward_x, (x32, _float32(table), grad32, grad_x), n, spec)
            grad_x = grad_x.to(x.dtype)
        return grad_x, grad_table, None


def hash_grid_cpu(x: torch.Tensor, table: torch.Tensor, spec: HashGridSpec, check_values: bool = True) -> torch.Tensor:
    """Same contract as ``hash_grid_reference`` on CPU tensors: (N, D) positions in [0, 1] -> (N, L*F).

    Differentiable once with respect to ``table`` and ``x`` (second derivatives need the torch
    backend). Positions are read as float32 (as tcnn and the Triton kernels do); an fp16 table is
    converted to float32 for the kernels and its gradient accumulated in float32, and the output
    has the table's dtype.
    """
    check_positions(x, spec, check_values)
    check_table(table, spec)
    if table.dtype not in PARAM_DTYPES:
        raise ValueError(f"cpu backend needs a float32 or float16 table, got {table.dtype}")
    if x.device.type != "cpu" or table.device.type != "cpu":
        raise ValueError(f"cpu backend needs CPU tensors, got positions on {x.device} and the table on {table.device}")
    if _load_library() is None:
        raise ValueError(f"backend 'cpu' could not build its kernels ({_kernels.failure})")
    return _HashGridCPU.apply(x, table, spec)
