"""The fused CPU MLP kernel (nrc.mlp_cpu) against the torch nn.Sequential it replaces."""
from __future__ import annotations

import os
import shutil

import pytest
import torch
from torch import nn

from nrc import mlp_cpu
from nrc.field import _mlp

torch.set_num_threads(2)

# Only a machine without a C++ compiler may skip; a kernel that fails to build fails here.
pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None,
                                reason="no C++ compiler on PATH to build the CPU kernels")


def test_mlp_kernels_build():
    assert mlp_cpu._kernels.load() is not None, mlp_cpu._kernels.failure


def run(mlp, x, grad_out, fused: bool):
    mlp.zero_grad()
    x = x.detach().clone().requires_grad_(x.requires_grad)
    out = mlp_cpu.mlp_forward(mlp, x) if fused else mlp(x)
    (out * grad_out).sum().backward()
    return out.detach(), None if x.grad is None else x.grad, [p.grad.clone() for p in mlp.parameters()]


@pytest.mark.parametrize("sizes", [[16, 32, 32, 3], [24, 32, 16], [5, 7], [3, 128, 1]])
@pytest.mark.parametrize("input_grad", [True, False])
def test_fused_mlp_matches_torch(sizes, input_grad):
    torch.manual_seed(len(sizes) + sizes[0])
    mlp = _mlp(sizes)
    x = torch.randn(1001, sizes[0]).requires_grad_(input_grad)  # 1001: a partial block of 64
    assert mlp_cpu.fused_available(mlp, x)
    grad_out = torch.randn(len(x), sizes[-1])
    out, grad_x, grads = run(mlp, x, grad_out, fused=True)
    ref, ref_grad_x, ref_grads = run(mlp, x, grad_out, fused=False)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    if input_grad:
        torch.testing.assert_close(grad_x, ref_grad_x, rtol=1e-5, atol=1e-5)
    else:
        assert grad_x is None
    for got, want in zip(grads, ref_grads):
        scale = want.abs().max().clamp_min(1e-12)
        torch.testing.assert_close(got / scale, want / scale, rtol=0, atol=1e-5)


def test_fused_mlp_serves_only_what_it_can():
    mlp = _mlp([8, 16, 4])
    assert not mlp_cpu.fused_available(_mlp([8, 200, 4]), torch.zeros(2, 8))  # wider than the kernel
    assert not mlp_cpu.fused_available(nn.Sequential(nn.Linear(8, 4), nn.Tanh(), nn.Linear(4, 4)), torch.zeros(2, 8))
    assert not mlp_cpu.fused_available(mlp, torch.zeros(2, 8, dtype=torch.float64))
    assert not mlp_cpu.fused_available(mlp.double(), torch.zeros(2, 8, dtype=torch.float64))
    mlp = _mlp([8, 16, 4])
    empty = mlp_cpu.mlp_forward(mlp, torch.zeros(0, 8))
    empty.sum().backward()
    assert empty.shape == (0, 4) and all(p.grad.abs().sum() == 0 for p in mlp.parameters())


def test_fused_mlp_gives_the_same_bits_at_one_and_two_threads():
    """Gradients are summed per fixed chunk of samples, then in chunk order (a fit's byte-identical
    weights at 1 and 2 threads rest on it; tests/test_crash_safety.py)."""
    torch.manual_seed(3)
    mlp = _mlp([16, 32, 32, 3])
    x = torch.randn(5000, 16).requires_grad_()
    grad_out = torch.randn(len(x), 3)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            results.append(run(mlp, x, grad_out, fused=True))
        finally:
            torch.set_num_threads(2)
    (out1, gx1, g1), (out2, gx2, g2) = results
    assert torch.equal(out1, out2) and torch.equal(gx1, gx2)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))
