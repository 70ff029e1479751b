"""The proposal field's density fused into one CPU kernel (nrc/hashgrid/cpu_kernels.cpp):
``proposal_density(hashgrid, mlp, x_normalised, logit_offset)``.

Same contract as ``ProposalField``'s torch path (contraction, hash grid, Linear-ReLU-Linear,
``trunc_exp(logit + offset)``), its reference in the tests, for float32 CPU tensors and points
that need no gradient (the proposal's samples never do). On the cpu preset's 24k proposal
samples a step the torch path runs ~15 passes over (N, 16)-sized tensors each way; the kernel
reads each point once forward and once backward, recomputing the features instead of storing them.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .hashgrid import HashGridEncoding
from .hashgrid import cpu_backend

MAX_INPUTS = 64  # the kernel's per-point arrays: L * F hash features, hidden units
MAX_HIDDEN = 128


def fused_available(hashgrid: HashGridEncoding, mlp: nn.Sequential, x: torch.Tensor) -> bool:
    """Whether ``proposal_density`` serves this field and these points."""
    first, last = mlp[0], mlp[-1]
    params = (hashgrid.table, first.weight, first.bias, last.weight, last.bias)
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad and x.dim() == 2
            and x.shape[1] == 3 and not torch.is_autocast_enabled("cpu")
            and all(p.dtype == torch.float32 and p.device.type == "cpu" for p in params)
            and len(mlp) == 3 and isinstance(mlp[1], nn.ReLU) and last.out_features == 1
            and hashgrid.n_input_dims == 3 and hashgrid.spec.n_features_per_level in (1, 2, 4, 8)
            and hashgrid.n_output_dims <= MAX_INPUTS and first.out_features <= MAX_HIDDEN
            and hashgrid.resolved_backend(x.device) == "cpu")


class _ProposalDensity(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, table, w1, b1, w2, b2, spec, logit_offset):
        x, w1, w2 = x.contiguous(), w1.contiguous(), w2.contiguous()
        n = len(x)
        sigma = torch.empty(n)
        if n:
            cpu_backend._call(cpu_backend._kernels.library.proposal_density_forward, (x, table, w1, b1, w2, b2, sigma),
                              n, spec, w1.shape[0], logit_offset)
        ctx.save_for_backward(x, table, w1, b1, w2, b2)
        ctx.constants = (spec, logit_offset)
        return sigma

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_sigma):
        x, table, w1, b1, w2, b2 = ctx.saved_tensors
        spec, logit_offset = ctx.constants
        n = len(x)
        grads = [torch.empty_like(t) for t in (table, w1, b1, w2, b2)]
        if n == 0:
            return (None, *(g.zero_() for g in grads), None, None)
        scratch_u = torch.empty(n, 3)
        scratch_h = torch.empty(spec.n_levels, n, spec.n_features_per_level)
        cpu_backend._call(cpu_backend._kernels.library.proposal_density_backward,
                          (x, table, w1, b1, w2, b2, grad_sigma.float().contiguous(), *grads, scratch_u, scratch_h),
                          n, spec, w1.shape[0], logit_offset)
        return (None, *grads, None, None)


def proposal_density(hashgrid: HashGridEncoding, mlp: nn.Sequential, x_normalised: torch.Tensor,
                     logit_offset: float) -> torch.Tensor:
    """Density (N,) of normalised points (N, 3); see the module docstring. Check ``fused_available`` first."""
    first, last = mlp[0], mlp[-1]
    return _ProposalDensity.apply(x_normalised, hashgrid.table, first.weight, first.bias, last.weight, last.bias,
                                  hashgrid.spec, float(logit_offset))
