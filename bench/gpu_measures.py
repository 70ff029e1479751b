"""Measurements of bench/gpu_check.py that no bench script offers, through the project's public APIs.

    python bench/gpu_measures.py environment|nrc|odin-bf16 [--seconds 150] [--dists a,b] [--device cpu --small]

Each prints one line ``GPU_CHECK_RESULT {json}`` as its last line. ``resolve(name)`` checks, without
CUDA and without doing any work, that every API a measurement calls still takes the arguments
passed here (gpu_check's dry run).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULT_TAG = "GPU_CHECK_RESULT "


def _bind(fn, *args, **kwargs) -> None:
    inspect.signature(fn).bind(*args, **kwargs)  # TypeError names the parameter that changed


def _require_pyav() -> None:
    """The synthetic world writes its video with PyAV, imported only then: check it up front."""
    if importlib.util.find_spec("av") is None:
        raise ModuleNotFoundError("PyAV (module av) is missing: the synthetic world writes its video with it")


def resolve_nrc() -> None:
    _require_pyav()
    from ingest.synth import SynthConfig, generate
    from nrc.checkpoint import load_run
    from nrc.config import preset
    from nrc.data import load_scene_data
    from nrc.evaluate import evaluate_run
    from nrc.rendering import render_view
    from nrc.trainer import fit

    config = preset("gpu")
    assert hasattr(config.train, "mixed_precision") and hasattr(config.train, "holdout_every")
    _bind(SynthConfig, seconds=1.0, fps=1.0, width=64, seed=0, n_objects=6)
    _bind(generate, Path(), SynthConfig(), progress=False)
    _bind(fit, [Path()], Path(), config, device="cuda", max_seconds=1.0, progress=False)
    _bind(evaluate_run, Path(), device="cuda")
    _bind(load_run, Path(), "cuda")
    _bind(load_scene_data, "x", 1)
    _bind(render_view, None, None, None, ("codes",), scene=0)


def resolve_odin_bf16() -> None:
    _require_pyav()
    from correspondence.synthetic_pairs import synthetic_gt_pairs
    from ingest.synth import SynthConfig, generate
    from odin.config import OdinConfig
    from odin.data import first_pairs
    from odin.models import PixelCodec, new_denoiser
    from odin.schedulers import training_scheduler
    from odin.training import diffusion_loss

    cfg = OdinConfig()
    _bind(generate, Path(), SynthConfig(), progress=False)
    _bind(synthetic_gt_pairs, None, Path(), 1, view_size=128, seed=0, val_fraction=0.25)
    _bind(first_pairs, Path(), None, 1, 128, 128)
    _bind(new_denoiser, cfg.model, PixelCodec())
    _bind(training_scheduler, cfg.diffusion)
    _bind(diffusion_loss, None, PixelCodec(), None, None, cfg.diffusion, None)



def _best_ms(fn, repeats: int, device: str) -> float:
    """Best of ``repeats`` after a warm-up, synchronised on CUDA."""
    import torch

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def measure_environment(dists: list[str]) -> dict:
    import importlib.metadata as md
    import platform

    info: dict = {"python": sys.executable, "python_version": platform.python_version(), "installed": {}}
    for name in dists:
        with contextlib.suppress(md.PackageNotFoundError):
            info["installed"][name] = md.version(name)
    try:
        import torch

        info.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda=torch.cuda.is_available())
        if info["cuda"]:
            props = torch.cuda.get_device_properties(0)
            info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                        capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count)
    except ImportError as error:
        info.update(torch=None, cuda=False, torch_error=str(error))
    with contextlib.suppress(ImportError):
        import triton

        info["triton"] = triton.__version__
    info["tinycudann"] = importlib.util.find_spec("tinycudann") is not None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        info["driver"] = smi.stdout.strip().split(", ")[-1] if smi.returncode == 0 else None
    with contextlib.suppress(md.PackageNotFoundError):
        info["odin360_entry_points"] = len(md.entry_points(group="odin360.commands"))
    return info


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(0) if device == "cuda" else "CPU"


def measure_nrc(seconds: float, device: str = "cuda", small: bool = False) -> dict:
    """``small``: tiny preset on a 256-wide world and 128 px renders (a CPU smoke run of this code)."""
    import numpy as np

    from ingest import conventions as cv
    from ingest.image_metrics import psnr
    from ingest.synth import SynthConfig, generate
    from nrc.checkpoint import load_run
    from nrc.config import preset
    from nrc.data import load_scene_data
    from nrc.evaluate import evaluate_run
    from nrc.rendering import render_view
    from nrc.trainer import fit

    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_nrc_"))
    # The world of bench/nrc.py (1024 wide, 6 static objects), so the numbers compare.
    world = generate(tmp / "world", SynthConfig(seconds=8.0, fps=5.0, width=256 if small else 1024, seed=0, n_objects=6),
                     progress=False)
    config = preset("tiny" if small else "gpu")
    config.train.steps = max(config.train.steps, 100_000)  # the wall clock stops training
    config.train.preview_every = config.train.save_every = 10**9
    result = fit([world.root], tmp / "run", config, device=device, max_seconds=seconds, progress=False)
    mean = evaluate_run(tmp / "run", device=device)["scenes"][0]["mean"]
    model, config = load_run(tmp / "run", device)
    size = 128 if small else 512
    K = cv.Intrinsics.from_fov(size, size, 70)
    c2w = cv.make_pose(np.eye(3), np.asarray(config.scenes[0].center))
    render_ms = _best_ms(lambda: render_view(model, c2w, K, ("rgb",)), 3, device)
    # bf16 vs fp32: the code each held-out pixel shows (argmax of code weights) and the colour.
    _, held = load_scene_data(config.scenes[0].source, config.train.image_height).split(config.train.holdout_every)
    agree, colour_db = [], []
    for view in held[:3]:
        outs = []
        for bf16 in (True, False):
            model.config.train.mixed_precision = bf16
            outs.append(render_view(model, view.camera.c2w, view.camera, ("rgb", "codes")))
        agree.append(float(np.mean(outs[0]["segmentation"] == outs[1]["segmentation"])))
        colour_db.append(psnr(outs[0]["rgb"], outs[1]["rgb"]))
    rays = [h["rays_per_s"] for h in result.history[len(result.history) // 2:]]
    return {"device": _device_name(device), "train_seconds": seconds, "steps": result.step,
            "heldout_psnr": mean["psnr"], "baseline_psnr": mean["baseline_psnr"], "heldout_ssim": mean["ssim"],
            "rays_per_s": float(np.median(rays)) if rays else None, "render_px": size, "render_ms": render_ms,
            "bf16_fp32_code_agreement": float(np.mean(agree)), "bf16_vs_fp32_render_psnr": float(np.mean(colour_db)),
            "world": f"{world.config.width}x{world.config.height}, {len(world)} frames"}


def measure_odin_bf16(device: str = "cuda", small: bool = False, steps: int = 20) -> dict:
    """bf16 autocast training steps of the default model on synthetic GT pairs; ``small``: 32 px, 3 steps."""
    import numpy as np
    import torch

    from correspondence.synthetic_pairs import synthetic_gt_pairs
    from ingest.synth import SynthConfig, generate
    from odin.config import OdinConfig
    from odin.data import first_pairs
    from odin.models import PixelCodec, new_denoiser
    from odin.schedulers import training_scheduler
    from odin.training import diffusion_loss

    resolution, batch_size, steps = (32, 4, 3) if small else (128, 16, steps)
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_odin_"))
    world = generate(tmp / "world", SynthConfig(seconds=4.0, fps=5.0, width=512, seed=3), progress=False)
    synthetic_gt_pairs(world, tmp / "pairs", 2 * batch_size, view_size=resolution, seed=0, val_fraction=0.25)
    batch = first_pairs(tmp / "pairs", None, batch_size, resolution, resolution).to(device)
    cfg = OdinConfig()
    cfg.model.resolution = resolution
    model, _ = new_denoiser(cfg.model, PixelCodec())
    model.to(device).train()
    sched, codec = training_scheduler(cfg.diffusion), PixelCodec()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def loss_at(seed: int, bf16: bool) -> torch.Tensor:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            return diffusion_loss(model, codec, sched, batch, cfg.diffusion, torch.Generator(device).manual_seed(seed))[0]

    with torch.no_grad():
        fp32, bf16 = float(loss_at(0, False)), float(loss_at(0, True))
    losses = []
    for step in range(steps):
        loss = loss_at(step, True)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return {"device": _device_name(device), "bf16_losses_finite": bool(np.all(np.isfinite(losses))),
            "first_loss": losses[0], "last_loss": losses[-1], "steps": steps, "batch": batch_size,
            "resolution": resolution, "initial_loss_fp32": fp32, "initial_loss_bf16": bf16}


MEASURES = {"environment": (measure_environment, lambda: None), "nrc": (measure_nrc, resolve_nrc),
            "odin-bf16": (measure_odin_bf16, resolve_odin_bf16)}


def resolve(name: str) -> None:
    """Raises when measurement ``name`` would not run (an API moved or changed its parameters)."""
    MEASURES[name][1]()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", nargs="?", default="environment", choices=sorted(MEASURES))
    ap.add_argument("--seconds", type=float, default=150.0, help="NRC training wall clock")
    ap.add_argument("--dists", default="", help="distributions whose installed versions to report (environment)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true", help="tiny sizes: a smoke run of this code on the CPU")
    args = ap.parse_args()
    if args.name == "environment":
        result = measure_environment([d for d in args.dists.split(",") if d])
    elif args.name == "nrc":
        result = measure_nrc(args.seconds, args.device, args.small)
    else:
        result = measure_odin_bf16(args.device, args.small)
    print(RESULT_TAG + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
