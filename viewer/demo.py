"""`odin demo`: the whole chain on one video, through the same commands a user runs.

synth → ingest → mine → reconstruct (GT poses if SfM fails on the synthetic world, said
loudly) → nrc fit → nrc eval → flythrough MP4 → mesh → a short Odin training on the mined
pairs → Odin's held-out evaluation against copying the source → an Odin trajectory. Each stage is skipped when its output already exists, so a
killed demo resumes where it stopped.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from correspondence.nerfstudio import write_camera_path
from ingest import conventions as cv
from ingest.cli import build_parser
from ingest.errors import OdinError


@dataclass
class DemoSizes:
    """CPU sizes keep the whole demo under 15 minutes on 2 cores; GPU sizes are the full configs."""

    synth_seconds: float = 20.0
    synth_fps: float = 5.0
    synth_width: int = 512
    ingest_fps: float = 2.0
    view_size: int = 128
    window: int = 6
    sfm_frames: int = 24
    nrc_preset: str = "tiny"
    nrc_seconds: float = 150.0
    nrc_height: int = 48
    # The smallest run measured to beat copying the source on the demo's held-out pairs: the CPU
    # config at 32 px for 5 minutes (the tiny config after 2 minutes scored 0.8 dB below it).
    odin_minutes: float = 5.0
    odin_resolution: int = 32
    odin_eval_pairs: int = 32  # held-out pairs (the end of the video in time) Odin is scored on
    render_height: int = 48
    render_frames: int = 24
    mesh_resolution: int = 64
    video_width: int = 768  # equirect width a user's video is posed at (real footage needs more than the world)
    video_frames: int = 36  # a user's clip is sampled at the fps that gives about this many frames

    @classmethod
    def gpu(cls) -> "DemoSizes":
        return cls(synth_seconds=40.0, synth_fps=10.0, synth_width=1024, ingest_fps=2.0, view_size=256, window=20,
                   sfm_frames=80, nrc_preset="gpu", nrc_seconds=300.0, nrc_height=256, odin_minutes=20.0,
                   odin_resolution=128, render_height=512, render_frames=96, mesh_resolution=256)


def _stage(name: str, done: Path, argv: list[str], log: list[str], before=None) -> None:
    if done.exists():
        print(f"[demo] {name}: already done ({done})", flush=True)
        return
    if before is not None:
        before()
    print(f"[demo] {name}: odin {' '.join(argv)}", flush=True)
    start = time.monotonic()
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except OdinError as e:  # the stage's own one line, with where the demo stopped
        raise OdinError(f"{e.problem} (demo stage '{name}'; fix it and re-run to resume)", e.path) from e
    log.append(f"{name}: {time.monotonic() - start:.0f} s")


def flythrough_camera_path(scene_path: Path, n_frames: int) -> list[np.ndarray]:
    """Along the recorded cameras (smoothed, level, small sways), never an orbit outside the walls."""
    from correspondence.flythrough import median_scene_depth, recorded_trajectory, trajectory_camera_path
    from correspondence.nerfstudio import load_scene

    scene = load_scene(scene_path)
    cameras = recorded_trajectory(scene)
    points_ply = (scene_path.parent if scene_path.suffix == ".json" else scene_path) / "points.ply"
    points = None
    if points_ply.exists():
        import trimesh

        points = np.asarray(trimesh.load(points_ply).vertices, np.float64)
    depth = median_scene_depth(points, np.stack([T[:3, 3] for T in cameras]))
    return trajectory_camera_path(cameras, n_frames, scene_depth=depth)


def _claim_out(out: Path, inputs: dict) -> None:
    """A demo folder belongs to one set of inputs: resuming it with others would report the old results."""
    from ingest.atomic import atomic_write_json

    stamp = out / "demo.json"
    if stamp.exists():
        try:
            before = json.loads(stamp.read_text())
        except (OSError, json.JSONDecodeError):
            raise OdinError("unreadable demo.json; remove the folder or choose another --out", stamp) from None
        if before != inputs:
            raise OdinError(f"this folder holds a demo of other inputs ({before}); choose another --out", out)
        return
    if any(out.iterdir()):
        raise OdinError("--out is not empty and holds no demo; choose another --out", out)
    atomic_write_json(stamp, inputs)


def _user_video_fps(video: Path, frames: int) -> float:
    from ingest.probe import probe

    duration = probe(video).duration
    return float(np.clip(frames / max(duration, 1e-3), 1.0, 10.0))


def run_demo(out: str | Path, video: str | Path | None = None, gpu: bool = False) -> dict:
    out = Path(out)
    if video is not None:
        from ingest.layout import check_video

        if not Path(video).is_file():
            raise OdinError("video not found", video)
        check_video(video)  # an unusable file is refused before the demo folder is made
    out.mkdir(parents=True, exist_ok=True)
    _claim_out(out, {"video": None if video is None else str(Path(video).resolve()), "gpu": bool(gpu)})
    sizes = DemoSizes.gpu() if gpu else DemoSizes()
    device = [] if gpu else ["--device", "cpu"]
    log: list[str] = []
    world = None
    if video is None:
        world = out / "world"
        _stage("synth", world / "scene.json", ["synth", "--out", str(world), "--seconds", str(sizes.synth_seconds),
                                               "--fps", str(sizes.synth_fps), "--width", str(sizes.synth_width),
                                               "--moving-object"], log)
        video = world / "video.mp4"
    video = Path(video)
    if not video.exists():
        raise OdinError("video not found", video)
    dataset, pairs = out / "dataset", out / "pairs"
    fps = sizes.ingest_fps if world is not None else _user_video_fps(video, sizes.video_frames)
    width = sizes.synth_width if world is not None else sizes.video_width
    _stage("ingest", dataset / "videos.parquet",
           ["ingest", str(video), "--out", str(dataset), "--fps", f"{fps:.3f}",
            "--equirect-width", str(width), "--view-size", str(sizes.view_size)], log)
    from ingest.dataset import Dataset

    video_ids = Dataset(dataset).video_ids()
    if not video_ids:
        raise OdinError("ingest kept no usable video (see the ingest summary above)", video)
    _stage("mine", pairs / "pairs.parquet", ["mine", str(dataset), "--out", str(pairs), "--window", str(sizes.window),
                                            "--analysis-width", str(width)], log)
    recon = out / "reconstruction"
    scene = recon / "transforms.json"
    if not scene.exists():
        try:
            _stage("reconstruct", scene, ["reconstruct", str(dataset), "--video", video_ids[0], "--out", str(recon),
                                          "--max-frames", str(sizes.sfm_frames if world is not None else sizes.video_frames),
                                          "--pairs", str(pairs)], log)
        except OdinError:
            if world is None:
                raise
    if not scene.exists():
        print("\n[demo] !!! SfM did not produce a reconstruction: falling back to the synthetic world's GT poses !!!\n",
              flush=True)
        scene = world
    run = out / "nrc_run"
    _stage("nrc fit", run / "checkpoint.safetensors", ["nrc", "fit", str(scene), "--out", str(run), "--preset",
                                                        sizes.nrc_preset, "--seconds", str(sizes.nrc_seconds),
                                                        "--height", str(sizes.nrc_height), *device], log)
    _stage("nrc eval", run / "eval" / "metrics.json", ["nrc", "eval", str(run), "--out", str(run / "eval"),
                                                        "--max-views", "4", *device], log)
    camera_path = out / "camera_path.json"
    if not camera_path.exists():
        write_camera_path(camera_path, flythrough_camera_path(Path(scene), sizes.render_frames),
                          width=sizes.render_height * 4 // 3, height=sizes.render_height, fov_y_deg=60.0, fps=12,
                          scene=scene)
    flythrough = out / "flythrough.mp4"
    _stage("render", flythrough, ["nrc", "render", str(run), "--camera-path", str(camera_path), "--out", str(flythrough),
                                  *device], log)
    mesh = out / "mesh.ply"
    _stage("export mesh", mesh, ["nrc", "export-mesh", str(run), "--out", str(mesh), "--resolution", str(sizes.mesh_resolution), *device], log)
    odin_run = out / "odin_run"
    _stage("odin train", odin_run / "checkpoints" / "latest.json",
           ["train", str(pairs), "--out", str(odin_run), "--resolution", str(sizes.odin_resolution),
            "--max-minutes", str(sizes.odin_minutes), "--max-steps", "100000"] + ([] if gpu else ["--cpu", "--quiet"]), log)
    odin_eval = odin_run / "eval"
    _stage("odin eval", odin_eval / "eval.json",
           ["eval", str(odin_run), str(pairs), "--out", str(odin_eval), "--max-pairs", str(sizes.odin_eval_pairs),
            "--steps", "10" if not gpu else "50", *device] + ([] if gpu else ["--no-pose-following"]), log)
    imagined = out / "odin_trajectory"
    source = out / "odin_source.png"
    if not source.exists():
        from ingest.media import save_png
        from viewer.backends import NrcBackend, colorize

        nrc = NrcBackend(run, device="cuda" if gpu else "cpu", preview_grid=0)
        K = cv.Intrinsics.from_fov(sizes.odin_resolution * 2, sizes.odin_resolution * 2, 90.0)
        save_png(source, colorize(nrc.render(nrc.initial_pose(), K, "rgb"), "rgb"))
    _stage("odin generate", imagined / "trajectory.mp4",
           ["generate", "--run", str(odin_run), "--image", str(source), "--camera-path", str(out / "odin_path.json"),
            "--out", str(imagined), "--steps", "10" if not gpu else "50", *device], log,
           before=lambda: _write_odin_path(out / "odin_path.json", sizes.odin_resolution))
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    report = recon / "report.json"
    registered = json.loads(report.read_text()) if report.exists() else None
    return {"out": out, "scene": scene, "registered": registered, "nrc_run": run, "odin_run": odin_run, "flythrough": flythrough, "mesh": mesh,
            "camera_path": camera_path, "pairs": pairs, "odin_trajectory": imagined / "trajectory.mp4",
            "timings": log, "nrc_metrics": metrics, "odin_eval": json.loads((odin_eval / "eval.json").read_text())}


def _write_odin_path(path: Path, resolution: int) -> None:
    """A short turn-and-step path starting at the source camera (identity), in Odin's units."""
    poses = [cv.make_pose(cv.rotation_from_ypr(np.float64(math.radians(4 * k)), np.float64(0), np.float64(0)),
                          np.array([0.03 * k, 0.0, 0.05 * k])) for k in range(6)]
    write_camera_path(path, poses, width=resolution, height=resolution, fov_y_deg=90.0, fps=4)


def print_summary(result: dict) -> None:
    scenes = result["nrc_metrics"].get("scenes", [])
    mean = scenes[0]["mean"] if scenes else {}
    print("\n=== Odin360 demo: done ===")
    for name in ("scene", "pairs", "nrc_run", "flythrough", "mesh", "odin_run", "odin_trajectory"):
        print(f"  {name:16s} {result[name]}")
    report = result.get("registered")
    if report:
        print(f"  registered:   {report['registered']}/{report['frames']} frames of shot {report['shot']} "
              f"({report['route']} route, mean reprojection error {report['mean_reprojection_px'] or float('nan'):.2f} px)")
    else:
        print("  registered:   SfM failed; the synthetic world's GT poses were used")
    print("  NRC held-out: " + ", ".join(f"{k} {v:.3f}" for k, v in mean.items() if isinstance(v, (int, float))))
    odin = result["odin_eval"]
    print(f"  Odin held-out: PSNR {odin['psnr']['mean']:.2f} dB generated vs {odin['psnr_copy']['mean']:.2f} dB copying "
          f"the source, {odin['psnr_plane']['mean']:.2f} dB its plane reprojection ({odin['pairs']} pairs held out "
          f"by {odin['split_by']}, {odin['steps']} steps)")
    if odin["psnr"]["mean"] < odin["psnr_copy"]["mean"]:
        trained_on = len(json.loads((Path(result["odin_run"]) / "split.json").read_text())["train"])
        print(f"  !! Odin does not beat copying the source here: one clip gave it {trained_on} training pairs. "
              "Train it on a collection (odin ingest DIR, odin mine, odin train --cpu or on a GPU).")
    print("  stage times:  " + "; ".join(result["timings"]))
    print(f"\nOpen the viewer:  odin view {result['nrc_run']} --odin {result['odin_run']}   (then open the URL it prints: it carries an access token)")
