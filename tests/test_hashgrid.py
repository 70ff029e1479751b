"""CPU tests of the hash-grid spec, the torch reference and the module (nrc/hashgrid)."""
import math

import numpy as np
import pytest
import torch

from nrc.hashgrid import HashGridEncoding, HashGridSpec, hash_grid_reference
from nrc.hashgrid.tcnn_backend import tcnn_available

PRIMES = (1, 2654435761, 805459861)
NGP_CONFIG = {"otype": "HashGrid", "n_levels": 16, "n_features_per_level": 2, "log2_hashmap_size": 19,
              "base_resolution": 16, "per_level_scale": math.exp((math.log(2048) - math.log(16)) / 15)}


def tiny_config(features=2, interpolation="Linear", levels=3):
    # Level resolutions 3, 6, 12: dense at first, hashed (T = 64) at the finest.
    return {"otype": "HashGrid", "n_levels": levels, "n_features_per_level": features, "log2_hashmap_size": 6,
            "base_resolution": 3, "per_level_scale": 2.0, "interpolation": interpolation}


def naive_encode(x, table, spec):
    """Point-by-point, level-by-level, corner-by-corner, in plain Python numbers."""
    n_dims, n_features = spec.n_input_dims, spec.n_features_per_level
    table = table.detach().double().tolist()
    sizes = [min(-(-r ** n_dims // 8) * 8, 2 ** spec.log2_hashmap_size) for r in spec.resolutions]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    out = np.zeros((x.shape[0], spec.n_levels * n_features))
    for n, point in enumerate(x.tolist()):
        for level, (scale, res) in enumerate(zip(spec.scales, spec.resolutions)):
            # float32 fused multiply-add, formed exactly in double and rounded once.
            pos = [float(np.float32(p * scale + 0.5)) for p in point]
            cell = [math.floor(p) for p in pos]
            frac = [p - c for p, c in zip(pos, cell)]
            if spec.interpolation == "Smoothstep":
                frac = [f * f * (3 - 2 * f) for f in frac]
            for corner in range(2 ** n_dims):
                bits = [(corner >> d) & 1 for d in range(n_dims)]
                coords = [c + b for c, b in zip(cell, bits)]
                if res ** n_dims <= sizes[level]:
                    index = sum(c * res ** d for d, c in enumerate(coords))
                else:
                    index = 0
                    for d, c in enumerate(coords):
                        index ^= (c * PRIMES[d]) & 0xFFFFFFFF
                index %= sizes[level]
                weight = math.prod(f if b else 1 - f for f, b in zip(frac, bits))
                start = (offsets[level] + index) * n_features
                for f in range(n_features):
                    out[n, level * n_features + f] += weight * table[start + f]
    return torch.from_numpy(out)


@pytest.mark.parametrize("n_dims", [2, 3])
@pytest.mark.parametrize("features,interpolation", [(1, "Linear"), (2, "Smoothstep"), (4, "Linear"), (8, "Smoothstep")])
def test_reference_matches_naive_loop(n_dims, features, interpolation):
    spec = HashGridSpec.from_config(n_dims, tiny_config(features, interpolation))
    assert spec.dense[0] and not spec.dense[-1]
    gen = torch.Generator().manual_seed(n_dims * 10 + features)
    table = torch.randn(spec.n_params, generator=gen)
    # Random points plus the corners of the cube, where the +0.5 offset makes indices wrap.
    x = torch.cat([torch.rand(40, n_dims, generator=gen), torch.tensor([[0.0] * n_dims, [1.0] * n_dims])])
    got = hash_grid_reference(x, table, spec)
    assert got.shape == (42, spec.n_output_dims) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), naive_encode(x, table, spec), rtol=1e-5, atol=1e-5)


def test_spec_follows_tcnn_formulas():
    spec = HashGridSpec.from_config(3, NGP_CONFIG)
    log2_scale = np.log2(np.float32(NGP_CONFIG["per_level_scale"]))
    for level in range(16):
        scale32 = np.exp2(np.float32(level) * log2_scale) * np.float32(16) - np.float32(1)
        assert spec.scales[level] == float(scale32)
        assert spec.resolutions[level] == math.ceil(float(scale32)) + 1
        assert spec.scales[level] == pytest.approx(16 * NGP_CONFIG["per_level_scale"] ** level - 1, rel=1e-6)
    assert spec.resolutions[0] == 16 and spec.resolutions[-1] in (2048, 2049)
    for res, size, dense in zip(spec.resolutions, spec.sizes, spec.dense):
        assert size == min(math.ceil(res ** 3 / 8) * 8, 2 ** 19)
        assert dense == (res ** 3 <= size)
    assert spec.offsets == tuple(np.concatenate([[0], np.cumsum(spec.sizes)]).tolist())
    assert spec.n_params == spec.offsets[-1] * 2 and spec.n_output_dims == 32
    # Exact powers of two: scale = base * 2^l - 1, no rounding anywhere.
    pow2 = HashGridSpec.from_config(2, {"n_levels": 4, "base_resolution": 16, "per_level_scale": 2.0})
    assert pow2.scales == (15.0, 31.0, 63.0, 127.0) and pow2.resolutions == (16, 32, 64, 128)
    # 2D level of 15^2 = 225 vertices rounds up to 232 entries (tcnn aligns each level to 8).
    odd = HashGridSpec.from_config(2, {"n_levels": 1, "base_resolution": 15})
    assert odd.resolutions == (15,) and odd.sizes == (232,) and odd.dense == (True,)


@pytest.mark.parametrize("interpolation", ["Linear", "Smoothstep"])
@pytest.mark.parametrize("n_dims", [2, 3])
def test_reference_gradcheck_float64(n_dims, interpolation):
    spec = HashGridSpec.from_config(n_dims, tiny_config(2, interpolation, levels=3))
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(64, n_dims, generator=gen, dtype=torch.float64)
    # Linear interpolation has kinks at cell faces: keep the finite differences off them.
    fracs = torch.stack([torch.frac(x * s + 0.5) for s in spec.scales])
    x = x[((fracs > 1e-3) & (fracs < 1 - 1e-3)).all(0).all(-1)][:6]
    table = torch.randn(spec.n_params, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p, t: hash_grid_reference(p, t, spec),
                                    (x.requires_grad_(), table.requires_grad_()), eps=1e-6, atol=1e-6)


def test_fp16_table_accumulates_in_fp32():
    spec = HashGridSpec.from_config(3, tiny_config(2))
    table = torch.randn(spec.n_params, generator=torch.Generator().manual_seed(0)).half().requires_grad_()
    x = torch.rand(2000, 3, generator=torch.Generator().manual_seed(1))
    out = hash_grid_reference(x, table, spec)
    assert out.dtype == torch.float16
    exact = hash_grid_reference(x, table.detach().float(), spec)
    torch.testing.assert_close(out.float(), exact, rtol=1e-3, atol=1e-3)
    out.float().sum().backward()
    # Many points share coarse-level entries: a float16 running sum would lose most of them.
    table32 = table.detach().float().requires_grad_()
    hash_grid_reference(x, table32, spec).sum().backward()
    assert table.grad.dtype == torch.float16
    torch.testing.assert_close(table.grad.float(), table32.grad, rtol=1e-3, atol=1e-3)


def test_bad_config_and_inputs_raise_one_line_value_errors():
    bad_configs = [({"n_level": 4}, "unknown"), ({"n_features_per_level": 3}, "n_features_per_level"),
                   ({"interpolation": "Cubic"}, "interpolation"), ({"otype": "Frequency"}, "otype"),
                   ({"per_level_scale": float("nan")}, "per_level_scale"), ({"n_levels": 0}, "n_levels"),
                   ({"type": "Dense"}, "hashed")]
    for config, word in bad_configs:
        with pytest.raises(ValueError, match=word):
            HashGridSpec.from_config(3, config)
    with pytest.raises(ValueError, match="n_input_dims"):
        HashGridSpec.from_config(4, {})
    enc = HashGridEncoding(3, tiny_config(2), backend="torch")
    for x, word in [(torch.rand(5, 2), "shape"), (torch.full((5, 3), float("nan")), "NaN"),
                    (torch.rand(5, 3) + 1, "range"), (torch.zeros(5, 3, dtype=torch.int64), "floating")]:
        with pytest.raises(ValueError, match=word) as info:
            enc(x)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="table"):
        hash_grid_reference(torch.rand(3, 3), torch.zeros(7), enc.spec)
    with pytest.raises(ValueError, match="backend"):
        HashGridEncoding(3, {}, backend="cuda")
    with pytest.raises(ValueError, match="dtype"):
        HashGridEncoding(3, {}, dtype=torch.bfloat16)


def test_module_layout_init_and_backends_on_cpu():
    enc = HashGridEncoding(3, tiny_config(4))
    assert list(enc.state_dict()) == ["table"] and enc.table.shape == (enc.spec.n_params,)
    assert enc.table.abs().max() <= 1e-4 and enc.table.std() > 1e-5  # tcnn's uniform(-1e-4, 1e-4)
    # auto: the C++ kernels on CPU (tests/test_hashgrid_cpu.py), the reference where they cannot be built.
    assert enc.resolved_backend(torch.device("cpu")) in ("cpu", "torch")
    x = torch.rand(10, 3, requires_grad=True)
    out = enc(x)
    assert enc.n_output_dims == 12 and out.shape == (10, 12)
    out.sum().backward()
    assert x.grad.shape == x.shape and enc.table.grad is not None
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA|triton"):
            HashGridEncoding(3, tiny_config(2), backend="triton")(torch.rand(4, 3))
    if not tcnn_available():
        with pytest.raises(ValueError, match="tinycudann"):
            HashGridEncoding(3, tiny_config(2), backend="tcnn")(torch.rand(4, 3))
