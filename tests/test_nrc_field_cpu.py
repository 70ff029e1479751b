"""The fused CPU field kernel (nrc.field_cpu) against the torch modules it replaces: the proposal
field's density and a feature field's outputs, values and every parameter's gradient."""
from __future__ import annotations

import os
import shutil

import pytest
import torch

from nrc import field_cpu
from nrc.config import HashGridConfig
from nrc.field import ProposalField, proposal_grid
from nrc.hashgrid import HashGridEncoding, cpu_backend
from nrc.sampling import unit_cube_from_normalised

torch.set_num_threads(2)

# Only a machine without a C++ compiler may skip; a kernel that fails to build fails here.
pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None,
                                reason="no C++ compiler on PATH to build the CPU kernels")


def test_field_kernels_build():
    assert cpu_backend.cpu_backend_available(), cpu_backend.unavailable_reason()
    assert field_cpu._kernels.load() is not None, field_cpu._kernels.failure


def fused_and_reference(module, x, grad_out):
    """(output, parameter gradients) with the kernel and with the torch modules."""
    results = []
    for fused in (True, False):
        module.fused = fused
        module.zero_grad()
        out = module(x)
        out = out[0] if isinstance(out, tuple) else out
        (out * grad_out).sum().backward()
        results.append((out.detach(), [p.grad.clone() for p in module.parameters() if p.grad is not None]))
    return results


def assert_gradients_close(grads, ref_grads):
    assert len(grads) == len(ref_grads) >= 5
    for got, want in zip(grads, ref_grads):
        scale = want.abs().max().clamp_min(1e-12)
        torch.testing.assert_close(got / scale, want / scale, rtol=0, atol=1e-5)


def points(n: int) -> torch.Tensor:
    """Inside and outside the unit ball (the contraction), an odd count (a partial block)."""
    x = torch.randn(n, 3) * 1.5
    x[:2] = torch.tensor([[0.0, 0.0, 0.0], [1e6, -1e6, 3.0]])
    return x


@pytest.mark.parametrize("features,levels,interpolation", [(1, 2, "Linear"), (2, 5, "Linear"), (4, 3, "Smoothstep")])
def test_fused_proposal_density_matches_its_torch_path(features, levels, interpolation):
    """The C++ proposal field (nrc.field_cpu) against the torch modules: density and every
    parameter's gradient, with dense and hashed levels, points inside and outside the unit ball."""
    torch.manual_seed(features)
    grid = dict(proposal_grid(levels, 128, 13), n_features_per_level=features, interpolation=interpolation)
    field = ProposalField(grid, hidden=12)
    spec = field.hashgrid.spec
    assert spec.dense[0] and not spec.dense[-1]
    with torch.no_grad():
        field.hashgrid.table.normal_(0, 0.5)
    x = points(3001)
    (sigma, grads), (ref_sigma, ref_grads) = fused_and_reference(field, x, torch.randn(len(x)))
    torch.testing.assert_close(sigma, ref_sigma, rtol=1e-5, atol=1e-6)
    assert_gradients_close(grads, ref_grads)


def test_fused_proposal_density_serves_only_what_it_can():
    field = ProposalField(proposal_grid(2, 64, 12))
    assert field_cpu.fused_available(field.hashgrid, field.mlp, torch.zeros(4, 3))
    assert not field_cpu.fused_available(field.hashgrid, field.mlp, torch.zeros(4, 3, requires_grad=True))
    assert not field_cpu.fused_available(field.hashgrid, field.mlp, torch.zeros(4, 3, dtype=torch.float64))
    assert not field_cpu.fused_available(ProposalField(proposal_grid(2, 64, 12), backend="torch").hashgrid,
                                            field.mlp, torch.zeros(4, 3))
    empty = field(torch.zeros(0, 3))
    empty.sum().backward()
    assert empty.shape == (0,) and field.hashgrid.table.grad.abs().sum() == 0


class FeatureField(torch.nn.Module):
    """A hash grid and an MLP giving features, the form ``fused_field`` takes without a density offset."""

    def __init__(self, grid: dict, hidden: int, outputs: int):
        super().__init__()
        self.hashgrid = HashGridEncoding(3, grid)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(self.hashgrid.n_output_dims, hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(hidden, outputs))
        self.fused = True

    def forward(self, x):
        if self.fused:
            assert field_cpu.fused_available(self.hashgrid, self.mlp, x)
            return field_cpu.fused_field(self.hashgrid, self.mlp, x)
        return self.mlp(self.hashgrid(unit_cube_from_normalised(x)))


@pytest.mark.parametrize("levels,features,log2", [(6, 2, 14), (4, 4, 12)])
def test_fused_features_match_the_torch_modules(levels, features, log2):
    torch.manual_seed(levels)
    field = FeatureField(HashGridConfig(n_levels=levels, n_features_per_level=features, log2_hashmap_size=log2,
                                        finest_resolution=256).tcnn(), hidden=32, outputs=16)
    with torch.no_grad():
        field.hashgrid.table.normal_(0, 0.3)
    x = points(2049)
    (out, grads), (ref_out, ref_grads) = fused_and_reference(field, x, torch.randn(len(x), 16))
    assert out.shape == (len(x), 16)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    assert_gradients_close(grads, ref_grads)


def test_fused_field_gives_the_same_bits_at_one_and_two_threads():
    torch.manual_seed(5)
    field = ProposalField(proposal_grid(2, 64, 12))
    x, grad_sigma = points(5000), torch.randn(5000)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            field.zero_grad()
            sigma = field(x)
            (sigma * grad_sigma).sum().backward()
            results.append((sigma.detach(), [p.grad.clone() for p in field.parameters()]))
        finally:
            torch.set_num_threads(2)
    (s1, g1), (s2, g2) = results
    assert torch.equal(s1, s2) and all(torch.equal(a, b) for a, b in zip(g1, g2))
