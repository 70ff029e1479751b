"""NRC targets, measured in one run on whatever device is here (GPU named when there is one).

    python bench/nrc.py [--seconds 300] [--world DIR] [--fern-seconds 120] [--preset gpu|cpu|tiny]

Prints, for a synthetic world (<= 8 objects, static): held-out PSNR after a wall-clock training
budget (goal >= 28 dB in 5 min on one H100) beside the constant-colour baseline, FG-ARI of the
code segmentation (goal >= 0.7), Chamfer distance of the exported mesh to the GT meshes as a
fraction of the scene extent (goal <= 2%), training rays/s, render ms per 512x512 frame with
and without the occupancy grid; then held-out PSNR on the real LLFF fern scene (no goal yet).
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ingest import conventions as cv  # noqa: E402
from nrc.config import preset  # noqa: E402


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def render_ms(model, device: str, use_occupancy: bool) -> float:
    """Best of 3 after a warm-up on GPU; one cold render on CPU (a 512x512 frame takes a while)."""
    from nrc.rendering import render_view

    K = cv.Intrinsics.from_fov(512, 512, 70)
    c2w = cv.make_pose(np.eye(3), np.asarray(model.config.scenes[0].center))
    repeats = 3 if device == "cuda" else 1
    if device == "cuda":
        render_view(model, c2w, K, ("rgb",), use_occupancy=use_occupancy)
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        render_view(model, c2w, K, ("rgb",), use_occupancy=use_occupancy)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return 1000 * min(times)


def mesh_chamfer_fraction(model, world) -> float:
    """Chamfer(exported mesh, GT room + static objects) / scene extent, 100k points each."""
    import trimesh

    from ingest.synth import object_mesh, room_mesh
    from nrc.mesh import extract_meshes
    from nrc.metrics import chamfer_distance

    lo, hi = (np.asarray(b, float) for b in world.scene.bounds)
    pad = 0.02 * (hi - lo)
    meshes = extract_meshes(model, 0, resolution=256 if torch.cuda.is_available() else 128, bounds=(lo - pad, hi + pad))
    if not meshes:
        return float("nan")
    gt = trimesh.util.concatenate([room_mesh(world.scene)] + [object_mesh(o) for o in world.scene.objects if not o.moving])
    ours = trimesh.util.concatenate(list(meshes.values()))
    a = trimesh.sample.sample_surface(ours, 100_000, seed=0)[0]
    b = trimesh.sample.sample_surface(gt, 100_000, seed=0)[0]
    return chamfer_distance(a, b) / world.scene.extent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=None, help="training budget (default 300 on GPU, 120 on CPU)")
    ap.add_argument("--world", help="existing synthetic world (default: generate one, 1024 wide, 6 objects)")
    ap.add_argument("--world-width", type=int, default=1024)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--height", type=int, help="training image height (default: the preset's)")
    ap.add_argument("--fern-seconds", type=float, default=None, help="0 skips fern (default: same as --seconds)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from ingest.synth import SynthConfig, SyntheticWorld, generate
    from nrc.checkpoint import load_run
    from nrc.evaluate import evaluate_run
    from nrc.trainer import fit

    device = "cuda" if torch.cuda.is_available() else "cpu"
    seconds = args.seconds or (300.0 if device == "cuda" else 120.0)
    name = args.preset or ("gpu" if device == "cuda" else "cpu")
    print(f"device: {device_name(device)}; preset {name}; training budget {seconds:.0f} s")
    tmp = Path(tempfile.mkdtemp(prefix="nrc_bench_"))
    world = SyntheticWorld(args.world) if args.world else generate(
        tmp / "world", SynthConfig(seconds=8.0, fps=5.0, width=args.world_width, seed=0, n_objects=6), progress=False)

    config = preset(name)
    config.train.steps = max(config.train.steps, 100_000)  # the wall clock stops training
    config.train.preview_every = config.train.save_every = 10**9
    if args.height:
        config.train.image_height = args.height
    t0 = time.perf_counter()
    result = fit([world.root], tmp / "run_synth", config, device=device, max_seconds=seconds, progress=False)
    train_s = time.perf_counter() - t0
    rays_per_s = float(np.median([h["rays_per_s"] for h in result.history[len(result.history) // 2:]]))
    report = evaluate_run(tmp / "run_synth", device=device)
    mean = report["scenes"][0]["mean"]
    model, _ = load_run(tmp / "run_synth", device)
    occ_ms, dense_ms = render_ms(model, device, True), render_ms(model, device, False)
    chamfer = mesh_chamfer_fraction(model, world)
    print(f"synthetic world {world.config.width}x{world.config.height}, {len(world)} frames, "
          f"{len(world.scene.objects)} objects, trained at height {config.train.image_height}: "
          f"{result.step} steps in {train_s:.0f} s")
    print(f"  held-out PSNR {mean['psnr']:.2f} dB (goal >= 28 on H100) vs constant colour {mean['baseline_psnr']:.2f} dB "
          f"(+{mean['psnr'] - mean['baseline_psnr']:.2f} dB); SSIM {mean['ssim']:.3f}")
    print(f"  depth abs-rel {mean['depth_abs_rel']:.3f}, RMSE {mean['depth_rmse']:.3f} m")
    print(f"  segmentation ARI {mean['ari']:.3f}, FG-ARI {mean['fg_ari']:.3f} (goal >= 0.7), "
          f"{report['scenes'][0]['active_codes']} active codes")
    print(f"  mesh Chamfer / extent {100 * chamfer:.2f}% (goal <= 2%)")
    print(f"  training {rays_per_s:,.0f} rays/s; render 512x512: {occ_ms:.0f} ms with occupancy grid, "
          f"{dense_ms:.0f} ms without ({dense_ms / occ_ms:.2f}x); "
          f"occupied cells {model.encoders[0].occupancy.occupied_fraction():.3f}")

    fern = REPO.parent / "shared" / "data" / "posed" / "fern_llff"
    fern_seconds = seconds if args.fern_seconds is None else args.fern_seconds
    if fern_seconds > 0 and fern.is_dir():
        config = preset(name)
        config.train.steps = max(config.train.steps, 100_000)
        config.train.preview_every = config.train.save_every = 10**9
        config.train.image_height = None  # images_8 as they are (504x378)
        result = fit([fern], tmp / "run_fern", config, device=device, max_seconds=fern_seconds, progress=False)
        fern_mean = evaluate_run(tmp / "run_fern", device=device)["scenes"][0]["mean"]
        print(f"fern (LLFF, 504x378): {result.step} steps in {fern_seconds:.0f} s, held-out PSNR "
              f"{fern_mean['psnr']:.2f} dB vs constant colour {fern_mean['baseline_psnr']:.2f} dB, SSIM {fern_mean['ssim']:.3f}")
    elif fern_seconds > 0:
        print(f"fern: skipped ({fern} not found)")
    print(f"(runs kept in {tmp})")


if __name__ == "__main__":
    main()
