"""Hash-grid encoding throughput: torch reference, torch.compile'd reference, Triton, tiny-cuda-nn.

Prints M points/s for the forward and forward+backward (table gradient) at N = 2^18 and 2^21, on
uniform random points and on ray-coherent points (64 consecutive samples along each ray of the
real LLFF "fern" cameras in ../shared/data), and the ratios triton / compiled reference measured
in the same run. Standard config: 16 levels x 2 features, T = 2^19, resolutions 16 -> 2048.

Runs anywhere: without CUDA only the torch rows are measured (smaller batches, fewer iterations,
one thread) and the triton / tcnn rows are reported as needing CUDA. Input checks are off in
every row, so the rows time the encodings alone. The backward gets a fixed random output
gradient and starts from ``table.grad = None`` (no accumulation pass).

    python bench/hashgrid.py [--sizes 18 21] [--iters 20] [--no-compile] [--sweep-block]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from correspondence.nerfstudio import load_llff  # noqa: E402
from ingest.conventions import perspective_directions, rays_world  # noqa: E402
from nrc.hashgrid import HashGridEncoding, hash_grid_reference  # noqa: E402
from nrc.hashgrid.tcnn_backend import tcnn_available  # noqa: E402

CONFIG = {"otype": "HashGrid", "n_levels": 16, "n_features_per_level": 2, "log2_hashmap_size": 19,
          "base_resolution": 16, "per_level_scale": math.exp((math.log(2048) - math.log(16)) / 15)}
FERN = ROOT.parent / "shared" / "data" / "posed" / "fern_llff" / "poses_bounds.npy"
SAMPLES_PER_RAY = 64
TARGETS = {"fwd": (1200.0, 3.0), "fwdbwd": (600.0, 2.0)}  # M points/s and ratio to compiled, at 2^21


def ray_coherent_points(n: int, generator: np.random.Generator) -> torch.Tensor:
    """Training-like batch: random pixels of random fern cameras, stratified samples along each ray
    between the scene's near and far bounds, consecutive in memory, mapped into [0, 1]^3 by the
    samples' bounding box."""
    scene = load_llff(FERN.parent)
    near, far = scene.near_far
    n_rays = -(-n // SAMPLES_PER_RAY)
    counts = np.bincount(generator.integers(len(scene.frames), size=n_rays), minlength=len(scene.frames))
    points = []
    for frame, count in zip(scene.frames, counts):
        K = frame.intrinsics
        directions = perspective_directions(K).reshape(-1, 3)[generator.integers(K.width * K.height, size=count)]
        origins, directions = rays_world(frame.c2w, directions)
        strata = (np.arange(SAMPLES_PER_RAY) + generator.random((count, SAMPLES_PER_RAY))) / SAMPLES_PER_RAY
        t = near + (far - near) * strata
        points.append(origins[:, None, :] + t[..., None] * directions[:, None, :])
    points = np.concatenate(points).reshape(-1, 3)[:n]
    low, high = points.min(0), points.max(0)
    return torch.from_numpy((points - low) / (high - low)).float().clamp_(0, 1)


def seconds_per_call(fn, device: torch.device, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def rates(encode, table: torch.Tensor, x: torch.Tensor, iters: int, warmup: int) -> dict:
    """M points/s of encode(x) without grad, and of encode(x) plus backward into ``table``."""
    grad_out = torch.randn(x.shape[0], CONFIG["n_levels"] * CONFIG["n_features_per_level"], device=x.device,
                           dtype=table.dtype)

    def forward():
        with torch.no_grad():
            encode(x)

    def forward_backward():
        table.grad = None
        encode(x).backward(grad_out)

    n = x.shape[0] / 1e6
    return {"fwd": n / seconds_per_call(forward, x.device, iters, warmup),
            "fwdbwd": n / seconds_per_call(forward_backward, x.device, iters, warmup)}


def encoders(device: torch.device, compile_reference: bool, block_points: int | None):
    """name -> (callable, table) for every backend that can run here; or a reason string."""
    found = {}
    reference = HashGridEncoding(3, CONFIG, backend="torch", device=device, check_inputs=False)
    found["reference"] = (reference, reference.table)
    if compile_reference:
        compiled = HashGridEncoding(3, CONFIG, backend="torch", device=device, check_inputs=False)
        compiled_fn = torch.compile(lambda x: hash_grid_reference(x, compiled.table, compiled.spec, False))
        found["compiled"] = (compiled_fn, compiled.table)
    if device.type != "cuda":
        found["triton fp32"] = found["triton fp16"] = found["tcnn"] = "needs CUDA"
        return found
    from nrc.hashgrid.triton_backend import hash_grid_triton
    for name, dtype in (("triton fp32", torch.float32), ("triton fp16", torch.float16)):
        enc = HashGridEncoding(3, CONFIG, backend="triton", dtype=dtype, device=device, check_inputs=False)
        found[name] = ((lambda x, e=enc: hash_grid_triton(x, e.table, e.spec, False, block_points)), enc.table)
    if tcnn_available():
        for name, dtype in (("tcnn fp32", torch.float32), ("tcnn fp16", torch.float16)):
            enc = HashGridEncoding(3, CONFIG, backend="tcnn", dtype=dtype, device=device, check_inputs=False)
            found[name] = (enc, enc.table)
    else:
        found["tcnn"] = "tinycudann not importable"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="log2 of the batch sizes (default 18 21 on CUDA; 14 16 on CPU, where 2^21 takes minutes)")
    parser.add_argument("--iters", type=int, default=None, help="timed calls per row (default 20 on CUDA, 2 on CPU)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    parser.add_argument("--sweep-block", action="store_true", help="triton fp16 rates for several block sizes")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(1)
    iters = args.iters or (20 if device.type == "cuda" else 2)
    sizes = args.sizes or ([18, 21] if device.type == "cuda" else [14, 16])
    warmup = 3 if device.type == "cuda" else 1
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (1 thread)"
    print(f"hash grid bench on {name}, torch {torch.__version__}; config {CONFIG}")
    generator = np.random.default_rng(0)
    results = {"device": name, "torch": torch.__version__}
    encs = encoders(device, not args.no_compile, None)
    for log2_n in sizes:
        n = 1 << log2_n
        inputs = {"uniform": torch.from_numpy(generator.random((n, 3), dtype=np.float32))}
        if FERN.exists():
            inputs["rays"] = ray_coherent_points(n, generator)
        else:
            print(f"ray-coherent rows skipped: {FERN} not found")
        for kind, x in inputs.items():
            x = x.to(device)
            for enc_name, entry in encs.items():
                key = f"{enc_name} N=2^{log2_n} {kind}"
                if isinstance(entry, str):
                    print(f"{key:32s} not measured: {entry}")
                    continue
                try:
                    measured = rates(*entry, x, iters, warmup)
                except Exception as error:  # one backend failing must not hide the others' rows
                    print(f"{key:32s} failed: {repr(error)[:200]}")
                    continue
                results[key] = {k: float(f"{v:.4g}") for k, v in measured.items()}
                print(f"{key:32s} fwd {measured['fwd']:9.4g} M pts/s   fwd+bwd {measured['fwdbwd']:9.4g} M pts/s", flush=True)
            for triton_name in ("triton fp32", "triton fp16"):
                base, fast = results.get(f"compiled N=2^{log2_n} {kind}"), results.get(f"{triton_name} N=2^{log2_n} {kind}")
                if base and fast:
                    ratio = {k: round(fast[k] / base[k], 2) for k in ("fwd", "fwdbwd")}
                    results[f"{triton_name} / compiled N=2^{log2_n} {kind}"] = ratio
                    verdict = ""
                    if log2_n == 21:
                        verdict = "  targets: " + ", ".join(
                            f"{k} {'met' if fast[k] >= TARGETS[k][0] and ratio[k] >= TARGETS[k][1] else 'MISSED'}"
                            for k in ("fwd", "fwdbwd"))
                    print(f"  {triton_name} / compiled: fwd {ratio['fwd']}x  fwd+bwd {ratio['fwdbwd']}x{verdict}")
    if args.sweep_block and device.type == "cuda":
        from nrc.hashgrid.triton_backend import hash_grid_triton
        enc = HashGridEncoding(3, CONFIG, backend="triton", dtype=torch.float16, device=device)
        x = torch.rand(1 << 21, 3, device=device)
        for block in (64, 128, 256, 512):
            measured = rates(lambda p: hash_grid_triton(p, enc.table, enc.spec, False, block), enc.table, x, iters, warmup)
            results[f"sweep block={block}"] = {k: round(v, 1) for k, v in measured.items()}
            print(f"triton fp16 block={block:4d}: fwd {measured['fwd']:9.1f}  fwd+bwd {measured['fwdbwd']:9.1f} M pts/s")
    if device.type == "cuda":
        a = torch.empty(1 << 28, dtype=torch.uint8, device=device)
        b = torch.empty_like(a)
        results["d2d_copy_GBps_rw"] = round(2 * a.numel() / seconds_per_call(lambda: b.copy_(a), device, 20, 3) / 1e9, 1)
        print(f"device-to-device copy: {results['d2d_copy_GBps_rw']} GB/s (read + write)")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
