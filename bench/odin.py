"""Odin speed: training samples/s and generated images/s, measured in this run.

    python bench/odin.py                      # every available device, 128 px, 50 sampling steps
    python bench/odin.py --device cpu --train-steps 5 --gen-batch 1
    python bench/odin.py --config cpu --resolution 48     # the CPU quality config (bench/odin_quality.py)

Training is timed on in-memory batches (model, loss, backward, optimizer, EMA: no data loading);
generation is DDIM with classifier-free guidance (two UNet passes per step).  The model is the
default OdinConfig (or, with --config cpu, odin.config.cpu_config) at --resolution.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

# This file is named like the package it measures: put the repository, not bench/, first on the path.
REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

from ingest import conventions as cv  # noqa: E402
from odin.conditioning import plane_reprojection, plucker_maps, pose_vector  # noqa: E402
from odin.config import OdinConfig  # noqa: E402
from odin.data import PairBatch  # noqa: E402
from odin.models import PixelCodec, new_denoiser  # noqa: E402
from odin.pipeline import OdinPipeline, ViewCondition  # noqa: E402
from odin.schedulers import training_scheduler  # noqa: E402
from odin.training import diffusion_loss  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_batch(batch: int, resolution: int, device) -> PairBatch:
    R = cv.rotation_from_ypr(torch.rand(batch, dtype=torch.float64) * 0.5, torch.zeros(batch, dtype=torch.float64),
                             torch.zeros(batch, dtype=torch.float64))
    t = torch.randn(batch, 3, dtype=torch.float64) * 0.1
    K = cv.Intrinsics.from_fov(resolution, resolution, 90)
    source = torch.rand(batch, 3, resolution, resolution) * 2 - 1
    return PairBatch(source=source, reprojected=plane_reprojection(source, R, t, [K] * batch, [K] * batch),
                     target=torch.rand(batch, 3, resolution, resolution) * 2 - 1,
                     motion=torch.zeros(batch, 1, resolution, resolution), has_motion=torch.zeros(batch, dtype=torch.bool),
                     pose=pose_vector(R, t, torch.ones(batch, dtype=torch.float64)), plucker=plucker_maps(R, t, [K] * batch),
                     R=R.float(), t=t.float(), pair_ids=[str(i) for i in range(batch)]).to(device)


def bench_training(cfg: OdinConfig, device, batch: int, steps: int, bf16: bool) -> float:
    from diffusers.training_utils import EMAModel

    model, _ = new_denoiser(cfg.model, PixelCodec())
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ema = EMAModel(model.parameters(), decay=0.999)
    sched = training_scheduler(cfg.diffusion)
    data = random_batch(batch, cfg.model.resolution, device)
    gen = torch.Generator(device).manual_seed(0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def step():
        with autocast:
            loss, _ = diffusion_loss(model, PixelCodec(), sched, data, cfg.diffusion, gen)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.step(model.parameters())

    for _ in range(2):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - start)


def bench_generation(cfg: OdinConfig, device, batch: int, steps: int, dtype) -> float:
    model, _ = new_denoiser(cfg.model, PixelCodec())
    pipe = OdinPipeline.assemble(model, PixelCodec(), cfg.diffusion, cfg.model.resolution, device, dtype)
    data = random_batch(batch, cfg.model.resolution, "cpu")
    cond = ViewCondition.from_batch(data)
    pipe([cond], steps=2)  # warm-up
    _sync(device)
    start = time.perf_counter()
    pipe([cond], steps=steps, sampler="ddim", guidance=2.0, generator=torch.Generator().manual_seed(0))
    _sync(device)
    return batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", action="append", help="cpu / cuda (repeatable; default: cpu and cuda if present)")
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--steps", type=int, default=50, help="sampling steps")
    p.add_argument("--train-batch", type=int, help="default: 64 on GPU, 4 on CPU")
    p.add_argument("--train-steps", type=int, help="timed optimizer steps (default: 20 on GPU, 3 on CPU)")
    p.add_argument("--gen-batch", type=int, help="default: 64 on GPU, 1 on CPU")
    p.add_argument("--threads", type=int, default=2, help="CPU threads")
    p.add_argument("--config", choices=("default", "cpu"), default="default",
                   help="default: OdinConfig(); cpu: the CPU quality config")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    devices = args.device or (["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"])
    from odin.config import cpu_config

    cfg = cpu_config(args.resolution) if args.config == "cpu" else OdinConfig()
    cfg.model.resolution = args.resolution
    print(f"odin bench: {args.config} model at {args.resolution} px, {args.steps} DDIM steps with guidance")
    for name in devices:
        device = torch.device(name)
        gpu = device.type == "cuda"
        label = torch.cuda.get_device_name(device) if gpu else f"CPU ({args.threads} threads)"
        train_batch = args.train_batch or (64 if gpu else 4)
        train_steps = args.train_steps or (20 if gpu else 3)
        gen_batch = args.gen_batch or (64 if gpu else 1)
        for bf16 in ([True, False] if gpu else [False]):
            rate = bench_training(cfg, device, train_batch, train_steps, bf16)
            print(f"  {label}: training {rate:8.2f} samples/s  (batch {train_batch}, {'bf16' if bf16 else 'fp32'})")
        dtype = torch.bfloat16 if gpu else torch.float32
        rate = bench_generation(cfg, device, gen_batch, args.steps, dtype)
        print(f"  {label}: generation {rate:8.3f} images/s  (batch {gen_batch}, {str(dtype)[6:]})")


if __name__ == "__main__":
    main()
