"""What a reconstruction tells a person: why each frame did or did not register, and a top-down
picture of the camera path with the frames that failed marked where they would have been."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from correspondence.flythrough import ground_axes, up_direction
from ingest.atomic import atomic_path

MIN_KEYPOINTS = 30


def frame_reason(k: int, result) -> str:
    if k in result.c2w:
        return "registered"
    if result.keypoints.get(k, 0) < MIN_KEYPOINTS:
        return f"too few features ({result.keypoints.get(k, 0)}): black, blurred or textureless frame"
    partners = result.verified.get(k, set())
    if not partners:
        return "no verified match with any other frame (too little overlap, texture or baseline)"
    if k in result.unsupported:
        return (f"posed, but it sees only {result.unsupported[k]} triangulated points: too little parallax "
                "to place it (did the camera move?)")
    if k in result.elsewhere:
        return "registered only in a separate, smaller model (the clip breaks into pieces here)"
    if not result.c2w:
        return ("matched other frames, but no 3D structure could be built from them (too little parallax: "
                "did the camera move?)")
    if not partners & set(result.c2w):
        return "matched only frames that did not register either"
    return "matched registered frames but too few of its points could be placed (too little parallax)"


def path_speeds(frames: list, c2w: dict) -> tuple[list, np.ndarray]:
    """Registered frames in time order and the camera speed reaching each from the previous one."""
    ordered = sorted(c2w, key=lambda k: float(frames[k].time))
    speed = np.array([np.linalg.norm(c2w[b][:3, 3] - c2w[a][:3, 3]) / max(float(frames[b].time - frames[a].time), 1e-6)
                      for a, b in zip(ordered[:-1], ordered[1:])])
    return ordered, speed


def off_path(frames: list, c2w: dict, factor: float = 10.0) -> set[int]:
    """Registered frames reached by a jump: speed over ``factor`` times the median. A vehicle or a walk
    moves smoothly; such a pose registered but is likely wrong (e.g. a stationary stretch, whose
    positions SfM cannot tell apart)."""
    ordered, speed = path_speeds(frames, c2w)
    if len(ordered) < 4:
        return set()
    limit = factor * max(float(np.median(speed)), 1e-12)
    return {b for b, v in zip(ordered[1:], speed) if v > limit}


def frame_report(frames: list, result) -> list[dict]:
    jumps = off_path(frames, result.c2w)
    return [{"frame_id": f.frame_id, "time": float(f.time), "registered": k in result.c2w, "reason": frame_reason(k, result),
             "off_path_jump": k in jumps, "keypoints": int(result.keypoints.get(k, 0)),
             "verified_pairs": len(result.verified.get(k, ())), "reprojection_px": result.reprojection_px.get(k)}
            for k, f in enumerate(frames)]


def write_trajectory_png(path: str | Path, frames: list, c2w: dict[int, np.ndarray], title: str = "",
                         size: int = 640) -> Path:
    """Registered frames as green dots along the path, unregistered ones as red crosses placed by interpolating
    time between registered neighbours (or listed when no frame registered)."""
    path = Path(path)
    canvas = np.full((size, size, 3), 255, np.uint8)
    registered = sorted(c2w)
    jumps = off_path(frames, c2w)
    lines = [title, f"{len(registered)}/{len(frames)} frames registered, {len(jumps)} after a jump"]
    if len(registered) >= 2:
        centres = np.stack([c2w[k][:3, 3] for k in registered])
        times = np.array([float(frames[k].time) for k in registered])
        axes = ground_axes(up_direction([c2w[k] for k in registered]), centres)
        flat = (centres - centres.mean(0)) @ axes.T
        every_time = np.array([float(f.time) for f in frames])
        flat_all = np.stack([np.interp(every_time, times, flat[:, d]) for d in range(2)], -1)
        lo, hi = flat_all.min(0), flat_all.max(0)
        scale = (size - 120) / max(float((hi - lo).max()), 1e-9)
        pixel = ((flat_all - (lo + hi) / 2) * scale + size / 2).round().astype(int)
        pixel[:, 1] = size - pixel[:, 1]
        cv2.polylines(canvas, [pixel[[k for k in registered]].reshape(-1, 1, 2)], False, (160, 160, 160), 1, cv2.LINE_AA)
        for k, (x, y) in enumerate(pixel):
            if k in jumps:
                cv2.circle(canvas, (int(x), int(y)), 5, (0, 140, 255), -1, cv2.LINE_AA)
            elif k in c2w:
                cv2.circle(canvas, (int(x), int(y)), 4, (40, 160, 40), -1, cv2.LINE_AA)
            else:
                cv2.drawMarker(canvas, (int(x), int(y)), (30, 30, 220), cv2.MARKER_TILTED_CROSS, 12, 2)
        cv2.circle(canvas, tuple(int(v) for v in pixel[registered[0]]), 8, (200, 120, 0), 2, cv2.LINE_AA)
        lines.append("top-down; green: registered, orange: registered after a jump (suspect),")
        lines.append("red x: not registered; blue ring: first frame")
    else:
        lines.append("too few registered frames to draw a path")
    for i, text in enumerate(lines):
        cv2.putText(canvas, text[:80], (10, 22 + 20 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    with atomic_path(path) as tmp:
        ok, data = cv2.imencode(".png", canvas)
        Path(tmp).write_bytes(data.tobytes())
    return path
