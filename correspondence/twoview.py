"""Two-view geometry of a pair of 360° frames: pose, acceptance tests, scale and moving matches.

``T_tgt_from_src`` is estimated from matched bearings; the pair is then judged:

* ``too_few_matches`` / ``too_few_inliers`` / ``low_inlier_ratio`` — weak evidence;
* ``low_parallax`` — the median rotation-compensated angle between matched bearings is
  tiny: the cameras (nearly) share a centre, so the translation direction is meaningless
  (rotation alone explains the matches);
* ``accepted`` otherwise.

Scale: with |t| = 1 the inliers are triangulated; ``scale`` is a robust quantile of their
depths in the source camera, and ``t / scale`` is the translation in units of the scene
depth — comparable across videos (``correspondence.pairs_io``).

Motion: a confident match that violates the static epipolar geometry by far more than the
inlier threshold, with similar violators nearby on the sphere, is taken to lie on a moving
object (isolated violators are mismatches).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from correspondence.essential import RansacConfig, angular_errors, essential_from_pose, estimate_relative_pose, triangulate_depths
from correspondence.features import FrameFeatures
from correspondence.matching import mutual_ratio_matches

ACCEPTED = "accepted"


@dataclass(frozen=True)
class TwoViewConfig:
    ratio: float = 0.8
    ransac: RansacConfig = field(default_factory=RansacConfig)
    estimator: str = "pycolmap"  # or "reference" (numpy 8-point RANSAC)
    min_matches: int = 40
    min_inliers: int = 40
    min_inlier_ratio: float = 0.3
    min_parallax_deg: float = 1.0
    depth_quantile: float = 0.5
    motion_min_error_deg: float = 1.0
    motion_max_ratio: float = 0.7  # only confident descriptor matches can vote for motion
    motion_radius_deg: float = 12.0  # moving objects span many degrees; mismatches are isolated
    motion_min_neighbours: int = 2


@dataclass
class TwoViewResult:
    status: str  # ACCEPTED or the reason for rejection
    b_src: np.ndarray  # (M, 3) matched bearings
    b_tgt: np.ndarray
    n_matches: int = 0
    R: np.ndarray | None = None  # T_tgt_from_src rotation
    t_unit: np.ndarray | None = None  # unit translation direction
    inliers: np.ndarray | None = None  # (M,) bool
    parallax_deg: float = 0.0
    scale: float = float("nan")  # robust source depth with |t| = 1
    moving: np.ndarray | None = None  # (M,) bool, matches on moving objects

    @property
    def accepted(self) -> bool:
        return self.status == ACCEPTED

    @property
    def n_inliers(self) -> int:
        return 0 if self.inliers is None else int(self.inliers.sum())

    @property
    def t(self) -> np.ndarray | None:
        """Translation in the scale-normalised unit (scene depth)."""
        return None if self.t_unit is None else self.t_unit / self.scale

    def pose(self) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = self.R, self.t
        return T


def parallax_deg(R: np.ndarray, b_src: np.ndarray, b_tgt: np.ndarray) -> float:
    """Median angle between target bearings and rotation-compensated source bearings."""
    if len(b_src) == 0:
        return 0.0
    cos = np.clip(np.sum((b_src @ R.T) * b_tgt, axis=-1), -1, 1)
    return float(np.degrees(np.median(np.arccos(cos))))


def robust_scale(R: np.ndarray, t_unit: np.ndarray, b_src: np.ndarray, b_tgt: np.ndarray, quantile: float) -> float:
    """Quantile of the source depths of triangulated inliers (points behind a camera dropped)."""
    s1, s2 = triangulate_depths(R, t_unit, b_src, b_tgt)
    good = (s1 > 0) & (s2 > 0) & np.isfinite(s1)
    if good.sum() < 3:
        return float("nan")
    return float(np.quantile(s1[good], quantile))


def moving_matches(errors: np.ndarray, ratios: np.ndarray, b_tgt: np.ndarray, config: TwoViewConfig) -> np.ndarray:
    """Confident epipolar violators that have at least ``motion_min_neighbours`` violators nearby."""
    cand = (errors > np.radians(config.motion_min_error_deg)) & (ratios < config.motion_max_ratio)
    idx = np.flatnonzero(cand)
    moving = np.zeros(len(errors), bool)
    if len(idx) <= config.motion_min_neighbours:
        return moving
    near = (b_tgt[idx] @ b_tgt[idx].T) > np.cos(np.radians(config.motion_radius_deg))
    moving[idx[near.sum(1) - 1 >= config.motion_min_neighbours]] = True
    return moving


def two_view_from_features(src: FrameFeatures, tgt: FrameFeatures, config: TwoViewConfig = TwoViewConfig(),
                           initial: np.ndarray | None = None) -> TwoViewResult:
    """Match, estimate, refine and judge one pair of frames.

    ``initial`` (4x4 T_tgt_from_src, e.g. composed along the pair graph) pre-filters matches
    to those within a loose band around its epipolar geometry before RANSAC.
    """
    matches, ratios = mutual_ratio_matches(src.descriptors, tgt.descriptors, config.ratio)
    b_src, b_tgt = src.bearings[matches[:, 0]], tgt.bearings[matches[:, 1]]
    if initial is not None and len(matches):
        t0 = initial[:3, 3] / max(np.linalg.norm(initial[:3, 3]), 1e-12)
        keep = angular_errors(essential_from_pose(initial[:3, :3], t0), b_src, b_tgt) < np.radians(5.0)
        b_src, b_tgt, ratios = b_src[keep], b_tgt[keep], ratios[keep]
    result = TwoViewResult(status="too_few_matches", b_src=b_src, b_tgt=b_tgt, n_matches=len(b_src))
    if len(b_src) < config.min_matches:
        return result
    pose = estimate_relative_pose(b_src, b_tgt, config.ransac, config.estimator)
    if pose is None:
        result.status = "too_few_inliers"
        return result
    result.R, result.t_unit, result.inliers = pose.R, pose.t, pose.inliers
    result.parallax_deg = parallax_deg(pose.R, b_src[pose.inliers], b_tgt[pose.inliers])
    errors = angular_errors(essential_from_pose(pose.R, pose.t), b_src, b_tgt)
    result.moving = moving_matches(errors, ratios, b_tgt, config)
    result.scale = robust_scale(pose.R, pose.t, b_src[pose.inliers], b_tgt[pose.inliers], config.depth_quantile)
    if result.n_inliers < config.min_inliers:
        result.status = "too_few_inliers"
    elif result.n_inliers < config.min_inlier_ratio * len(b_src):
        result.status = "low_inlier_ratio"
    elif result.parallax_deg < config.min_parallax_deg:
        result.status = "low_parallax"
    elif not np.isfinite(result.scale) or result.scale <= 0:
        result.status = "degenerate"
    else:
        result.status = ACCEPTED
    return result
