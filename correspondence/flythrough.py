"""A flythrough of what was filmed: the recorded camera trajectory, smoothed, level in the scene's own up
direction, with small lateral and yaw offsets, so the new views stay where the cameras saw the scene
(an orbit placed from the camera spread runs outside the walls of a corridor walk)."""
from __future__ import annotations

import numpy as np

from ingest import conventions as cv


def up_direction(c2ws: list[np.ndarray]) -> np.ndarray:
    """The scene's up: the mean of the cameras' up axes (-y in OpenCV axes); 360° rigs are held roughly level."""
    up = -np.mean([np.asarray(T)[:3, 1] for T in c2ws], axis=0)
    norm = np.linalg.norm(up)
    return up / norm if norm > 1e-9 else np.array([0.0, -1.0, 0.0])


def ground_axes(up: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Two orthonormal axes of the ground plane, the first along the points' main extent."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 0.0, 1.0])
    a = np.cross(up, helper)
    a /= np.linalg.norm(a)
    b = np.cross(up, a)
    if len(points) >= 2:
        flat = (points - points.mean(0)) @ np.stack([a, b]).T
        _, _, vt = np.linalg.svd(flat, full_matrices=False)
        a, b = vt[0, 0] * a + vt[0, 1] * b, vt[1, 0] * a + vt[1, 1] * b
    return np.stack([a, b])


def _smooth(points: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0 or len(points) < 3:
        return points
    k = np.arange(len(points))
    weights = np.exp(-0.5 * ((k[:, None] - k[None, :]) / sigma) ** 2)
    return weights @ points / weights.sum(1, keepdims=True)


def look_rotation(forward: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Camera-to-world rotation (OpenCV axes: x right, y down, z forward) looking along ``forward``, level."""
    z = forward - (forward @ up) * up
    z /= np.linalg.norm(z)
    y = -up
    return np.stack([np.cross(y, z), y, z], axis=1)


def trajectory_camera_path(c2ws: list[np.ndarray], n_frames: int, lateral: float = 0.05, yaw_deg: float = 10.0,
                           smooth_frames: float = 2.0, scene_depth: float | None = None) -> list[np.ndarray]:
    """``n_frames`` c2ws along the recorded cameras (time order). The lateral sway's amplitude is ``lateral``
    times the typical distance to the scene (``scene_depth``, e.g. the median camera-to-point distance) or
    times the path length; the heading sways by ``yaw_deg`` around the direction of travel. A camera that
    hardly moved keeps its mean heading and turns slowly instead."""
    c2ws = [np.asarray(T, np.float64) for T in c2ws]
    if not c2ws:
        raise ValueError("no cameras to follow")
    up = up_direction(c2ws)
    centres = _smooth(np.stack([T[:3, 3] for T in c2ws]), smooth_frames)
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    length = float(steps.sum())
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    mean_forward = np.mean([T[:3, 2] for T in c2ws], axis=0)
    scale = scene_depth if scene_depth else length
    moving = length > 1e-6 and (scene_depth is None or length > 0.05 * scene_depth)
    s = np.linspace(0, arc[-1], n_frames) if moving else np.zeros(n_frames)
    positions = np.stack([np.interp(s, arc, centres[:, d]) for d in range(3)], -1) if moving else \
        np.repeat(centres.mean(0, keepdims=True), n_frames, 0)
    poses = []
    for k in range(n_frames):
        phase = 2 * np.pi * k / max(n_frames - 1, 1)
        if moving:
            ahead = positions[min(k + 1, n_frames - 1)] - positions[max(k - 1, 0)]
            forward = ahead if np.linalg.norm(ahead - (ahead @ up) * up) > 1e-9 else mean_forward
            sway = lateral * scale * np.sin(phase)
            heading = np.radians(yaw_deg) * np.sin(phase + np.pi / 3)
        else:  # a static camera: look around from where it stood
            forward, sway, heading = mean_forward, 0.0, phase
        R = look_rotation(forward, up)
        R = cv.rotation_from_axis_angle(-up * heading) @ R  # turn about the scene's up
        side = R[:, 0]
        poses.append(cv.make_pose(R, positions[k] + sway * side))
    return poses


def recorded_trajectory(scene) -> list[np.ndarray]:
    """One c2w per capture moment of a ``PosedScene``, in time order: views of one 360° frame share its time
    and centre, and the first view of a frame looks where the frame looks."""
    by_time: dict[float, np.ndarray] = {}
    for k, frame in enumerate(scene.frames):
        key = frame.time if frame.time is not None else float(k)
        by_time.setdefault(key, frame.c2w)
    return [by_time[t] for t in sorted(by_time)]


def median_scene_depth(points: np.ndarray, centres: np.ndarray) -> float | None:
    """Median distance from the cameras to the sparse points they reconstructed (None without points)."""
    if points is None or len(points) == 0:
        return None
    rng = np.random.default_rng(0)
    sample = points[rng.choice(len(points), min(len(points), 4000), replace=False)]
    return float(np.median(np.linalg.norm(sample[:, None, :] - centres[None, :, :], axis=-1).min(axis=1)))
