"""Benchmark of pair mining: accuracy on the synthetic world, pycolmap side by side, throughput.

    .venv/bin/python bench/mine.py [--frames 24] [--width 512] [--window 4] [--out /tmp/bench_mine]

Prints (all measured in this run):
  * our two-view poses on the window pairs of a synthetic video (lossless renders, GT known):
    median / p90 rotation and translation-direction error, precision (both < 5°), recall
    (correct accepted pairs / window pairs; every window pair of the room is co-visible);
  * pycolmap's pipeline (SIFT + exhaustive matching + incremental mapping) on the same frames:
    the same errors on the same pairs, wall and CPU time (all threads), and our speed-up;
  * our matcher vs OpenCV BFMatcher.knnMatch (both directions) on the same descriptors;
  * throughput of `mine_dataset` on real footage (../shared/data/video360), pairs/s per core.
Error histograms are written as PNG beside the outputs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# bench/ingest.py would shadow the ingest package when this file runs as a script.
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

import cv2  # before pycolmap (see correspondence.reconstruct)
import numpy as np

from correspondence.evaluate import PoseErrors, direction_error_deg
from correspondence.features import FeatureConfig, extract_features
from correspondence.matching import mutual_ratio_matches
from correspondence.mine import MineConfig, window_pairs
from correspondence.twoview import TwoViewConfig, two_view_from_features
from ingest import conventions as cv
from ingest.synth import CameraPathConfig, SynthConfig, generate


def histogram_png(path: Path, values: dict[str, np.ndarray], max_deg: float = 5.0, bins: int = 25) -> Path:
    """One row of bars per series (counts of errors in [0, max_deg], last bin = overflow)."""
    rows = []
    for name, v in values.items():
        counts = np.histogram(np.minimum(v, max_deg * 0.9999), bins=bins, range=(0, max_deg))[0] if len(v) else np.zeros(bins)
        img = np.full((140, bins * 16 + 20, 3), 255, np.uint8)
        top = max(int(counts.max()), 1)
        for k, c in enumerate(counts):
            x = 10 + k * 16
            cv2.rectangle(img, (x, 120 - int(100 * c / top)), (x + 12, 120), (60, 90, 200), -1)
        cv2.putText(img, f"{name} (0-{max_deg:g} deg, n={len(v)})", (10, 135), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        rows.append(img)
    ok, buf = cv2.imencode(".png", np.concatenate(rows, axis=0))
    path.write_bytes(buf.tobytes())
    return path


def errors_on_pairs(poses: dict[tuple[int, int], np.ndarray], gt: list[np.ndarray]) -> PoseErrors:
    rot, trans = [], []
    for (i, j), T in poses.items():
        T_gt = cv.relative_pose(gt[i], gt[j])
        rot.append(float(cv.rotation_angle_deg(T[:3, :3], T_gt[:3, :3])))
        trans.append(direction_error_deg(T[:3, 3], T_gt[:3, 3]))
    return PoseErrors(np.array(rot), np.array(trans))


def ours(images: list[np.ndarray], pairs, config: TwoViewConfig, features: FeatureConfig) -> tuple[dict, dict]:
    feats = [extract_features(im, features) for im in images]
    poses, reasons = {}, {}
    for i, j in pairs:
        r = two_view_from_features(feats[i], feats[j], config)
        reasons[r.status] = reasons.get(r.status, 0) + 1
        if r.accepted:
            poses[(i, j)] = r.pose()
    return poses, reasons


def timed(fn, *args):
    """(result, wall seconds, CPU seconds of this process: all its threads, pycolmap's included)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def pycolmap_pipeline(images: list[np.ndarray], pairs, work: Path) -> dict:
    image_dir = work / "images"  # written by the caller, outside the timing
    import pycolmap

    db = work / "database.db"
    db.unlink(missing_ok=True)
    (work / "sparse").mkdir(exist_ok=True)
    # pycolmap's own pipeline at its defaults: SIFT, exhaustive matching, incremental mapping.
    pycolmap.extract_features(db, image_dir, camera_mode=pycolmap.CameraMode.SINGLE, device=pycolmap.Device.cpu,
                              reader_options=pycolmap.ImageReaderOptions(camera_model="EQUIRECTANGULAR"))
    pycolmap.match_exhaustive(db, device=pycolmap.Device.cpu)
    maps = pycolmap.incremental_mapping(db, image_dir, work / "sparse", pycolmap.IncrementalPipelineOptions())
    rec = max(maps.values(), key=lambda r: r.num_reg_images()) if maps else None
    c2w = {}
    if rec is not None:
        for im in rec.images.values():
            if im.has_pose:
                c2w[int(Path(im.name).stem)] = cv.invert_pose(np.asarray(im.cam_from_world().matrix(), np.float64))
    return {(i, j): cv.relative_pose(c2w[i], c2w[j]) for i, j in pairs if i in c2w and j in c2w}


def matcher_speed(images: list[np.ndarray]) -> tuple[float, float]:
    a, b = extract_features(images[0]).descriptors, extract_features(images[1]).descriptors
    t0 = time.perf_counter()
    for _ in range(3):
        mutual_ratio_matches(a, b)
    ours_s = (time.perf_counter() - t0) / 3
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    t0 = time.perf_counter()
    for _ in range(3):
        matcher.knnMatch(a, b, k=2)
        matcher.knnMatch(b, a, k=2)
    return ours_s, (time.perf_counter() - t0) / 3


def report(name: str, e: PoseErrors, n_gt: int) -> None:
    r = e.report(n_gt)
    if not r["pairs"]:
        print(f"  {name:9s} no pairs")
        return
    print(f"  {name:9s} pairs {r['pairs']:4d}  rot median {r['rotation_median_deg']:.3f}° p90 {r['rotation_p90_deg']:.3f}°  "
          f"t-dir median {r['translation_median_deg']:.3f}° p90 {r['translation_p90_deg']:.3f}°  "
          f"precision {r['precision']:.3f}  recall {r['recall']:.3f}")


def real_throughput(out: Path, window: int, seconds: float) -> None:
    video = REPO.parent / "shared" / "data" / "video360" / "car_overpass-clip.mp4"
    if not video.exists():
        print(f"real footage: skipped ({video} not found)")
        return
    from correspondence.parallel import mine_dataset
    from ingest.cli import main as odin

    ds = out / "real_ds"
    odin(["ingest", str(video), "--out", str(ds), "--fps", str(seconds), "--equirect-width", "1024",
          "--views", "8", "--view-size", "256", "--no-filter", "--no-progress"])
    start = time.perf_counter()
    summaries = mine_dataset(ds, out / "real_pairs", MineConfig(window=window), workers=1, progress=False)
    wall = time.perf_counter() - start
    attempted = sum(s.attempted for s in summaries)
    for s in summaries:
        print("  " + s.line())
    print(f"real footage ({video.name}, 1024x512, window {window}): {attempted} pairs in {wall:.1f} s on 1 worker "
          f"= {attempted / max(wall, 1e-9):.2f} pairs/s per core (incl. features, views, shards)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--real-fps", type=float, default=5.0, help="ingest rate for the real-footage throughput")
    ap.add_argument("--features-per-face", type=int, default=FeatureConfig().max_features_per_face)
    ap.add_argument("--no-real", action="store_true", help="skip the real-footage throughput")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_mine_"))
    out.mkdir(parents=True, exist_ok=True)
    world = generate(out / "world", SynthConfig(seconds=args.frames / args.fps, fps=args.fps, width=args.width, seed=0,
                                                path=CameraPathConfig()), progress=False)
    images = [world.render(k).rgb for k in range(len(world))]
    pairs = window_pairs(len(images), args.window)
    print(f"synthetic: {len(images)} frames {args.width}x{args.width // 2}, window {args.window}: {len(pairs)} pairs")

    feature_config = FeatureConfig(max_features_per_face=args.features_per_face)
    (our_poses, reasons), our_s, our_cpu = timed(ours, images, pairs, TwoViewConfig(), feature_config)
    our_err = errors_on_pairs(our_poses, list(world.poses))
    report("ours", our_err, len(pairs))
    print(f"            outcomes {reasons}; {our_s:.1f} s")
    work = out / "pycolmap"
    shutil.rmtree(work, ignore_errors=True)
    image_dir = work / "images"  # written before the clock starts: both sides start from pixels in memory
    image_dir.mkdir(parents=True)
    for k, im in enumerate(images):
        cv2.imwrite(str(image_dir / f"{k:06d}.png"), im[..., ::-1])
    col_poses, col_s, col_cpu = timed(pycolmap_pipeline, images, pairs, work)
    col_err = errors_on_pairs(col_poses, list(world.poses))
    report("pycolmap", col_err, len(pairs))
    common = sorted(set(our_poses) & set(col_poses))
    if common:
        a = errors_on_pairs({k: our_poses[k] for k in common}, list(world.poses))
        b = errors_on_pairs({k: col_poses[k] for k in common}, list(world.poses))
        print(f"  same {len(common)} pairs: rot median ours {np.median(a.rotation_deg):.3f}° vs pycolmap "
              f"{np.median(b.rotation_deg):.3f}°; t-dir median ours {np.median(a.translation_deg):.3f}° vs "
              f"{np.median(b.translation_deg):.3f}°")
    print(f"  wall time: ours {our_s:.1f} s, pycolmap {col_s:.1f} s -> ours is {col_s / max(our_s, 1e-9):.2f}x faster "
          "(pycolmap also solves the global reconstruction)")
    print(f"  CPU time:  ours {our_cpu:.1f} s, pycolmap {col_cpu:.1f} s -> ours is {col_cpu / max(our_cpu, 1e-9):.2f}x "
          f"cheaper (ours: 1 OpenCV thread; pycolmap: every core, {os.cpu_count()})")
    png = histogram_png(out / "pose_errors.png", {"ours rot": our_err.rotation_deg, "ours t-dir": our_err.translation_deg,
                                                  "pycolmap rot": col_err.rotation_deg, "pycolmap t-dir": col_err.translation_deg})
    print(f"  histograms: {png}")
    ours_m, bf_m = matcher_speed(images)
    print(f"matcher: ours {ours_m * 1e3:.0f} ms vs BFMatcher.knnMatch x2 {bf_m * 1e3:.0f} ms -> {bf_m / ours_m:.2f}x")
    if not args.no_real:
        real_throughput(out, args.window, args.real_fps)


if __name__ == "__main__":
    main()
