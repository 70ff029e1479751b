"""Choose the perspective views of an accepted frame pair and express the pair between them.

Training pairs are perspective crops (ingest's view grid), so for each accepted 360° pair the
source and target views that share the most inlier correspondences are chosen, or, with
``refine``, views re-aimed at the centre of the co-visible inliers. The relative pose of the
two perspective cameras follows from the frames' pose:
``T_vt_from_vs = inv(P_t) @ T_tgt_from_src @ P_s`` with ``P = [R_frame_from_view | 0]``.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from ingest import conventions as cv
from ingest.views import ViewSpec


@dataclass(frozen=True)
class ViewChoice:
    src_index: int  # index into the source view list (-1 for a re-aimed view)
    tgt_index: int
    src: ViewSpec
    tgt: ViewSpec
    covisible: int  # inliers seen by both views
    overlap: float  # fraction of the source view's inliers that the target view also sees
    T: np.ndarray  # 4x4 T_vt_from_vs


def in_view(bearings: np.ndarray, spec: ViewSpec) -> np.ndarray:
    """(N,) bool: frame bearings that project inside the view's image."""
    K = spec.intrinsics
    u, v, z = cv.project_perspective(bearings @ spec.R_frame_from_view, K)
    return (z > 1e-6) & (u >= 0) & (u < K.width) & (v >= 0) & (v < K.height)


def view_pose_in_frame(spec: ViewSpec) -> np.ndarray:
    return cv.make_pose(spec.R_frame_from_view, np.zeros(3))


def view_relative_pose(T_tgt_from_src: np.ndarray, src: ViewSpec, tgt: ViewSpec) -> np.ndarray:
    return cv.invert_pose(view_pose_in_frame(tgt)) @ T_tgt_from_src @ view_pose_in_frame(src)


def aimed_view(bearings: np.ndarray, like: ViewSpec) -> ViewSpec:
    """A view like ``like`` whose optical axis points at the mean of ``bearings`` (no roll)."""
    lon, lat = cv.lonlat_from_direction(cv.normalize(bearings.mean(0)))
    return ViewSpec(math.degrees(lon), math.degrees(lat), like.fov_deg, like.size)


def choose_views(b_src: np.ndarray, b_tgt: np.ndarray, T_tgt_from_src: np.ndarray,
                 src_views: list[ViewSpec], tgt_views: list[ViewSpec], refine: bool = False) -> ViewChoice | None:
    """Views maximising co-visible inliers (``b_*`` are the inlier bearings of the frames)."""
    if len(b_src) == 0 or not src_views or not tgt_views:
        return None
    in_src = np.stack([in_view(b_src, s) for s in src_views])  # (Vs, N)
    in_tgt = np.stack([in_view(b_tgt, s) for s in tgt_views])  # (Vt, N)
    covis = in_src.astype(np.int32) @ in_tgt.T.astype(np.int32)
    i, j = np.unravel_index(int(np.argmax(covis)), covis.shape)
    if covis[i, j] == 0:
        return None
    src, tgt = src_views[i], tgt_views[j]
    if refine:  # re-aim both views at their shared inliers; keep the grid pair if that sees fewer
        both = in_src[i] & in_tgt[j]
        src_a, tgt_a = aimed_view(b_src[both], src), aimed_view(b_tgt[both], tgt)
        if (in_view(b_src, src_a) & in_view(b_tgt, tgt_a)).sum() >= covis[i, j]:
            src, tgt, i, j = src_a, tgt_a, -1, -1
    seen_src, seen_both = in_view(b_src, src), in_view(b_src, src) & in_view(b_tgt, tgt)
    overlap = float(seen_both.sum() / max(seen_src.sum(), 1))
    return ViewChoice(int(i), int(j), src, tgt, int(seen_both.sum()), overlap,
                      view_relative_pose(T_tgt_from_src, src, tgt))


@functools.lru_cache(maxsize=64)
def _view_rays(spec: ViewSpec) -> np.ndarray:
    """(H*W, 3) float32 unit rays of a view's pixels in the frame."""
    rays = cv.normalize(cv.perspective_directions(spec.intrinsics)).reshape(-1, 3) @ spec.R_frame_from_view.T
    return rays.astype(np.float32)


def motion_mask(moving_bearings: np.ndarray, spec: ViewSpec, radius_deg: float) -> np.ndarray:
    """(H, W) float32 in {0, 1} over a view: pixels within ``radius_deg`` of a moving match."""
    K = spec.intrinsics
    mask = np.zeros((K.height, K.width), np.float32)
    if len(moving_bearings) == 0:
        return mask
    rays = _view_rays(spec)
    near = (rays @ moving_bearings.T.astype(np.float32)).max(axis=1) > math.cos(math.radians(radius_deg))
    mask[near.reshape(K.height, K.width)] = 1.0
    return mask
