"""Hash-grid encoding throughput: torch reference, torch.compile'd reference, the C++ CPU backend,
Triton, tiny-cuda-nn.

Prints M points/s for the forward and forward+backward (table gradient) on uniform random points
and on ray-coherent points (64 consecutive samples along each ray of the real LLFF "fern" cameras
in ../shared/data), and the ratios of the fast backends to the references measured in the same
run. Standard config: 16 levels x 2 features, T = 2^19, resolutions 16 -> 2048.

With CUDA: N = 2^18 and 2^21 points, GPU rows (reference, compiled, Triton fp32/fp16, tcnn).
Without: N = 2^16 and 2^18, CPU rows (reference, compiled, cpu backend) on all of torch's threads,
and the last line reads ``cpu backend: fwd+bwd <R>x reference, <C>x torch.compile`` for uniform
points at the last size. Input checks are off in every row, so the rows time the encodings alone.
The backward gets a fixed random output gradient and starts from ``table.grad = None`` (no
accumulation pass).

    python bench/hashgrid.py [--sizes 65536 262144] [--iters 20] [--threads 2] [--no-compile] [--sweep-block]
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
from nrc.hashgrid.cpu_backend import cpu_backend_available, unavailable_reason  # noqa: E402
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


# On CPU a row also runs for at least this long: a fast backend's 2 calls would last a fraction of
# a second, at the mercy of whatever else the (shared) cores are doing in that instant.
CPU_MIN_SECONDS = 3.0


def seconds_per_call(fn, device: torch.device, iters: int, warmup: int) -> float:
    """Mean wall time of at least ``iters`` calls (and, on CPU, of at least CPU_MIN_SECONDS of them)."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    min_seconds = CPU_MIN_SECONDS if device.type == "cpu" else 0.0
    start, calls = time.perf_counter(), 0
    while calls < iters or time.perf_counter() - start < min_seconds:
        fn()
        calls += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls


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
        if cpu_backend_available():
            cpu = HashGridEncoding(3, CONFIG, backend="cpu", device=device, check_inputs=False)
            found["cpu backend"] = (cpu, cpu.table)
        else:
            found["cpu backend"] = f"not built ({unavailable_reason()})"
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


def size_label(n: int) -> str:
    return f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 else str(n)


def print_ratios(results: dict, fast: str, bases: tuple[str, ...], suffix: str, check_targets: bool) -> None:
    for base in bases:
        slow, quick = results.get(f"{base} {suffix}"), results.get(f"{fast} {suffix}")
        if not (slow and quick):
            continue
        ratio = {k: round(quick[k] / slow[k], 2) for k in ("fwd", "fwdbwd")}
        results[f"{fast} / {base} {suffix}"] = ratio
        verdict = ""
        if check_targets:
            verdict = "  targets: " + ", ".join(
                f"{k} {'met' if quick[k] >= TARGETS[k][0] and ratio[k] >= TARGETS[k][1] else 'MISSED'}"
                for k in ("fwd", "fwdbwd"))
        print(f"  {fast} / {base}: fwd {ratio['fwd']}x  fwd+bwd {ratio['fwdbwd']}x{verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="batch sizes in points (default 2^18 2^21 on CUDA, 2^16 2^18 on CPU); values below 64 "
                             "are exponents, as this option used to take (18 means 2^18)")
    parser.add_argument("--iters", type=int, default=None,
                        help="timed calls per row (default 20 on CUDA; on CPU 2, and at least 3 s of calls)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's, i.e. all cores)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    parser.add_argument("--sweep-block", action="store_true", help="triton fp16 rates for several block sizes")
    args = parser.parse_args()
    if args.sizes and min(args.sizes) < 1 or args.threads is not None and args.threads < 1:
        parser.error("--sizes and --threads must be positive")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    iters = args.iters or (20 if device.type == "cuda" else 2)
    sizes = [n if n >= 64 else 1 << n for n in args.sizes] if args.sizes else \
        ([1 << 18, 1 << 21] if device.type == "cuda" else [1 << 16, 1 << 18])
    warmup = 3 if device.type == "cuda" else 1
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"hash grid bench on {name}, torch {torch.__version__}; config {CONFIG}")
    generator = np.random.default_rng(0)
    results = {"device": name, "torch": torch.__version__}
    encs = encoders(device, not args.no_compile, None)
    for n in sizes:
        label = size_label(n)
        inputs = {"uniform": torch.from_numpy(generator.random((n, 3), dtype=np.float32))}
        if FERN.exists():
            inputs["rays"] = ray_coherent_points(n, generator)
        else:
            print(f"ray-coherent rows skipped: {FERN} not found")
        for kind, x in inputs.items():
            x = x.to(device)
            for enc_name, entry in encs.items():
                key = f"{enc_name} N={label} {kind}"
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
            suffix = f"N={label} {kind}"
            for fast in ("triton fp32", "triton fp16"):
                print_ratios(results, fast, ("compiled",), suffix, n == 1 << 21)
            print_ratios(results, "cpu backend", ("reference", "compiled"), suffix, False)
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
    if device.type == "cpu":
        summary = f"N={size_label(sizes[-1])} uniform"
        vs_reference = results.get(f"cpu backend / reference {summary}")
        vs_compiled = results.get(f"cpu backend / compiled {summary}")
        ratio = {name: f"{r['fwdbwd']}x" if r else "(not measured)"
                 for name, r in (("reference", vs_reference), ("compiled", vs_compiled))}
        print(f"cpu backend: fwd+bwd {ratio['reference']} reference, {ratio['compiled']} torch.compile")


if __name__ == "__main__":
    main()
