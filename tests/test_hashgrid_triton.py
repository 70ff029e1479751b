"""Triton hash-grid kernels: CPU interpreter and sm_90 compilation checks, and GPU checks.

The interpreter must be switched on before triton is first imported, so those checks run in a
child process (``TRITON_INTERPRET=1``) that calls ``interpreter_checks`` below.
"""
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from nrc.hashgrid import HashGridEncoding, HashGridSpec, hash_grid_reference
from nrc.hashgrid.tcnn_backend import tcnn_available

triton = pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]
NGP_SCALE = math.exp((math.log(2048) - math.log(16)) / 15)


def small_config(features, interpolation="Linear", levels=3, log2_size=6):
    return {"otype": "HashGrid", "n_levels": levels, "n_features_per_level": features,
            "log2_hashmap_size": log2_size, "base_resolution": 3, "per_level_scale": 2.0,
            "interpolation": interpolation}


def ray_points(n, n_dims, generator, samples_per_ray=64):
    """Spatially coherent positions: consecutive samples along straight rays through the cube."""
    n_rays = -(-n // samples_per_ray)
    origins = torch.rand(n_rays, 1, n_dims, generator=generator) * 0.2 + 0.4
    directions = torch.nn.functional.normalize(torch.randn(n_rays, 1, n_dims, generator=generator), dim=-1)
    t = torch.linspace(-0.35, 0.35, samples_per_ray)[None, :, None]
    return (origins + t * directions).reshape(-1, n_dims)[:n].clamp(0, 1)


def compare_with_reference(spec, x, table, atol_forward, rtol_grad, wrt=("x", "table")):
    """Forward, and gradients with respect to ``wrt``, of triton vs the reference."""
    from nrc.hashgrid.triton_backend import hash_grid_triton

    grads = {}
    for name, encode in (("triton", hash_grid_triton), ("reference", hash_grid_reference)):
        inputs = {"x": x.detach().clone().requires_grad_("x" in wrt),
                  "table": table.detach().clone().requires_grad_("table" in wrt)}
        out = encode(inputs["x"], inputs["table"], spec)
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(5)).to(out)
        grads[name] = (out, torch.autograd.grad(out, [inputs[k] for k in wrt], grad_out))
    (out, got), (ref, want) = grads["triton"], grads["reference"]
    assert out.dtype == ref.dtype and out.shape == ref.shape
    torch.testing.assert_close(out.float(), ref.float(), atol=atol_forward, rtol=0)
    for got_grad, want_grad in zip(got, want):
        assert got_grad.dtype == want_grad.dtype
        scale = want_grad.float().abs().max().clamp_min(1e-12)
        torch.testing.assert_close(got_grad.float() / scale, want_grad.float() / scale, atol=rtol_grad, rtol=0)


def interpreter_checks():
    """Run in a TRITON_INTERPRET=1 child: every D, F, interpolation, both dtypes, odd N, strided x."""
    from nrc.hashgrid.triton_backend import hash_grid_triton

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    cases = [(2, 1, "Linear", torch.float32), (2, 4, "Smoothstep", torch.float16), (2, 8, "Linear", torch.float32),
             (3, 1, "Smoothstep", torch.float32), (3, 2, "Linear", torch.float32), (3, 2, "Smoothstep", torch.float16),
             (3, 4, "Linear", torch.float16), (3, 8, "Smoothstep", torch.float32)]
    for n_dims, features, interpolation, dtype in cases:
        spec = HashGridSpec.from_config(n_dims, small_config(features, interpolation))
        assert spec.dense[0] and not spec.dense[-1]
        table = torch.randn(spec.n_params, generator=gen).to(dtype)
        # 150 points: a ragged last block, with the cube's corners where indices wrap around.
        x = torch.rand(150, n_dims + 2, generator=gen)[:, 1:n_dims + 1]
        x[:2] = torch.tensor([[0.0] * n_dims, [1.0] * n_dims])
        assert not x.is_contiguous()
        atol = 1e-5 if dtype == torch.float32 else 2e-3
        compare_with_reference(spec, x, table, atol, 1e-5 if dtype == torch.float32 else 2e-3)
    # One gradient at a time, on coherent input with heavy reuse of entries, and an empty batch.
    spec = HashGridSpec.from_config(3, small_config(2))
    table = torch.randn(spec.n_params, generator=gen)
    compare_with_reference(spec, ray_points(200, 3, gen), table, 1e-5, 1e-5, wrt=("table",))
    compare_with_reference(spec, ray_points(100, 3, gen).double(), table, 1e-5, 1e-5, wrt=("x",))
    assert hash_grid_triton(torch.rand(0, 3), table, spec).shape == (0, 6)
    print("interpreter checks passed")


def test_triton_kernels_match_reference_in_cpu_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    code = "from tests.test_hashgrid_triton import interpreter_checks; interpreter_checks()"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "interpreter checks passed" in result.stdout


def compile_for_h100(kernel, signature, constants):
    """Compile a kernel to an sm_90 cubin on this machine (no GPU needed); returns (ptx, resource usage)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = dict(signature, **{name: "constexpr" for name in constants})
    # Pointers 16-byte aligned, as the launcher specialises them at run time.
    aligned = {(i,): [["tt.divisibility", 16]] for i, kind in enumerate(signature.values()) if kind.startswith("*")}
    compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=aligned),
                              target=GPUTarget("cuda", 90, 32), options={"enable_fp_fusion": True})
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        usage = subprocess.run([str(cuobjdump), "--dump-resource-usage", cubin.name], capture_output=True,
                               text=True, check=True).stdout
    return compiled.asm["ptx"], usage


def test_kernels_compile_for_h100_without_spills():
    pytest.importorskip("triton.backends.nvidia")
    from nrc.hashgrid.triton_backend import DEFAULT_BLOCK_POINTS, kernel_constants
    from nrc.hashgrid.triton_kernels import hash_grid_backward_kernel, hash_grid_forward_kernel

    spec = HashGridSpec.from_config(3, small_config(2, log2_size=8))
    constants = dict(kernel_constants(spec), BLOCK=DEFAULT_BLOCK_POINTS)
    ptx, usage = compile_for_h100(hash_grid_forward_kernel, {
        "x_ptr": "*fp32", "table_ptr": "*fp16", "out_ptr": "*fp16", "N": "i32", "stride_xn": "i32",
        "stride_xd": "i32"}, constants)
    assert "STACK:0" in usage and "LOCAL:0" in usage, usage
    assert "fma.rn.f32" in ptx  # pos = fma(x, scale, 0.5), rounded once as in tcnn
    # Two fp16 features per entry travel as one 32-bit load.
    assert ptx.count("ld.global.b32") >= spec.n_levels * 8
    ptx, usage = compile_for_h100(hash_grid_backward_kernel, {
        "x_ptr": "*fp32", "table_ptr": "*fp16", "grad_out_ptr": "*fp32", "grad_table_ptr": "*fp32",
        "grad_x_ptr": "*fp32", "N": "i32", "stride_xn": "i32", "stride_xd": "i32", "stride_gn": "i32",
        "stride_gf": "i32"}, dict(constants, TABLE_GRAD=True, X_GRAD=False))
    assert "STACK:0" in usage and "LOCAL:0" in usage, usage
    # One relaxed fp32x2 atomic (sm_90's red.v2.f32) per corner and level.
    assert ptx.count("red.global.gpu.relaxed.add.v2.f32") == spec.n_levels * 8


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


# Every D and F; Smoothstep on F = 2 only, since each distinct config compiles its own kernels.
GPU_CASES = [(d, f, "Linear") for d in (2, 3) for f in (1, 2, 4, 8)] + [(2, 2, "Smoothstep"), (3, 2, "Smoothstep")]


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("n_dims,features,interpolation", GPU_CASES)
def test_triton_matches_reference_on_gpu(n_dims, features, interpolation):
    # 8 levels from resolution 16 to 154: dense at first, hashed from 43 (3D) or 112 (2D).
    spec = HashGridSpec.from_config(n_dims, {"n_levels": 8, "n_features_per_level": features,
                                             "log2_hashmap_size": 15 if n_dims == 3 else 13, "base_resolution": 16,
                                             "per_level_scale": NGP_SCALE, "interpolation": interpolation})
    assert any(spec.dense) and not all(spec.dense)
    gen = torch.Generator().manual_seed(features)
    table = torch.randn(spec.n_params, generator=gen).cuda()
    for x in (torch.rand((1 << 15) + 7, n_dims, generator=gen), ray_points(1 << 15, n_dims, gen)):
        compare_with_reference(spec, x.cuda(), table, 1e-5, 1e-4)


@pytest.mark.gpu
@cuda
def test_triton_fp16_table_and_module_on_gpu():
    enc = HashGridEncoding(3, {"log2_hashmap_size": 17}, dtype=torch.float16).cuda()
    assert enc.resolved_backend(torch.device("cuda")) == "triton"
    with torch.no_grad():
        enc.table.normal_()
    x = torch.rand(5000, 3, device="cuda")
    compare_with_reference(enc.spec, x, enc.table, 2e-3, 2e-3)


@pytest.mark.gpu
@cuda
@pytest.mark.skipif(not tcnn_available(), reason="needs tinycudann")
def test_tcnn_backend_shares_layout_with_reference():
    enc = HashGridEncoding(3, {"log2_hashmap_size": 17, "interpolation": "Smoothstep"}, backend="tcnn").cuda()
    with torch.no_grad():
        enc.table.normal_()
    x = torch.rand(4096, 3, device="cuda")
    torch.testing.assert_close(enc(x).float(), hash_grid_reference(x, enc.table.detach(), enc.spec), atol=1e-4, rtol=0)
