"""Accuracy of mined pairs against ground-truth camera poses (synthetic world, bench/mine.py).

A mined pair's pose lives between two perspective views; the ground truth of that pair is
``relative_pose(c2w_src_frame @ P_src, c2w_tgt_frame @ P_tgt)`` with ``P = [R_frame_from_view | 0]``.
Rotation error is the geodesic angle; the translation error is the angle between directions
(the scale is normalised per pair, so only the direction is comparable).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ingest import conventions as cv
from ingest.views import rotation_frame_from_view

_AIMED = re.compile(r"@y([-+0-9.eE]+)p([-+0-9.eE]+)$")


def aimed_view_id(frame_id: str, yaw_deg: float, pitch_deg: float) -> str:
    """Id of a view that is not on the ingest grid (re-aimed or fallback): direction in the name."""
    return f"{frame_id}@y{yaw_deg:.4f}p{pitch_deg:.4f}"


def view_rotation(view_id: str, grid_lookup: Callable[[str], np.ndarray] | None = None) -> np.ndarray:
    """R_frame_from_view of a mined pair's view id (an aimed id, else looked up in the grid)."""
    m = _AIMED.search(view_id)
    if m:
        return rotation_frame_from_view(float(m.group(1)), float(m.group(2)))
    if grid_lookup is None:
        raise KeyError(f"view {view_id!r} is a grid view and no lookup was given")
    return grid_lookup(view_id)


def direction_error_deg(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(cv.normalize(a) @ cv.normalize(b), -1, 1))))


@dataclass
class PoseErrors:
    rotation_deg: np.ndarray
    translation_deg: np.ndarray

    def correct(self, max_deg: float = 5.0) -> np.ndarray:
        return (self.rotation_deg < max_deg) & (self.translation_deg < max_deg)

    def report(self, n_gt_pairs: int | None = None, max_deg: float = 5.0) -> dict:
        n = len(self.rotation_deg)
        out = {"pairs": n}
        if n:
            out.update({
                "rotation_median_deg": float(np.median(self.rotation_deg)),
                "rotation_p90_deg": float(np.quantile(self.rotation_deg, 0.9)),
                "translation_median_deg": float(np.median(self.translation_deg)),
                "translation_p90_deg": float(np.quantile(self.translation_deg, 0.9)),
                "precision": float(self.correct(max_deg).mean()),
            })
        if n_gt_pairs:
            out["recall"] = float(self.correct(max_deg).sum() / n_gt_pairs) if n else 0.0
        return out


def pair_errors(records, c2w_of_frame: Callable[[str], np.ndarray],
                grid_lookup: Callable[[str], np.ndarray] | None = None) -> PoseErrors:
    rot, trans = [], []
    for rec in records:
        P_s = cv.make_pose(view_rotation(rec.src_view_id, grid_lookup), np.zeros(3))
        P_t = cv.make_pose(view_rotation(rec.tgt_view_id, grid_lookup), np.zeros(3))
        T_gt = cv.relative_pose(c2w_of_frame(rec.src_frame_id) @ P_s, c2w_of_frame(rec.tgt_frame_id) @ P_t)
        rot.append(float(cv.rotation_angle_deg(rec.rotation, T_gt[:3, :3])))
        trans.append(direction_error_deg(rec.translation, T_gt[:3, 3]))
    return PoseErrors(np.array(rot), np.array(trans))


def align_similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama's least-squares similarity ``dst ≈ s R src + t`` between matched point sets (N, 3)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    var = (a ** 2).sum() / len(src)
    s = float(np.trace(np.diag(S) @ D) / var) if var > 0 else 1.0
    return s, R, mu_d - s * R @ mu_s


def trajectory_errors(c2w: dict, c2w_gt: dict) -> tuple[float, float]:
    """(median rotation error in degrees, median camera-centre error as a fraction of the GT path's extent)
    of the frames both know, after aligning ``c2w`` to ``c2w_gt`` by a similarity (SfM has no scale)."""
    keys = sorted(set(c2w) & set(c2w_gt))
    if len(keys) < 3:
        return float("nan"), float("nan")
    src = np.stack([c2w[k][:3, 3] for k in keys])
    dst = np.stack([c2w_gt[k][:3, 3] for k in keys])
    s, R, t = align_similarity(src, dst)
    extent = float(np.linalg.norm(dst.max(0) - dst.min(0))) or 1.0
    centre = np.linalg.norm((s * src @ R.T + t) - dst, axis=1) / extent
    rotation = [cv.rotation_angle_deg(R @ c2w[k][:3, :3], c2w_gt[k][:3, :3]) for k in keys]
    return float(np.median(rotation)), float(np.median(centre))
