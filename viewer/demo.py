"""`odin demo`: the whole chain on one video, through the same commands a user runs.

synth → ingest → mine → reconstruct (GT poses if SfM fails on the synthetic world, said
loudly) → nrc fit → nrc eval → flythrough MP4 → mesh → a short Odin training on the mined
pairs → an Odin trajectory. Each stage is skipped when its output already exists, so a
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
from ingest.cli import main as odin_main
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
    odin_minutes: float = 2.0
    odin_resolution: int = 32
    render_height: int = 48
    render_frames: int = 24
    mesh_resolution: int = 64

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
    code = odin_main(argv)
    if code != 0:
        raise OdinError(f"demo stage '{name}' failed (exit {code}); fix the error above and re-run to resume")
    log.append(f"{name}: {time.monotonic() - start:.0f} s")


def orbit_camera_path(center: np.ndarray, radius: float, n_frames: int) -> list[np.ndarray]:
    """A level circle around ``center`` looking outwards, a natural flythrough of a 360° room."""
    poses = []
    for k in range(n_frames):
        a = 2 * math.pi * k / n_frames
        R = cv.rotation_from_ypr(np.float64(a + math.pi / 2), np.float64(0), np.float64(0))
        poses.append(cv.make_pose(R, center + radius * np.array([math.sin(a), 0.0, math.cos(a)])))
    return poses


def run_demo(out: str | Path, video: str | Path | None = None, gpu: bool = False) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
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
    _stage("ingest", dataset / "videos.parquet",
           ["ingest", str(video), "--out", str(dataset), "--fps", str(sizes.ingest_fps),
            "--equirect-width", str(sizes.synth_width), "--view-size", str(sizes.view_size)], log)
    from ingest.dataset import Dataset

    video_ids = Dataset(dataset).video_ids()
    if not video_ids:
        raise OdinError("ingest kept no usable video (see the ingest summary above)", video)
    _stage("mine", pairs / "pairs.parquet", ["mine", str(dataset), "--out", str(pairs), "--window", str(sizes.window),
                                            "--analysis-width", str(sizes.synth_width)], log)
    recon = out / "reconstruction"
    scene = recon / "transforms.json"
    if not scene.exists():
        try:
            _stage("reconstruct", scene, ["reconstruct", str(dataset), "--video", video_ids[0], "--out", str(recon),
                                          "--max-frames", str(sizes.sfm_frames)], log)
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
        from nrc.checkpoint import read_config

        frame = read_config(run).scenes[0]
        center, radius = np.asarray(frame.center, np.float64), float(frame.radius)
        write_camera_path(camera_path, orbit_camera_path(center, 0.3 * radius, sizes.render_frames), width=sizes.render_height * 4 // 3,
                          height=sizes.render_height, fov_y_deg=60.0, fps=12)
    flythrough = out / "flythrough.mp4"
    _stage("render", flythrough, ["nrc", "render", str(run), "--camera-path", str(camera_path), "--out", str(flythrough),
                                  *device], log)
    mesh = out / "mesh.ply"
    _stage("export mesh", mesh, ["nrc", "export-mesh", str(run), "--out", str(mesh), "--resolution", str(sizes.mesh_resolution), *device], log)
    odin_run = out / "odin_run"
    _stage("odin train", odin_run / "checkpoints" / "latest.json", ["train", str(pairs), "--out", str(odin_run), "--tiny", "--resolution",
                                                    str(sizes.odin_resolution), "--max-minutes", str(sizes.odin_minutes), "--max-steps", "100000"]
           + ([] if gpu else ["--quiet"]), log)
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
    return {"out": out, "scene": scene, "nrc_run": run, "odin_run": odin_run, "flythrough": flythrough, "mesh": mesh,
            "camera_path": camera_path, "pairs": pairs, "odin_trajectory": imagined / "trajectory.mp4",
            "timings": log, "nrc_metrics": metrics}


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
    print("  NRC held-out: " + ", ".join(f"{k} {v:.3f}" for k, v in mean.items()))
    print("  stage times:  " + "; ".join(result["timings"]))
    print(f"\nOpen the viewer:  odin view {result['nrc_run']} --odin {result['odin_run']}   (then browse to http://127.0.0.1:8080)")
