"""Does Odin follow the pose?  Train on a family of synthetic rooms, evaluate on held-out rooms.

    python bench/odin_quality.py --out bench_out/odin_quality               # the 30-minute CPU run
    python bench/odin_quality.py --out /tmp/oq --rooms 3 --minutes 2 --eval-pairs 16   # a smoke run

Every number comes from this run, on pairs of rooms that training never saw (split by video: each
room is its own video):

* odin          the model's view at the requested pose (EMA weights, DDIM, guidance);
* copy-source   the source image as the prediction;
* pose-zeroed   the same model and noise with the pose replaced by "no motion" (R = I, t = 0):
                how much of odin's score comes from using the pose;
* plane-warp    the source reprojected over a plane at its robust depth with the requested pose:
                the geometric input Odin is given (model.reproject_source), so odin minus plane-warp
                is what the network adds;
* depth-warp    the source warped with the exact GT depth and pose (pixels the source does not
                see keep the source's own pixel);
* pose-following correspondence/'s two-view estimator between the source and the generated view
                (both upsampled 4x so that SIFT finds features), its rotation error to the requested
                rotation; the same on the true targets is the estimator's floor.

Writes OUT/curve.png (training loss), OUT/grid.png (source | depth-warp | pose-zeroed | odin | target),
OUT/results.json, and ends with the line
``odin <p> dB; copy-source <c> dB; pose-zeroed <z> dB; depth-warp <w> dB; pose-following median <e> deg (<f>% estimated)``.
Re-running with the same --out reuses the worlds and pairs and resumes the training.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

# This file is named like the package it measures: put the repository, not bench/, first on the path.
REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

from ingest.image_metrics import psnr, ssim  # noqa: E402
from ingest.media import image_grid, save_png  # noqa: E402
from odin.conditioning import resize_intrinsics  # noqa: E402
from odin.data import collate, intrinsics_after_load, pair_samples, tensor_image, to_rgb_square  # noqa: E402
from odin.evaluate import gt_depth_warp, pose_errors, two_view_pose  # noqa: E402
from odin.pipeline import ViewCondition  # noqa: E402

UPSAMPLE = 4  # pose estimation runs on 4x upsampled images: SIFT finds too few features at 48 px


def make_rooms(out: Path, rooms: int, pairs_per_room: int, resolution: int, seconds: float):
    """Worlds room0..roomN-1 (different seeds: different layouts and textures) and their GT pairs."""
    from correspondence.pairs_io import done_videos
    from correspondence.synthetic_pairs import synthetic_gt_pairs
    from ingest.synth import SynthConfig, SyntheticWorld, generate

    worlds = {}
    for k in range(rooms):
        root = out / "worlds" / f"room{k}"
        world = SyntheticWorld(root) if (root / "cameras.json").exists() else generate(
            root, SynthConfig(seconds=seconds, fps=5.0, width=512, seed=1000 + k), progress=False)
        video_id = f"synthetic-{root.name}"
        if video_id not in done_videos(out / "pairs"):
            synthetic_gt_pairs(world, out / "pairs", pairs_per_room, view_size=resolution, seed=k, max_frame_gap=5)
        worlds[video_id] = world
    return worlds


def _pose_following(src: np.ndarray, img: np.ndarray, sample, res: int) -> tuple[float, float]:
    import cv2

    big = res * UPSAMPLE
    up = [cv2.resize(x, (big, big), interpolation=cv2.INTER_CUBIC) for x in (src, img)]
    K_src = resize_intrinsics(intrinsics_after_load(sample.K_src, res), big, big)
    K_tgt = resize_intrinsics(intrinsics_after_load(sample.K_tgt, res), big, big)
    return pose_errors(two_view_pose(up[0], up[1], K_src, K_tgt), sample.R, sample.t)


def evaluate_baselines(pipe, pairs_dir, val_ids, worlds, max_pairs: int, steps: int, guidance: float,
                       batch_size: int = 16) -> tuple[dict, list]:
    """Per-pair metrics of odin and the three baselines, plus grid rows."""
    res, work = pipe.resolution, pipe.work_resolution
    metrics: dict[str, list[float]] = {}
    rows, samples = [], pair_samples(pairs_dir, val_ids)
    done = 0
    while done < max_pairs:
        chunk = [s for _, s in zip(range(min(batch_size, max_pairs - done)), samples)]
        if not chunk:
            break
        batch = collate(chunk, res, work, pairs_dir)
        scale = torch.exp(batch.pose[:, -1].double())
        posed = ViewCondition.from_batch(batch)
        b = len(chunk)
        zeroed = ViewCondition(batch.source, torch.eye(3, dtype=torch.float64).expand(b, 3, 3),
                               torch.zeros(b, 3, dtype=torch.float64), scale)
        Ks = [intrinsics_after_load(s.K_tgt, work) for s in chunk]
        outputs = {}
        for name, cond in (("odin", posed), ("pose-zeroed", zeroed)):
            gen = torch.Generator().manual_seed(done)  # the same noise for both: only the pose differs
            outputs[name] = pipe([cond], Ks, steps=steps, guidance=guidance, generator=gen)[0]
        for i, s in enumerate(chunk):
            src, tgt = tensor_image(batch.source[i]), tensor_image(batch.target[i])
            images = {"odin": tensor_image(outputs["odin"][i]), "pose-zeroed": tensor_image(outputs["pose-zeroed"][i]),
                      "copy-source": src, "plane-warp": tensor_image(batch.reprojected[i]), "depth-warp": to_rgb_square(gt_depth_warp(worlds[s.record.video_id], s), res)[0]}
            for name, img in images.items():
                metrics.setdefault(f"psnr/{name}", []).append(psnr(img, tgt))
                metrics.setdefault(f"ssim/{name}", []).append(ssim(img, tgt))
            for name, img in (("odin", images["odin"]), ("target", tgt)):
                rot, trans = _pose_following(src, img, s, res)
                metrics.setdefault(f"rot_err/{name}", []).append(rot)
                metrics.setdefault(f"trans_err/{name}", []).append(trans)
            if len(rows) < 8:
                rows.append([src, images["depth-warp"], images["pose-zeroed"], images["odin"], tgt])
        done += b
    return metrics, rows


def summarise(metrics: dict) -> dict:
    out = {}
    for key, values in metrics.items():
        arr = np.asarray(values, np.float64)
        ok = arr[np.isfinite(arr)]
        out[key] = {"mean": float(ok.mean()) if ok.size else None, "median": float(np.median(ok)) if ok.size else None,
                    "estimated": float(ok.size / max(arr.size, 1))}
    return out


def write_curve(run: Path, path: Path) -> None:
    from nrc.plots import line_plot

    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    series = {"loss": ([r["step"] for r in log], [r["loss"] for r in log]),
              "mse": ([r["step"] for r in log], [r["mse"] for r in log])}
    save_png(path, line_plot(series, "Odin training (motion-masked loss, denoiser MSE) vs step"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench_out/odin_quality")
    p.add_argument("--rooms", type=int, default=8, help="synthetic rooms (one video each)")
    p.add_argument("--val-rooms", type=int, default=2, help="rooms held out for evaluation")
    p.add_argument("--pairs-per-room", type=int, default=150)
    p.add_argument("--seconds", type=float, default=8.0, help="length of each room's camera path")
    p.add_argument("--resolution", type=int, default=48)
    p.add_argument("--minutes", type=float, default=30.0, help="training wall-clock budget")
    p.add_argument("--eval-pairs", type=int, default=64)
    p.add_argument("--steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from odin.config import cpu_config
    from odin.pipeline import load_pipeline
    from odin.splits import load_split
    from odin.trainer import train

    out = Path(args.out)
    started = time.monotonic()
    worlds = make_rooms(out, args.rooms, args.pairs_per_room, args.resolution, args.seconds)
    cfg = cpu_config(args.resolution)
    cfg.data.split_by, cfg.data.val_fraction = "video", args.val_rooms / args.rooms  # held-out rooms
    cfg.train.max_minutes = args.minutes
    split = load_split(out / "pairs", cfg.data.split_by, cfg.data.val_fraction)
    print(f"odin quality: {len(worlds)} rooms, {split.summary()}; data ready in {time.monotonic() - started:.0f} s",
          flush=True)
    t0 = time.monotonic()
    train(out / "pairs", out / "run", cfg, progress=False)
    step = json.loads((out / "run" / "checkpoints" / "latest.json").read_text())["step"]
    print(f"odin quality: trained to step {step} ({time.monotonic() - t0:.0f} s in this invocation)", flush=True)
    pipe, _ = load_pipeline(out / "run", "cpu")
    metrics, rows = evaluate_baselines(pipe, out / "pairs", split.val, worlds, args.eval_pairs, args.steps,
                                       args.guidance)
    report = summarise(metrics)
    n = len(metrics["psnr/odin"])
    report.update(pairs=n, step=step, args=vars(args))
    (out / "results.json").write_text(json.dumps(report, indent=2))
    save_png(out / "grid.png", image_grid(rows))
    write_curve(out / "run", out / "curve.png")
    print(f"held-out pairs: {n} (rooms never trained on); columns of grid.png: source | depth-warp | pose-zeroed "
          f"| odin | target")
    print(f"{'':14s} {'PSNR dB':>8s} {'SSIM':>6s}")
    for name in ("odin", "copy-source", "pose-zeroed", "plane-warp", "depth-warp"):
        print(f"{name:14s} {report[f'psnr/{name}']['mean']:8.2f} {report[f'ssim/{name}']['mean']:6.3f}")
    for name in ("odin", "target"):
        r, t = report[f"rot_err/{name}"], report[f"trans_err/{name}"]
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        print(f"pose from source vs {name:6s}: rotation median {fmt(r['median'])} deg, translation direction "
              f"median {fmt(t['median'])} deg, estimated on {100 * r['estimated']:.0f}% of pairs")
    rot = report["rot_err/odin"]
    median = "nan" if rot["median"] is None else f"{rot['median']:.1f}"
    print(f"odin {report['psnr/odin']['mean']:.2f} dB; copy-source {report['psnr/copy-source']['mean']:.2f} dB; "
          f"pose-zeroed {report['psnr/pose-zeroed']['mean']:.2f} dB; depth-warp {report['psnr/depth-warp']['mean']:.2f} dB; "
          f"pose-following median {median} deg ({100 * rot['estimated']:.0f}% estimated)")


if __name__ == "__main__":
    main()
