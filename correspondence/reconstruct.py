"""`odin reconstruct`: pose one shot of a 360° video with COLMAP -> transforms.json.

The frames of one shot (the longest by default: SfM never crosses a cut) are posed by
:mod:`correspondence.sfm`, seeded with what ``odin mine`` verified and masked where the rig
(car body, drone arms, tripod) moves with the camera. pycolmap's EQUIRECTANGULAR camera uses
our convention exactly: ``cam_from_world`` is our ``w2c``, OpenCV axes, pixel centres at +0.5.

Output (in OUT): ``views/`` (perspective crops of the registered frames), ``transforms.json``
(those views, as nerfstudio wants), ``points.ply`` (sparse points), ``report.json`` (every
frame: registered or not and why, reprojection error), ``trajectory.png`` (top-down camera
path, unregistered frames marked) and ``reconstruct_config.json`` (the settings; a re-run with
others is refused). SfM scale is arbitrary.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2  # before pycolmap: pycolmap's zlib otherwise breaks cv2's PNG writer
import numpy as np

from correspondence.mine import FrameSource
from correspondence.nerfstudio import PosedFrame, PosedScene, write_transforms
from correspondence.sfm import SfmConfig, SfmResult, reconstruct_frames
from correspondence.sfm_report import frame_report, write_trajectory_png
from ingest import conventions as cv
from ingest.atomic import atomic_write_json
from ingest.errors import OdinError
from ingest.rigmask import resize_mask
from ingest.runlock import changed_keys, run_lock
from ingest.views import ViewsConfig, extract_views

# Mining outcomes whose two-view geometry was verified (a rejection for too little baseline is
# still a good match for SfM, which sees the pair among many).
VERIFIED = ("accepted", "low_parallax", "no_covisible_views", "disagrees_with_graph")
# A shot is static when under 5% of at least 5 verified frame pairs had parallax. Mined at 4 fps: the
# static waterfall 0 of 228, the geyser 0 of 60; the dragster, stationary for its first seconds, 26 of
# 210 (12%); the car 15 of 16; the drone 280 of 345.
MIN_STATIC_EVIDENCE, STATIC_ACCEPTED_FRACTION = 5, 0.05
SETTINGS = "reconstruct_config.json"


@dataclass(frozen=True)
class ReconstructConfig:
    max_frames: int = 200
    views: ViewsConfig = field(default_factory=ViewsConfig)
    sfm: SfmConfig = field(default_factory=SfmConfig)
    shot: int | None = None  # None: the longest shot
    use_mined_pairs: bool = True
    use_rig_mask: bool = True


@dataclass
class ReconstructResult:
    video_id: str
    out: Path
    frames: int
    registered: int
    points: int
    seconds: float
    c2w: dict = field(default_factory=dict)  # frame_id -> 4x4 c2w of the equirect frame (SfM units)
    mean_reprojection_px: float = float("nan")
    shot: int = 0

    def line(self) -> str:
        return (f"{self.video_id}: {self.registered}/{self.frames} frames registered (shot {self.shot}), "
                f"{self.points} points, mean reprojection error {self.mean_reprojection_px:.2f} px, "
                f"{self.seconds:.1f} s -> {self.out / 'transforms.json'}")


def subsample(items: list, max_count: int) -> list:
    if len(items) <= max_count:
        return list(items)
    return [items[k] for k in np.linspace(0, len(items) - 1, max_count).round().astype(int)]


def select_shot(source: FrameSource, video_id: str, shot: int | None) -> tuple[int, list]:
    """The frames of one shot; the longest one unless ``shot`` is given."""
    frames = list(source.frames(video_id))
    shots_of = getattr(source, "shots", None)
    shots = shots_of(video_id) if shots_of is not None else None
    if not shots:
        shots = [[f.frame_id for f in frames]]
    if shot is None:
        shot = max(range(len(shots)), key=lambda k: len(shots[k]))
    elif not 0 <= shot < len(shots):
        raise OdinError(f"--shot {shot}: video {video_id!r} has {len(shots)} shot(s) (0..{len(shots) - 1})")
    members = set(shots[shot])
    return shot, [f for f in frames if f.frame_id in members]


def rig_of(source: FrameSource, video_id: str, user_mask: np.ndarray | None) -> np.ndarray | None:
    if user_mask is not None:
        return user_mask
    rig_mask = getattr(source, "rig_mask", None)
    return rig_mask(video_id) if rig_mask is not None else None


def mined_seeds(pairs_dir: Path | None, video_id: str, frames: list, source: FrameSource
                ) -> tuple[set[tuple[int, int]], dict[tuple[int, int], np.ndarray], dict[str, int]]:
    """Frame pairs mining verified (positions in ``frames``), for its kept pairs R_b_from_a of the frames,
    and how many of the shot's verified attempts ended in each status."""
    if pairs_dir is None or not (pairs_dir / "summaries").is_dir():
        return set(), {}, {}
    from correspondence.mine import load_summaries
    from correspondence.pairs_io import read_pairs_table

    position = {f.index: k for k, f in enumerate(frames)}
    seeds, statuses = set(), {}
    for summary in load_summaries(pairs_dir):
        if summary.video_id != video_id:
            continue
        for src, tgt, status, *_ in summary.attempts:
            if status in VERIFIED and src in position and tgt in position:
                seeds.add((position[src], position[tgt]))
                statuses[status] = statuses.get(status, 0) + 1
    rotations = {}
    by_frame = {f.frame_id: k for k, f in enumerate(frames)}
    if (pairs_dir / "pairs.parquet").exists():
        for rec in read_pairs_table(pairs_dir):
            a, b = by_frame.get(rec.src_frame_id), by_frame.get(rec.tgt_frame_id)
            if rec.video_id != video_id or a is None or b is None:
                continue
            R_a = _view_rotation(source, rec.src_frame_id, rec.src_view_id)
            R_b = _view_rotation(source, rec.tgt_frame_id, rec.tgt_view_id)
            if R_a is None or R_b is None:
                continue
            R_b_from_a = R_b @ rec.rotation @ R_a.T  # frame b <- view b <- view a <- frame a
            key, R = ((a, b), R_b_from_a) if a < b else ((b, a), R_b_from_a.T)
            rotations[key] = R
    return seeds, rotations, statuses


def refuse_static_shot(statuses: dict[str, int], video_id: str, shot: int, out: Path) -> None:
    """A tripod or a camera that only turns: mining found the frames related by a rotation alone. The
    global mapper would still "register" them, at invented positions (a static clip came out as a
    zigzag through 12 frames), so say what the clip is instead."""
    still, moved = statuses.get("low_parallax", 0), statuses.get("accepted", 0)
    if still >= MIN_STATIC_EVIDENCE and moved < STATIC_ACCEPTED_FRACTION * (still + moved):
        raise OdinError(f"the camera barely moves in video {video_id!r} shot {shot}: {still} of {still + moved} "
                        "frame pairs mining verified differ by a rotation alone (a tripod, or a camera that only "
                        "turns), so SfM cannot place its frames; pose a clip where the camera travels, or a "
                        "sub-range where it does (--no-mined-pairs skips this check)", out)


def _view_rotation(source: FrameSource, frame_id: str, view_id: str) -> np.ndarray | None:
    for view in source.views(frame_id):
        if view.view_id == view_id:
            return np.asarray(view.R_frame_from_view, np.float64)
    return None


def reconstruct_settings(video_id: str, config: ReconstructConfig, pairs_dir: str | Path | None,
                         user_mask: np.ndarray | None) -> dict:
    """What a reconstruction depends on besides the dataset: recorded in OUT, compared on re-runs."""
    import hashlib
    from dataclasses import asdict

    mask = None if user_mask is None else hashlib.sha1(np.ascontiguousarray(user_mask).tobytes()).hexdigest()
    pairs = str(Path(pairs_dir).resolve()) if pairs_dir is not None and config.use_mined_pairs else None
    return json.loads(json.dumps({"video_id": video_id, "config": asdict(config), "pairs": pairs, "mask_sha1": mask}))


def already_done(out: str | Path, settings: dict) -> bool:
    """True when OUT holds a finished reconstruction made with ``settings``; one that was made
    with others is refused, never reported as this run's result."""
    out = Path(out)
    if not (out / "transforms.json").exists():
        return False
    try:
        recorded = json.loads((out / SETTINGS).read_text())
    except (OSError, json.JSONDecodeError):
        recorded = {}
    if recorded != settings:
        changed = ", ".join(changed_keys(recorded, settings))
        raise OdinError(f"holds a reconstruction made with other settings ({changed}); choose another --out, "
                        "or delete its transforms.json to redo it here", out)
    return True


def reconstruct_video(source: FrameSource, video_id: str, out: str | Path,
                      config: ReconstructConfig = ReconstructConfig(), pairs_dir: str | Path | None = None,
                      user_mask: np.ndarray | None = None, log=print, inputs=()) -> ReconstructResult:
    """Pose ``video_id`` into ``out``, which is locked meanwhile (ingest.runlock); ``inputs``:
    paths ``out`` must not be. A killed run leaves no transforms.json, so a re-run redoes it."""
    settings = reconstruct_settings(video_id, config, pairs_dir, user_mask)
    with run_lock(out, "reconstruction", inputs=inputs):
        # The old result goes before the new settings are recorded: no kill can pair the two.
        (Path(out) / "transforms.json").unlink(missing_ok=True)
        atomic_write_json(Path(out) / SETTINGS, settings)
        return _reconstruct(source, video_id, Path(out), config, pairs_dir, user_mask, log)


def _reconstruct(source: FrameSource, video_id: str, out: Path, config: ReconstructConfig,
                 pairs_dir: str | Path | None, user_mask: np.ndarray | None, log) -> ReconstructResult:
    start = time.perf_counter()
    shot, shot_frames = select_shot(source, video_id, config.shot)
    frames = subsample(shot_frames, config.max_frames)
    if len(frames) < 2:
        raise OdinError(f"video {video_id!r} shot {shot} has {len(frames)} kept frames; SfM needs at least 2", out)
    rig = rig_of(source, video_id, user_mask) if config.use_rig_mask else None
    seeds, rotations, statuses = mined_seeds(Path(pairs_dir) if pairs_dir and config.use_mined_pairs else None,
                                             video_id, frames, source)
    refuse_static_shot(statuses, video_id, shot, out)
    log(f"reconstruct: {video_id} shot {shot}: {len(frames)} frames, route {config.sfm.route}, "
        f"{len(seeds)} mined pairs, rig mask {'on' if rig is not None else 'off'} "
        f"({0.0 if rig is None else 100 * rig.mean():.1f}% of the panorama)")
    work = out / ".sfm"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    names = [f"{k:06d}.jpg" for k in range(len(frames))]
    result = reconstruct_frames((source.load_equirect(f.frame_id)[..., ::-1] for f in frames), names, work, config.sfm,
                                keep=None if rig is None or not config.sfm.mask_features else ~rig,
                                seed_pairs=seeds, rotations=rotations, log=log)
    report = frame_report(frames, result)
    seconds = time.perf_counter() - start
    mean_error = float(np.mean(list(result.reprojection_px.values()))) if result.reprojection_px else float("nan")
    summary = {"video_id": video_id, "shot": shot, "route": config.sfm.route, "mapper": config.sfm.mapper,
               "frames": len(frames), "registered": len(result.c2w), "models": result.model_sizes,
               "points": result.num_points, "mean_reprojection_px": mean_error if np.isfinite(mean_error) else None, "mined_pairs": len(seeds),
               "rig_mask_fraction": 0.0 if rig is None else float(rig.mean()), "seconds": seconds,
               "stage_seconds": result.seconds, "frames_report": report}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", summary)
    write_trajectory_png(out / "trajectory.png", frames, result.c2w, title=f"{video_id} shot {shot}")
    if len(result.c2w) < 2:
        shutil.rmtree(work, ignore_errors=True)
        raise OdinError(_failure_message(video_id, report, result), out / "report.json")
    c2w_by_id = _write_scene(source, frames, result, out, config, video_id, rig)
    jumps = [r["frame_id"] for r in report if r["off_path_jump"]]
    if jumps:
        log(f"reconstruct: warning: the path jumps at {len(jumps)} registered frame(s) (first: {jumps[0]}); "
            f"their poses are suspect (a stationary stretch or a wrong match); see trajectory.png")
    unregistered = [r for r in report if not r["registered"]]
    if unregistered:
        log(f"reconstruct: {len(unregistered)} of {len(frames)} frames not registered "
            f"(first: {unregistered[0]['frame_id']}: {unregistered[0]['reason']}); see {out / 'report.json'}")
    shutil.rmtree(work, ignore_errors=True)
    return ReconstructResult(video_id, out, len(frames), len(result.c2w), result.num_points, seconds, c2w_by_id,
                             mean_error, shot)


def _failure_message(video_id: str, report: list[dict], result: SfmResult) -> str:
    reasons = {}
    for r in report:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    common = ", ".join(f"{n} x {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
    return (f"SfM registered {len(result.c2w)} of {len(report)} frames of video {video_id!r} ({common}); "
            "try: ingest at a higher --fps, give a rig mask (--mask FILE, white = parts that move with the camera), "
            "pick another --shot or sub-range, or the other --route")


def _write_scene(source, frames, result: SfmResult, out: Path, config: ReconstructConfig, video_id: str,
                 rig: np.ndarray | None) -> dict:
    """Perspective views of the registered frames; with a rig mask, each view gets the mask of the pixels
    to train on (nerfstudio's ``mask_path``: non-zero = use), so the rig never enters a radiance field."""
    posed, c2w_by_id = [], {}
    views_dir = out / "views"
    shutil.rmtree(views_dir, ignore_errors=True)
    views_dir.mkdir(parents=True)
    specs = config.views.specs()
    view_masks = None
    if rig is not None:
        h, w = source.load_equirect(frames[0].frame_id).shape[:2]
        keep = resize_mask(~rig, w, h).astype(np.uint8) * 255
        view_masks = []
        for v, view in enumerate(extract_views(keep, specs)):
            path = views_dir / f"mask_v{v:02d}.png"
            if not cv2.imwrite(str(path), np.where(view > 127, 255, 0).astype(np.uint8)):
                raise OdinError("could not write image", path)
            view_masks.append(path)

    def write_views(k: int, rgb: np.ndarray) -> None:
        for v, view in enumerate(extract_views(rgb, specs)):
            path = views_dir / f"{k:06d}_v{v:02d}.jpg"
            if not cv2.imwrite(str(path), view[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95]):
                raise OdinError("could not write image", path)

    # Resampling and JPEG encoding release the GIL: threads write the views in half the time on 2 cores
    # (2.6 s of a 60-frame, 18 s reconstruction were these writes, one after another).
    # At most two frames per thread in flight: a 4K panorama is 22 MB.
    workers = os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = deque()
        for k in sorted(result.c2w):
            if len(pending) >= 2 * workers:
                pending.popleft().result()
            pending.append(pool.submit(write_views, k, source.load_equirect(frames[k].frame_id)))
        for write in pending:
            write.result()
    for k in sorted(result.c2w):
        fr = frames[k]
        c2w_frame = result.c2w[k]
        c2w_by_id[fr.frame_id] = c2w_frame
        for v, spec in enumerate(specs):
            c2w_view = c2w_frame @ cv.make_pose(spec.R_frame_from_view, np.zeros(3))
            posed.append(PosedFrame(views_dir / f"{k:06d}_v{v:02d}.jpg", c2w_view, spec.size, spec.size,
                                    spec.intrinsics, "PINHOLE", float(fr.time),
                                    mask_path=None if view_masks is None else view_masks[v]))
    if result.points_ply is not None and result.points_ply.exists():
        result.points_ply.replace(out / "points.ply")
    write_transforms(PosedScene(posed, out, extra={"video_id": video_id, "route": config.sfm.route}),
                     out / "transforms.json")
    return c2w_by_id


def load_report(out: str | Path) -> dict:
    path = Path(out) / "report.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise OdinError(f"cannot read the reconstruction report ({e})", path) from None
