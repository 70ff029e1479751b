"""Benchmark of `odin reconstruct` against COLMAP's own 360° route, on the same frames, in one run.

    .venv/bin/python bench/reconstruct.py --clip FILE [--fps F] [--width W] [--max-frames N] [--quick] [--out DIR]
    .venv/bin/python bench/reconstruct.py --clip synthetic          # a forward-walking synthetic world with GT

A real clip is ingested (`odin ingest --fps F --equirect-width W`) and mined (`odin mine`) first, outside
the timing; then every variant of ours (route rig / equirect; with and without mining's seed pairs; each
way of keeping the rig out) and `pycolmap.panorama.reconstruct` with its defaults pose the same frames.
Rig handling: by default COLMAP drops matches that keep their pixel position (the stationary-match
filter); "mask-features" masks features with the clip's rig mask instead; "no-rig-handling" does neither.
Per variant: frames registered / total, mean reprojection error, wall and CPU time (all threads), and on
the synthetic world the median rotation and camera-centre errors after similarity alignment to GT.
Our default (route and mapper) comes first; the other mapper on the default route is the last of ours.
On real clips, "max/med step" (largest over median camera speed between registered frames) flags poses
that registered but sit off the path. A top-down trajectory PNG per variant is written to OUT. The last line compares our default with COLMAP's.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# bench/ingest.py would shadow the ingest package when this file runs as a script.
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "bench"]

import cv2  # before pycolmap (see correspondence.sfm)
import numpy as np

from correspondence.evaluate import trajectory_errors
from correspondence.reconstruct import ReconstructConfig, reconstruct_video, select_shot, subsample
from correspondence.sfm import SfmConfig, points_seen_per_frame, reprojection_errors
from correspondence.sfm_report import path_speeds, write_trajectory_png
from ingest import conventions as cv
from ingest.errors import OdinError


def step_ratio(c2w: dict, frames: list) -> float:
    """Largest over median camera speed between registered frames: about 1-2 for a vehicle or a walk; a
    pose that SfM put far off the path (registered, but wrong) shows as a large ratio."""
    index = {f.frame_id: k for k, f in enumerate(frames)}
    _, speed = path_speeds(frames, {index[i]: T for i, T in c2w.items()})
    return float(speed.max() / max(np.median(speed), 1e-12)) if len(speed) >= 2 else float("nan")


def timed(fn, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        result = fn(*args, **kwargs)
    except OdinError as e:  # no frames registered: the variant scores 0
        result = e
    return result, time.perf_counter() - wall, time.process_time() - cpu


def prepare_real(clip: Path, out: Path, fps: float, width: int):
    from correspondence.parallel import open_dataset
    from ingest.cli import main as odin

    dataset, pairs = out / "dataset", out / "dataset" / "pairs"
    if not (dataset / "videos.parquet").exists() and odin(["ingest", str(clip), "--out", str(dataset), "--fps", str(fps),
                                                           "--equirect-width", str(width), "--view-size", "128"]) != 0:
        raise SystemExit(f"{clip}: ingest failed")
    source = open_dataset(dataset)
    if not source.video_ids():
        raise SystemExit(f"{clip}: ingest kept no video (see {dataset / 'summary.json'})")
    if not (pairs / "pairs.parquet").exists() and odin(["mine", str(dataset), "--out", str(pairs), "--window", "8",
                                                        "--analysis-width", str(width)]) != 0:
        raise SystemExit(f"{clip}: mining failed")
    return source, source.video_ids()[0], pairs, None


def prepare_synthetic(out: Path, width: int):
    from correspondence.parallel import mine_source
    from correspondence.mine import MineConfig
    from correspondence.synthetic_source import SyntheticFrameSource
    from ingest.synth import CameraPathConfig, SynthConfig, generate

    world = generate(out / "world", SynthConfig(seconds=12.0, fps=2.0, width=width, seed=5,
                                                path=CameraPathConfig(heading="motion")), progress=False)
    source = SyntheticFrameSource(world, height=width // 2)
    pairs = out / "pairs"
    if not (pairs / "pairs.parquet").exists():
        mine_source(source, pairs, MineConfig(window=6, analysis_width=width), progress=False)
    gt = {f.frame_id: source.c2w(f.frame_id) for f in source.frames(source.video_id)}
    return source, source.video_id, pairs, gt


def run_panorama(frames: list, source, work: Path):
    """COLMAP's own 360° route at its defaults (sequential matching, overlapping virtual cameras, incremental)."""
    import pycolmap
    from pycolmap import panorama

    images = work / "panos"
    shutil.rmtree(work, ignore_errors=True)
    images.mkdir(parents=True)
    for k, f in enumerate(frames):
        cv2.imwrite(str(images / f"{k:06d}.jpg"), source.load_equirect(f.frame_id)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])

    def run():
        options = panorama.PanoramaReconstructionOptions(use_gpu=False, show_progress=False)
        panorama.reconstruct(images, work / "out", options)
        c2w = {}
        models = sorted((work / "out" / "sparse_equirectangular").glob("*"))
        best = max((pycolmap.Reconstruction(m) for m in models), key=lambda r: r.num_reg_images(), default=None)
        # The rule ours is held to: a posed frame counts only when it sees enough triangulated points.
        seen = points_seen_per_frame(best, {im.name: im.name for im in best.images.values()}) if best else {}
        for image in (best.images.values() if best else []):
            if image.has_pose and seen.get(image.name, 0) >= SfmConfig.min_frame_points:
                c2w[frames[int(Path(image.name).stem)].frame_id] = cv.invert_pose(
                    np.asarray(image.cam_from_world().matrix(), np.float64))
        errors = list(reprojection_errors(best).values()) if best else []  # the measure ours reports
        return c2w, (float(np.mean(errors)) if errors else float("nan"))

    (work / "out").mkdir()
    return timed(run)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", default="synthetic", help="a 360° video, or synthetic (the default)")
    ap.add_argument("--fps", type=float, default=4.0)
    ap.add_argument("--width", type=int, default=1024, help="equirect width the frames are posed at")
    ap.add_argument("--max-frames", type=int, default=60)
    ap.add_argument("--quick", action="store_true", help="only our default variant and pycolmap.panorama")
    ap.add_argument("--out", help="work folder (default: a temporary one); PNGs land here")
    args = ap.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_reconstruct_"))
    out.mkdir(parents=True, exist_ok=True)
    synthetic = args.clip == "synthetic"
    name = "synthetic" if synthetic else Path(args.clip).stem
    if not synthetic and not Path(args.clip).is_file():
        print(f"{args.clip}: not found", file=sys.stderr)
        return 2
    source, video_id, pairs, gt = prepare_synthetic(out, args.width) if synthetic else \
        prepare_real(Path(args.clip), out, args.fps, args.width)
    _, shot_frames = select_shot(source, video_id, None)
    frames = subsample(shot_frames, args.max_frames)
    m = len(frames)
    routes = [SfmConfig.route] + [r for r in ("rig", "equirect") if r != SfmConfig.route]  # the default first
    other_mapper = "incremental" if SfmConfig.mapper == "global" else "global"
    # Besides the default: without mining's seeds, with features masked by the rig mask instead of
    # COLMAP's stationary-match filter, with neither, and the other mapper.
    variants = [(routes[0], SfmConfig.mapper, True, "filter")] if args.quick else [
        (route, SfmConfig.mapper, seeds, rig) for route in routes
        for seeds, rig in ((True, "filter"), (False, "filter"), (True, "mask-features"), (True, "none"))
    ] + [(routes[0], other_mapper, True, "filter")]
    rows = []
    for route, mapper, seeds, rig in variants:
        label = (f"ours {route}{'' if mapper == SfmConfig.mapper else ' ' + mapper}{'' if seeds else ' no-seeds'}"
                 f"{'' if rig == 'filter' else ' ' + ('no-rig-handling' if rig == 'none' else rig)}")
        config = ReconstructConfig(max_frames=args.max_frames, use_mined_pairs=seeds, sfm=SfmConfig(
            route=route, mapper=mapper, mask_features=rig == "mask-features",
            filter_stationary_matches=None if rig == "filter" else False))
        run_dir = out / label.replace(" ", "_")
        shutil.rmtree(run_dir, ignore_errors=True)
        result, wall, cpu = timed(reconstruct_video, source, video_id, run_dir, config, pairs_dir=pairs,
                                  log=lambda *a: None)
        c2w = {} if isinstance(result, OdinError) else result.c2w
        error = float("nan") if isinstance(result, OdinError) else result.mean_reprojection_px
        if (run_dir / "trajectory.png").exists():
            shutil.copy(run_dir / "trajectory.png", out / f"{name}_{label.replace(' ', '_')}_trajectory.png")
        rows.append((label, c2w, error, wall, cpu))
    (c2w, error), wall, cpu = run_panorama(frames, source, out / "panorama")
    index = {f.frame_id: k for k, f in enumerate(frames)}
    write_trajectory_png(out / f"{name}_pycolmap_panorama_trajectory.png", frames,
                         {index[i]: T for i, T in c2w.items()}, title=f"{name}: pycolmap.panorama")
    rows.append(("pycolmap.panorama", c2w, error, wall, cpu))

    print(f"\n{name}: {m} frames (fps {args.fps:g}, width {args.width}); PNGs in {out}")
    header = f"{'variant':32s} {'registered':>10s} {'reproj px':>9s} {'wall s':>7s} {'CPU s':>7s} {'max/med step':>12s}"
    print(header + ("   rot err deg   centre err (of extent)" if gt else ""))
    for label, c2w, error, wall, cpu in rows:
        line = f"{label:32s} {len(c2w):>4d}/{m:<5d} {error:9.2f} {wall:7.1f} {cpu:7.1f} {step_ratio(c2w, frames):12.1f}"
        if gt:
            rot, centre = trajectory_errors(c2w, gt)
            line += f"   {rot:11.4f}   {centre:10.5f}"
        print(line)
    ours, theirs = rows[0], rows[-1]
    print(f"ours / pycolmap.panorama wall time: {ours[3] / max(theirs[3], 1e-9):.2f}x")
    print(f"{name}: ours {len(ours[1])}/{m} registered in {ours[3]:.1f} s; "
          f"pycolmap.panorama {len(theirs[1])}/{m} in {theirs[3]:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
