"""The C++ CPU hash-grid backend against the torch reference (the oracle), and backend interchange."""
import os
import shutil

import pytest
import torch

from nrc.hashgrid import HashGridEncoding, HashGridSpec, hash_grid_cpu, hash_grid_reference
from nrc.hashgrid import cpu_backend
from nrc.native import LazyLibrary

# Only a machine without a C++ compiler may skip; a kernel that fails to build fails here.
pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None,
                                reason="no C++ compiler on PATH to build the CPU kernels")


def test_kernels_build():
    assert cpu_backend.cpu_backend_available(), cpu_backend.unavailable_reason()


def small_config(features, interpolation="Linear"):
    # Resolutions 3, 6, 12, 24: dense at first, hashed (T = 2^7) from the third level on in 3D.
    return {"otype": "HashGrid", "n_levels": 4, "n_features_per_level": features, "log2_hashmap_size": 7,
            "base_resolution": 3, "per_level_scale": 2.0, "interpolation": interpolation}


def encode_and_grads(encode, x, table, spec, grad_out):
    x = x.detach().clone().requires_grad_()
    table = table.detach().clone().requires_grad_()
    out = encode(x, table, spec)
    grad_x, grad_table = torch.autograd.grad(out, [x, table], grad_out.to(out.dtype))
    return out, grad_x, grad_table


def assert_close_scaled(got, want, tolerance):
    """Equal up to ``tolerance`` times the largest magnitude of ``want``."""
    assert got.dtype == want.dtype and got.shape == want.shape
    scale = want.float().abs().max().clamp_min(1e-12)
    torch.testing.assert_close(got.float() / scale, want.float() / scale, atol=tolerance, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("interpolation", ["Linear", "Smoothstep"])
@pytest.mark.parametrize("features", [1, 2, 4, 8])
@pytest.mark.parametrize("n_dims", [2, 3])
def test_cpu_backend_matches_reference(n_dims, features, interpolation, dtype):
    spec = HashGridSpec.from_config(n_dims, small_config(features, interpolation))
    assert spec.dense[0] and not spec.dense[-1]
    gen = torch.Generator().manual_seed(100 * n_dims + features)
    table = torch.randn(spec.n_params, generator=gen).to(dtype)
    # Strided positions, with the cube's corners (where corner indices wrap around the table).
    x = torch.rand(300, n_dims + 2, generator=gen)[:, 1:n_dims + 1]
    x[:2] = torch.tensor([[0.0] * n_dims, [1.0] * n_dims])
    assert not x.is_contiguous()
    grad_out = torch.randn(300, spec.n_output_dims, generator=gen)
    out, grad_x, grad_table = encode_and_grads(hash_grid_cpu, x, table, spec, grad_out)
    ref, ref_grad_x, ref_grad_table = encode_and_grads(hash_grid_reference, x, table, spec, grad_out)
    assert out.dtype == ref.dtype == dtype
    # fp16 outputs are the same float32 sums rounded to half: allow one half ulp at |value| ~ 4.
    torch.testing.assert_close(out.float(), ref.float(), atol=1e-5 if dtype == torch.float32 else 4e-3, rtol=0)
    assert_close_scaled(grad_table, ref_grad_table, 1e-5 if dtype == torch.float32 else 1e-3)
    assert_close_scaled(grad_x, ref_grad_x, 1e-5)


def test_cpu_backend_standard_grid_coherent_points_and_edge_cases():
    # The bench's 16-level config at a smaller T: dense and hashed levels, many points per entry.
    spec = HashGridSpec.from_config(3, {"n_levels": 16, "log2_hashmap_size": 12, "base_resolution": 16,
                                        "per_level_scale": 1.38})
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(spec.n_params, generator=gen)
    origins = torch.rand(40, 1, 3, generator=gen) * 0.4 + 0.3
    directions = torch.nn.functional.normalize(torch.randn(40, 1, 3, generator=gen), dim=-1)
    x = (origins + torch.linspace(-0.3, 0.3, 64)[None, :, None] * directions).reshape(-1, 3).clamp(0, 1)
    grad_out = torch.randn(x.shape[0], spec.n_output_dims, generator=gen)
    got = encode_and_grads(hash_grid_cpu, x, table, spec, grad_out)
    want = encode_and_grads(hash_grid_reference, x, table, spec, grad_out)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=0)
    assert_close_scaled(got[1], want[1], 1e-5)
    assert_close_scaled(got[2], want[2], 1e-5)
    # float64 positions are read as float32 (like tcnn); their gradient comes back as float64.
    x64 = x[:50].double().requires_grad_()
    hash_grid_cpu(x64, table, spec).sum().backward()
    assert x64.grad.dtype == torch.float64
    assert hash_grid_cpu(torch.rand(0, 3), table, spec).shape == (0, spec.n_output_dims)
    with pytest.raises(ValueError, match="range"):
        hash_grid_cpu(torch.rand(4, 3) + 1, table, spec)


def test_auto_picks_cpu_backend_on_cpu():
    enc = HashGridEncoding(3, small_config(2))
    assert enc.resolved_backend(torch.device("cpu")) == "cpu"
    x = torch.rand(64, 3)
    torch.testing.assert_close(enc(x), hash_grid_reference(x, enc.table, enc.spec), atol=1e-5, rtol=0)


def test_auto_falls_back_to_reference_with_one_warning(monkeypatch):
    from nrc.hashgrid import encoding

    def broken_build():
        raise RuntimeError("Error building extension 'odin360_hashgrid_cpu'\nsimulated: g++ not found")

    monkeypatch.setattr(encoding, "_warned_no_cpu_backend", False)
    monkeypatch.setattr(cpu_backend, "_kernels", LazyLibrary(broken_build))
    enc = HashGridEncoding(3, small_config(2))
    x = torch.rand(32, 3)
    with pytest.warns(RuntimeWarning, match="g[+][+] not found") as record:
        out = enc(x)
        enc(x)
    assert len(record) == 1 and enc.resolved_backend(torch.device("cpu")) == "torch"
    torch.testing.assert_close(out, hash_grid_reference(x, enc.table, enc.spec))
    with pytest.raises(ValueError, match="could not build"):
        HashGridEncoding(3, small_config(2), backend="cpu")


def fit(model, steps, seed=0):
    """A few Adam steps of a tiny image fit (colour of a smooth 2D pattern); returns the losses."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        x = torch.rand(256, 2, generator=gen)
        target = torch.stack([torch.sin(6 * x[:, 0]), torch.cos(5 * x[:, 1]), x.prod(1)], -1)
        loss = (model(x) - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def make_model(backend):
    torch.manual_seed(0)
    config = {"n_levels": 6, "n_features_per_level": 2, "log2_hashmap_size": 10, "base_resolution": 4,
              "per_level_scale": 1.6}
    encoding = HashGridEncoding(2, config, backend=backend)
    return torch.nn.Sequential(encoding, torch.nn.Linear(encoding.n_output_dims, 3))


@pytest.mark.parametrize("trained_with,loaded_with", [("cpu", "torch"), ("torch", "cpu")])
def test_model_fitted_with_one_backend_renders_with_another(tmp_path, trained_with, loaded_with):
    model = make_model(trained_with)
    losses = fit(model, 20)
    assert losses[-1] < 0.5 * losses[0]
    torch.save(model.state_dict(), tmp_path / "model.pt")
    loaded = make_model(loaded_with)
    loaded.load_state_dict(torch.load(tmp_path / "model.pt"))
    x = torch.rand(1000, 2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=0)
    # Training is the same computation in both backends: same losses from the same start.
    other = make_model(loaded_with)
    torch.testing.assert_close(torch.tensor(fit(other, 20)), torch.tensor(losses), atol=1e-4, rtol=1e-3)
