"""NRC targets, measured in one run on whatever device is here (GPU named when there is one).

    python bench/nrc.py [--seconds 300] [--world DIR] [--fern-seconds 120] [--preset gpu|cpu|tiny]
    python bench/nrc.py --cpu-quick          # <= 12 minutes on 2 cores; ends with the fern line
    python bench/nrc.py --sampler-ab         # ~20-27 minutes: the cpu preset's proposal field vs 48 uniform samples

``--cpu-quick``: training rays/s and steps/s of every preset (fern, each preset's default
height, 15 s each); the synthetic world's held-out frames after as much of 5 minutes as the
12 fit in; fern at 128 px for 300 s with the LLFF split (every 8th image held out), a held-out
PSNR-vs-time curve PNG per scene; last line ``fern 128px 300s: held-out <P> dB (<k> held-out
images), <r> rays/s``. Held-out PSNR on the curve is measured with the training clock stopped.

Prints, for a synthetic world (<= 8 objects, static): held-out PSNR after a wall-clock training
budget (goal >= 28 dB in 5 min on one H100) beside the constant-colour baseline, FG-ARI of the
code segmentation (goal >= 0.7), Chamfer distance of the exported mesh to the GT meshes as a
fraction of the scene extent (goal <= 2%), training rays/s, render ms per 512x512 frame with
and without the occupancy grid; then held-out PSNR on the real LLFF fern scene (no goal yet).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

# Before torch starts OpenMP and MKL: waiting threads sleep instead of spinning (see ingest/__init__.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # byte-identical at any thread count (ingest/__init__.py)

import numpy as np  # noqa: E402
import torch  # noqa: E402

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


QUICK_TOTAL = 720.0  # --cpu-quick's whole budget, seconds
FERN = REPO.parent / "shared" / "data" / "posed" / "fern_llff"


def quick_config(name: str, height: int | None, seconds: float):
    config = preset(name)
    config.train.seconds = seconds
    config.train.preview_every = config.train.save_every = 10**9
    if height is not None or name == "gpu":
        config.train.image_height = height
    return config


def work_line(entry: dict) -> str:
    return (f"occupied cells {entry['occupied']:.2f}, samples evaluated {entry.get('evaluated', float('nan')):.2f}, "
            f"coloured {entry.get('coloured', float('nan')):.2f} (last log window)")


def heldout_curve(scene, height: int, config, every_s: float):
    """An ``on_log`` callback that scores the held-out views every ``every_s`` training seconds."""
    from nrc.data import load_scene_data
    from nrc.metrics import psnr
    from nrc.rendering import render_view

    views = load_scene_data(scene, height, config.train.holdout_every, part="held_out").views
    points: list[tuple[float, float]] = []

    def score(model) -> float:
        return float(np.mean([psnr(render_view(model, v.camera.c2w, v.camera, ("rgb",))["rgb"], v.rgb, v.valid)
                              for v in views]))

    def on_log(model, entry):
        if entry["seconds"] >= every_s * (len(points) + 1):
            points.append((entry["seconds"], score(model)))

    return on_log, points


def timed_fit(scene, out: Path, config, seconds: float, curve_every: float | None = None):
    """(fit result, eval report, curve points) of one budgeted fit, and the curve's PNG."""
    from nrc.evaluate import evaluate_run
    from nrc.plots import line_plot, write_png
    from nrc.trainer import fit

    on_log, points = heldout_curve(scene, config.train.image_height, config, curve_every) if curve_every else (None, [])
    result = fit([scene], out, config, max_seconds=seconds, progress=False, on_log=on_log)
    t = time.perf_counter()
    report = evaluate_run(out)
    eval_s = time.perf_counter() - t
    mean = report["scenes"][0]["mean"]
    points.append((result.seconds, mean["psnr"]))
    write_png(out / "heldout_psnr_vs_time.png",
              line_plot({"held-out PSNR (dB)": ([round(p[0]) for p in points], [p[1] for p in points])},
                        f"{Path(scene).name}: held-out PSNR vs training seconds"))
    return result, report, eval_s, points


def build_kernels() -> float:
    """Seconds to build (or load from torch's cache) every C++ kernel nrc uses on CPU, so that no
    timed run pays for a build: the cache is shared by checkouts and rebuilds for a new path."""
    from nrc.native import load_cpu_kernels

    t = time.perf_counter()
    for name, reason in load_cpu_kernels().items():
        print(f"warning: the {name} C++ kernel could not be built ({reason}); the torch path is timed instead")
    return time.perf_counter() - t


KERNEL_ARMS = ("all kernels", "torch codebook", "torch proposal field", "all torch", "occupancy grid in training")


def kernel_ab(scene, out: Path, reps: int = 6, steps: int = 16) -> dict[str, float]:
    """Median ms per cpu-preset training step (fern at 128 px) with every CPU kernel, with each
    kernel replaced by its torch reference, with both replaced, and with the occupancy grid
    back in training (culling and a refresh pass every 16 steps), alternating in one process on one
    model after 100 warm-up steps."""
    from nrc.data import RayBank
    from nrc.field import NRCModel
    from nrc.trainer import make_optimizer, prepare_run, scene_batches, step_generator, training_loss, update_occupancy

    config = quick_config("cpu", 128, 60.0)
    config, scenes = prepare_run([scene], out, config, None, None)
    bank = RayBank(scenes[0].views, torch.device("cpu"))
    torch.manual_seed(0)
    model = NRCModel(config)
    optimizer = make_optimizer(model, config.train.lr)
    encoder = model.encoders[0]

    def step(i: int) -> None:
        gen = step_generator(0, i, "cpu")
        loss, _, _ = training_loss(model, scene_batches([bank], config.train.batch_rays, gen), config, gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        update_occupancy(model, config, i, torch.device("cpu"))

    def arm(name: str) -> None:
        model.fused_codebook = name not in ("torch codebook", "all torch")
        encoder.proposal.fused = name not in ("torch proposal field", "all torch")
        config.sampler.occupancy_in_training = True if name == "occupancy grid in training" else None

    for i in range(100):
        step(i)
    times: dict[str, list[float]] = {name: [] for name in KERNEL_ARMS}
    for rep in range(reps):
        for name in KERNEL_ARMS:
            arm(name)
            t = time.perf_counter()
            for i in range(steps):  # 16 steps from a multiple of 16: one grid refresh when it is on
                step(112 + i)
            times[name].append((time.perf_counter() - t) / steps * 1000)
    arm("all kernels")
    return {name: float(np.median(t)) for name, t in times.items()}


def cpu_quick(out: Path, fern_seconds: float = 300.0, world_max_seconds: float = 300.0) -> None:
    from ingest.synth import SynthConfig, generate
    from nrc.trainer import fit

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    print(f"device: {device_name('cpu')}; load average at start {os.getloadavg()[0]:.1f} "
          f"(the machine is shared: wall-clock numbers are noisy)")
    if not FERN.is_dir():
        raise SystemExit(f"fern not found at {FERN}: --cpu-quick needs it")
    print(f"C++ kernels built or loaded before timing: {build_kernels():.1f} s (a fresh checkout builds them once)")
    for name in ("tiny", "cpu", "gpu"):
        config = quick_config(name, None, 15.0)
        result = fit([FERN], out / f"preset_{name}", config, progress=False)
        trained = [h for h in result.history if "seconds" in h]
        rays = result.step * config.train.batch_rays
        print(f"preset {name} (fern at height {config.train.image_height or 378}, {config.train.batch_rays} rays x "
              f"{config.sampler.n_samples} samples a step"
              f"{f', placed by {config.sampler.proposal_samples} proposal samples' if config.sampler.proposal_samples else ''}): {result.step} steps in {result.seconds:.1f} s "
              f"(loading and final save included) = {result.step / result.seconds:.2f} steps/s, "
              f"{rays / result.seconds:,.0f} rays/s; steps in the preset's default {preset(name).train.seconds:.0f} s "
              f"at this rate: ~{result.step / result.seconds * preset(name).train.seconds:.0f}"
              + (f"; {work_line(trained[-1])}" if trained else ""))
    ms = kernel_ab(FERN, out / "kernel_ab")
    base = ms["all kernels"]
    print("cpu preset step on fern at 128 px, same model, alternating, median ms: "
          + "; ".join(f"{name} {ms[name]:.1f}" + ("" if name == "all kernels" else f" ({ms[name] / base:.2f}x)")
                      for name in KERNEL_ARMS))
    world_seconds = min(world_max_seconds, QUICK_TOTAL - (time.perf_counter() - start) - fern_seconds - 90.0)
    if world_seconds >= 30:
        world = generate(out / "world", SynthConfig(seconds=8.0, fps=5.0, width=256, seed=0, n_objects=6),
                         progress=False)
        config = quick_config("cpu", 64, world_seconds)
        result, report, eval_s, points = timed_fit(world.root, out / "run_world", config, world_seconds,
                                                   world_seconds / 3)
        scene = report["scenes"][0]
        print(f"synthetic world 128x64 equirect, {len(world)} frames: {result.step} steps in {result.seconds:.0f} s; "
              f"held-out frames {scene['held_out_frames']}: PSNR {scene['mean']['psnr']:.2f} dB vs constant colour "
              f"{scene['mean']['baseline_psnr']:.2f} dB (goal >= 25 after 300 s); eval {eval_s:.1f} s; "
              f"{work_line(result.history[-1])}; curve {' '.join(f'{t:.0f}s:{p:.2f}' for t, p in points)} "
              f"-> {out / 'run_world' / 'heldout_psnr_vs_time.png'}")
    else:
        print(f"synthetic world: skipped (only {world_seconds:.0f} s of the 12 minutes left for it)")
    config = quick_config("cpu", 128, fern_seconds)
    result, report, eval_s, points = timed_fit(FERN, out / "run_fern", config, fern_seconds, fern_seconds / 5)
    scene = report["scenes"][0]
    rays_per_s = result.step * config.train.batch_rays / result.seconds
    print(f"fern: {result.step} steps in {result.seconds:.1f} s; held-out images {scene['held_out_frames']} "
          f"(train {len(scene['train_frames'])}): PSNR {scene['mean']['psnr']:.2f} dB vs constant colour "
          f"{scene['mean']['baseline_psnr']:.2f} dB, SSIM {scene['mean']['ssim']:.3f}; eval {eval_s:.1f} s "
          f"({eval_s / result.seconds:.3f} of the fit); {work_line(result.history[-1])}; curve {' '.join(f'{t:.0f}s:{p:.2f}' for t, p in points)} "
          f"-> {out / 'run_fern' / 'heldout_psnr_vs_time.png'}")
    print(f"total {time.perf_counter() - start:.0f} s; load average at end {os.getloadavg()[0]:.1f}")
    print(f"fern 128px {fern_seconds:.0f}s: held-out {scene['mean']['psnr']:.2f} dB ({scene['n_views']} held-out images), "
          f"{rays_per_s:,.0f} rays/s")


def uniform_variant(config):
    """The cpu preset as it was before its proposal field: 48 uniform samples, 1800 steps."""
    config.sampler.proposal_samples, config.sampler.n_samples, config.train.steps = 0, 48, 1800
    return config


def untrained_proposal(config):
    """The ablation: the cpu preset's proposal field never trained (its interlevel loss off)."""
    config.train.proposal_loss = 0.0
    return config


def sampler_ab(out: Path, fern_seconds: float = 300.0, world_seconds: float = 240.0) -> None:
    """The cpu preset (a proposal field's 24 samples place 16) against the same preset with 48
    uniform samples, in one process: fern at 128 px (and its untrained-proposal ablation) and the
    synthetic world at 64 px."""
    from ingest.synth import SynthConfig, generate

    if not FERN.is_dir():
        raise SystemExit(f"fern not found at {FERN}: --sampler-ab needs it")
    world = generate(out / "world", SynthConfig(seconds=8.0, fps=5.0, width=256, seed=0, n_objects=6), progress=False)
    rows = []
    for scene, height, seconds in ((FERN, 128, fern_seconds), (world.root, 64, world_seconds)):
        variants = [("proposal 24 -> 16", lambda c: c), ("uniform 48", uniform_variant)]
        if scene == FERN:
            variants.append(("untrained proposal", untrained_proposal))
        for name, variant in variants:
            config = variant(quick_config("cpu", height, seconds))
            run = out / f"run_{Path(scene).name}_{name.split()[0]}"
            result, report, _, _ = timed_fit(scene, run, config, seconds)
            mean = report["scenes"][0]["mean"]
            rows.append((Path(scene).name, name, mean["psnr"], result.step * config.train.batch_rays / result.seconds))
            print(f"{Path(scene).name} {height}px {seconds:.0f}s, {name}: {result.step} steps in {result.seconds:.0f} s, "
                  f"{rows[-1][3]:,.0f} rays/s, held-out {mean['psnr']:.2f} dB, SSIM {mean['ssim']:.3f}", flush=True)
    by = {(scene, name): (psnr, rays) for scene, name, psnr, rays in rows}
    lines = [f"{scene} {by[scene, 'proposal 24 -> 16'][0]:.2f} vs {by[scene, 'uniform 48'][0]:.2f} dB at "
             f"{by[scene, 'proposal 24 -> 16'][1] / by[scene, 'uniform 48'][1]:.2f}x the rays/s"
             + (f" (untrained proposal {by[scene, 'untrained proposal'][0]:.2f} dB)" if (scene, 'untrained proposal') in by else "")
             for scene in dict.fromkeys(r[0] for r in rows)]
    print("sampler A/B: " + "; ".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=None, help="training budget (default 300 on GPU, 120 on CPU)")
    ap.add_argument("--world", help="existing synthetic world (default: generate one, 1024 wide, 6 objects)")
    ap.add_argument("--world-width", type=int, default=1024)
    ap.add_argument("--preset", default=None)
    ap.add_argument("--height", type=int, help="training image height (default: the preset's)")
    ap.add_argument("--fern-seconds", type=float, default=None, help="0 skips fern (default: same as --seconds)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cpu-quick", action="store_true", help="the 12-minute CPU run (see above)")
    ap.add_argument("--sampler-ab", action="store_true",
                    help="cpu preset with its proposal field vs 48 uniform samples, fern and the world (20-27 minutes)")
    ap.add_argument("--out", help="--cpu-quick, --sampler-ab: folder for runs and curves (default: a temporary one)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.sampler_ab:
        sampler_ab(Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="nrc_sampler_ab_")))
        return
    if args.cpu_quick:
        cpu_quick(Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="nrc_quick_")))
        return

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
