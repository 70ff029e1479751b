"""Plain PyTorch API over the fused Triton kernels: ``hash_grid_triton(x, table, spec)``."""
from __future__ import annotations

import os

import torch
import triton
from torch.autograd.function import once_differentiable

from .spec import PARAM_DTYPES, HashGridSpec, check_positions, check_table
from .triton_kernels import hash_grid_backward_kernel, hash_grid_forward_kernel

# Unmeasured starting point (one point per thread at 4 warps); bench/hashgrid.py --sweep-block
# prints the rate of each choice on a real GPU.
DEFAULT_BLOCK_POINTS = 128


def interpreting() -> bool:
    """Triton's CPU interpreter (``TRITON_INTERPRET=1``, read when triton is first imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def kernel_constants(spec: HashGridSpec) -> dict:
    """The spec as the kernels' constexpr arguments (one compiled kernel per distinct spec)."""
    return dict(D=spec.n_input_dims, L=spec.n_levels, F=spec.n_features_per_level, SMOOTHSTEP=spec.smoothstep,
                SCALES=spec.scales, OFFSETS=spec.offsets[:-1], SIZES=spec.sizes, DENSE=spec.dense,
                RESOLUTIONS=spec.resolutions)


class _HashGridTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, table, spec: HashGridSpec, block_points: int):
        n = x.shape[0]
        out = torch.empty(n, spec.n_output_dims, dtype=table.dtype, device=x.device)
        if n:
            hash_grid_forward_kernel[(triton.cdiv(n, block_points),)](
                x, table, out, n, x.stride(0), x.stride(1),
                BLOCK=block_points, enable_fp_fusion=True, **kernel_constants(spec))
        ctx.save_for_backward(x, table)
        ctx.spec, ctx.block_points = spec, block_points
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, table = ctx.saved_tensors
        spec, block_points = ctx.spec, ctx.block_points
        x_grad, table_grad = ctx.needs_input_grad[:2]
        n = x.shape[0]
        grad_table = torch.zeros(spec.n_params, dtype=torch.float32, device=x.device) if table_grad else None
        grad_x = torch.empty(n, spec.n_input_dims, dtype=torch.float32, device=x.device) if x_grad else None
        if n and (x_grad or table_grad):
            hash_grid_backward_kernel[(triton.cdiv(n, block_points),)](
                x, table, grad_out, table if grad_table is None else grad_table,
                table if grad_x is None else grad_x, n, x.stride(0), x.stride(1),
                grad_out.stride(0), grad_out.stride(1), TABLE_GRAD=table_grad, X_GRAD=x_grad,
                BLOCK=block_points, enable_fp_fusion=True, **kernel_constants(spec))
        return (None if grad_x is None else grad_x.to(x.dtype),
                None if grad_table is None else grad_table.to(table.dtype), None, None)


def hash_grid_triton(x: torch.Tensor, table: torch.Tensor, spec: HashGridSpec, check_values: bool = True,
                     block_points: int | None = None) -> torch.Tensor:
    """Same contract as ``hash_grid_reference``: (N, D) positions in [0, 1] -> (N, L*F) in the table's dtype.

    Differentiable once with respect to ``table`` and ``x`` (second derivatives need the
    torch backend). Positions may be any float dtype and non-contiguous.
    """
    check_positions(x, spec, check_values)
    check_table(table, spec)
    if table.dtype not in PARAM_DTYPES:
        raise ValueError(f"triton backend needs a float32 or float16 table, got {table.dtype}")
    if x.device != table.device:
        raise ValueError(f"positions are on {x.device} but the table is on {table.device}")
    if not (x.is_cuda or interpreting()):
        raise ValueError("triton backend needs CUDA tensors (or TRITON_INTERPRET=1 for the CPU interpreter)")
    if spec.n_params >= 2 ** 31:
        raise ValueError(f"triton backend addresses the table with int32; {spec.n_params} parameters is too many")
    block_points = DEFAULT_BLOCK_POINTS if block_points is None else block_points
    if block_points < 1 or block_points & (block_points - 1):
        raise ValueError(f"block_points must be a power of two, got {block_points}")
    return _HashGridTriton.apply(x, table.contiguous(), spec, block_points)
