"""The fused CPU codebook kernel (nrc.codebook_cpu) against its reference, Codebook + Decoder.density."""
from __future__ import annotations

import pytest
import torch

from nrc import codebook_cpu
from nrc.codebook_cpu import assign_and_decode, fused_available
from nrc.config import SceneFrame, preset
from nrc.field import NRCModel
from nrc.native import LazyLibrary

torch.set_num_threads(2)


def model_for(n_codes: int, code_dim: int, variation_dim: int, code_levels: int | None) -> NRCModel:
    torch.manual_seed(0)
    config = preset("cpu")
    config.model.hashgrid.n_levels = 6
    config.sampler.proposal_samples = 0  # no proposal field to draw initial weights for: the same seeded codebook
    config.model.n_codes, config.model.code_dim = n_codes, code_dim
    config.model.variation_dim, config.model.code_levels = variation_dim, code_levels
    config.scenes = [SceneFrame("test", [0.0, 0.0, 0.0], 1.0)]
    return NRCModel(config)


def run(model: NRCModel, features, detail, fused: bool):
    """Outputs and every gradient of a loss that weighs each output differently."""
    book, decoder = model.codebook, model.decoder
    model.zero_grad()
    for t in (features, detail):
        if t is not None:
            t.grad = None
    table = decoder.code_table(book.codes[:-1])
    if fused:
        a, sigma, geo = assign_and_decode(book, decoder.code_density(table), table[:, 1:],
                                          decoder.density_variation, features, detail)
    else:
        a = book(features, detail)
        sigma, geo = decoder.density(a, table)
    g = torch.Generator().manual_seed(1)
    loss = ((sigma * torch.rand(sigma.shape, generator=g)).sum() + (geo * torch.randn(geo.shape, generator=g)).sum()
            + 3 * a.vq_loss[0] + 5 * a.vq_loss[1] + 7 * a.variation_cost)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    grads["features"] = features.grad.clone()
    if detail is not None and detail.grad is not None:
        grads["detail"] = detail.grad.clone()
    return a, sigma.detach(), geo.detach(), grads


@pytest.mark.parametrize("n_codes,code_dim,variation_dim,code_levels,training,closed", [
    (16, 16, 1, None, True, False),  # the presets' shape
    (16, 16, 2, 3, True, True),      # a separate detail input, a closed code and a shut gate
    (8, 8, 0, None, True, False),    # no variation module
    (5, 7, 1, None, True, True),     # a shape without its own specialisation
    (16, 16, 1, None, False, False),  # eval: no gradient through the assignment
])
def test_fused_codebook_matches_reference(n_codes, code_dim, variation_dim, code_levels, training, closed):
    model = model_for(n_codes, code_dim, variation_dim, code_levels).train(training)
    book = model.codebook
    with torch.no_grad():
        book.codes.mul_(3)
        if closed:
            book.closed[2] = True
            book.gate_logits[3] = -3.0
    x = (torch.rand(3000, 3) * 2 - 1) * 0.8
    features, detail = model.encoders[0](x)
    # A third of the points near the empty code, the rest near surface codes: both kinds of winner.
    near = torch.cat([torch.full((1000,), n_codes), torch.randint(n_codes, (2000,))])
    features = (book.codes.detach()[near] + 0.5 * torch.randn(3000, code_dim) + features.detach()).requires_grad_(True)
    detail = None if detail is None or code_levels is None else detail.detach().requires_grad_(True)
    assert fused_available(book, features)
    ref, ref_sigma, ref_geo, ref_grads = run(model, features, detail, fused=False)
    out, sigma, geo, grads = run(model, features, detail, fused=True)
    assert 0.2 < float(ref.empty.float().mean()) < 0.5
    assert torch.equal(out.index, ref.index) and torch.equal(out.empty, ref.empty)
    torch.testing.assert_close(sigma, ref_sigma, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(geo, ref_geo, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.vq_loss, ref.vq_loss.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.variation_cost, ref.variation_cost.detach(), rtol=1e-5, atol=1e-7)
    assert set(grads) == set(ref_grads)
    for name, reference in ref_grads.items():
        torch.testing.assert_close(grads[name], reference, rtol=1e-4, atol=1e-4 * float(reference.abs().max()) + 1e-7,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_model_uses_the_torch_path_where_the_kernels_cannot_serve(monkeypatch):
    model = model_for(16, 16, 1, None)
    x = torch.rand(200, 3) - 0.5
    fused = model.query(0, x, None)
    assert fused.assignment.probs is None  # the kernel's assignment carries no (N, K + 1) one-hot

    def broken_build():
        raise RuntimeError("simulated: g++ not found")

    monkeypatch.setattr(codebook_cpu, "_kernels", LazyLibrary(broken_build))
    plain = model.query(0, x, None)
    assert plain.assignment.probs is not None
    torch.testing.assert_close(plain.sigma, fused.sigma, rtol=1e-5, atol=1e-6)
    assert torch.equal(plain.assignment.index, fused.assignment.index)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast: the reference's fp32 handling
        assert not fused_available(model.codebook, torch.zeros(1, 16))


def test_fused_codebook_gives_the_same_bits_at_one_and_two_threads():
    """Per-chunk sums added in chunk order: the thread count does not change a bit (the fits'
    byte-identical weights at 1 and 2 threads rest on it)."""
    model = model_for(16, 16, 1, None)
    features = (torch.randn(20_000, 16) * 2).requires_grad_(True)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            _, sigma, geo, grads = run(model, features, None, fused=True)
        finally:
            torch.set_num_threads(2)
        results.append([sigma, geo] + [grads[name] for name in sorted(grads)])
    for one, two in zip(*results):
        assert torch.equal(one, two)
