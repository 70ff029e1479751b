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
