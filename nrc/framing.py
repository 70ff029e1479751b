"""Where a captured scene lives: a centre, a foreground radius and, when known, near/far depths.

NRC normalises each scene as ``(x - center) / radius`` and contracts everything beyond the unit
cube, so the framing decides which content gets the hash grid's fine cells. Three kinds of
capture are told apart from the cameras alone:

- ``inside-out``: 360° walks and tripods (equirectangular frames, or perspective views looking
  all around). The cameras are inside the scene: centre = camera centroid; radius = the median
  distance of the sparse points when there are any (the room's scale), never less than the
  cameras' own spread.
- ``outside-in``: object captures (DTU, fox) whose optical axes converge. Centre = the point
  closest to all optical axes (least squares), which is the object the photographer aimed at;
  radius from the sparse points around it, else half the median camera distance.
- ``forward-facing``: LLFF-style sets whose axes are nearly parallel (the closest point is
  ill-conditioned). Centre along the mean viewing direction at the geometric mean of the
  near/far depth bounds (or the median depth of the points); radius reaches back to the near
  bound.

``--scene-center`` / ``--scene-radius`` override whatever is found here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Axes whose directions' scatter matrix has its smallest eigenvalue below this are "parallel":
# about 13 degrees of spread between viewing directions.
PARALLEL_EIGENVALUE = 0.05
# |mean viewing direction| below this: the views look all around (a 360° rig).
ALL_AROUND = 0.5


@dataclass
class Framing:
    center: np.ndarray  # (3,) world units
    radius: float
    kind: str  # "box" | "inside-out" | "outside-in" | "forward-facing"
    near: float | None = None  # world units along rays, when the capture states depth bounds
    far: float | None = None


def closest_point_to_axes(origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, float]:
    """(point minimising the summed squared distance to the lines, smallest eigenvalue of the
    mean projector ``I - d d^T``: near 0 when the lines are parallel and the point is unreliable)."""
    d = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    projectors = np.eye(3)[None] - d[:, :, None] * d[:, None, :]
    A = projectors.mean(0)
    b = (projectors @ origins[:, :, None]).mean(0)[:, 0]
    return np.linalg.lstsq(A, b, rcond=None)[0], float(np.linalg.eigvalsh(A)[0])


def read_points(path: str | Path) -> np.ndarray | None:
    """(N, 3) vertices of a PLY point cloud (``odin reconstruct``'s points.ply), None if absent/empty."""
    import trimesh

    path = Path(path)
    if not path.exists():
        return None
    try:
        cloud = trimesh.load(path, force="mesh", process=False) if path.stat().st_size else None
    except Exception:  # noqa: BLE001 - an unreadable optional file only costs us the better framing
        return None
    vertices = None if cloud is None else np.asarray(getattr(cloud, "vertices", np.zeros((0, 3))), np.float64)
    if vertices is None or len(vertices) == 0:
        return None
    return vertices[np.all(np.isfinite(vertices), axis=1)]


def _linf(x: np.ndarray, center: np.ndarray) -> np.ndarray:
    return np.abs(x - center).max(-1)


def frame_scene(c2ws: np.ndarray, perspective: bool, points: np.ndarray | None = None,
                near_far: tuple[float, float] | None = None,
                aabb: tuple[np.ndarray, np.ndarray] | None = None) -> Framing:
    """Framing of a scene from its camera-to-world poses (N, 4, 4) (OpenCV axes: +z looks
    forward), whether they are perspective views, and the optional sparse points, depth bounds
    and known bounding box (synthetic worlds)."""
    c2ws = np.asarray(c2ws, np.float64)
    centers = c2ws[:, :3, 3]
    near, far = (None, None) if near_far is None else (float(near_far[0]), float(near_far[1]))
    if aabb is not None:
        lo, hi = (np.asarray(b, np.float64) for b in aabb)
        return Framing((lo + hi) / 2, 1.05 * float(np.max(hi - lo)) / 2, "box", near, far)
    centroid = centers.mean(0)
    spread = float(_linf(centers, centroid).max())
    forward = c2ws[:, :3, 2]
    if perspective and len(c2ws) >= 2:
        point, smallest = closest_point_to_axes(centers, forward)
        to_point = point - centers
        distance = float(np.median(np.linalg.norm(to_point, axis=1)))
        # Aimed at: the point lies ahead of the cameras, along their axes (a rig's views all
        # cross at the rig, a walk's axes nowhere in front: both fail this).
        aimed = distance > 0 and float(np.median((to_point * forward).sum(1))) > 0.5 * distance
        if smallest >= PARALLEL_EIGENVALUE and aimed:
            radius = 0.5 * distance
            if points is not None and len(points) >= 10:
                radius = min(float(np.percentile(_linf(points, point), 90)), distance)
            return Framing(point, max(radius, 1e-3), "outside-in", near, far)
    if not perspective or len(c2ws) < 2 or np.linalg.norm(forward.mean(0)) < ALL_AROUND:
        radius = max(4.0 * spread, near or 0.0)
        if points is not None and len(points) >= 10:
            radius = max(1.1 * spread, float(np.median(_linf(points, centroid))))
        return Framing(centroid, max(radius, 1e-3), "inside-out", near, far)
    view = forward.mean(0) / np.linalg.norm(forward.mean(0))
    if near is not None and far is not None:
        depth, front = float(np.sqrt(near * far)), near
    elif points is not None and len(points) >= 10:
        depths = (points - centroid) @ view
        depths = depths[depths > 0]
        depth, front = (float(np.median(depths)), float(np.percentile(depths, 5))) if len(depths) else (spread, 0.0)
    else:
        depth, front = max(4.0 * spread, 1e-3), 0.0
    radius = max(depth - 0.9 * front, spread, 1e-3)
    return Framing(centroid + depth * view, radius, "forward-facing", near, far)
