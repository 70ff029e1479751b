"""Relative pose from unit bearing vectors: essential matrix, robust estimation, refinement.

Bearings are camera-frame unit rays (``ingest.conventions`` axes); a pose ``(R, t)`` maps
source-camera points into the target camera, ``X_tgt = R X_src + t`` (``T_tgt_from_src``),
so the epipolar constraint reads ``b_tgt^T [t]x R b_src = 0``.

Two robust estimators share one angular error and one refinement:

* :func:`ransac_essential_reference` — plain numpy RANSAC over the linear 8-point solver on
  bearings (works for rays in every direction, unlike pixel-based solvers).
* :func:`ransac_essential_pycolmap` — pycolmap's LO-RANSAC 5-point solver on camera rays
  (``pycolmap.estimate_relative_pose(rays1, rays2)``); its ``max_error`` is a tangent-plane
  error, i.e. radians for small errors, the same unit as our angular threshold.

The angular error of a correspondence is the angle between each bearing and the epipolar
plane the other one defines (the larger of the two) — the natural error on the sphere,
uniform over a 360° frame, where pixel errors of equirect images are not.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ingest import conventions as cv


@dataclass(frozen=True)
class RansacConfig:
    threshold_deg: float = 0.15  # angular inlier threshold (about 0.5 px at 1024-wide equirect)
    max_iterations: int = 2000
    confidence: float = 0.9999
    seed: int = 0


@dataclass
class RelativePose:
    R: np.ndarray  # (3, 3) rotation of T_tgt_from_src
    t: np.ndarray  # (3,) unit translation direction of T_tgt_from_src
    inliers: np.ndarray  # (N,) bool


def skew(v: np.ndarray) -> np.ndarray:
    """Cross-product matrix [v]x with [v]x w = v x w."""
    x, y, z = v
    return np.array([[0, -z, y], [z, 0, -x], [-y, x, 0.0]])


def essential_from_pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    return skew(np.asarray(t, np.float64)) @ np.asarray(R, np.float64)


def angular_errors(E: np.ndarray, b_src: np.ndarray, b_tgt: np.ndarray) -> np.ndarray:
    """(..., N) radians: max over both views of the bearing's angle to its epipolar plane.

    ``E`` may be batched (K, 3, 3); the bearings are (N, 3) unit vectors.
    """
    n_tgt = b_src @ np.swapaxes(E, -1, -2)  # plane normals in the target: E b_src
    n_src = b_tgt @ E  # plane normals in the source: E^T b_tgt
    dot = np.sum(n_tgt * b_tgt, axis=-1)
    norm_t = np.maximum(np.linalg.norm(n_tgt, axis=-1), 1e-12)
    norm_s = np.maximum(np.linalg.norm(n_src, axis=-1), 1e-12)
    sin_err = np.abs(dot) * np.maximum(1 / norm_t, 1 / norm_s)
    return np.arcsin(np.clip(sin_err, 0, 1))


def eight_point(b_src: np.ndarray, b_tgt: np.ndarray) -> np.ndarray:
    """Linear essential matrices from (..., n>=8, 3) bearing correspondences, batched."""
    A = (b_tgt[..., :, :, None] * b_src[..., :, None, :]).reshape(*b_src.shape[:-1], 9)
    _, _, Vt = np.linalg.svd(A)
    E = Vt[..., -1, :].reshape(*b_src.shape[:-2], 3, 3)
    U, _, Vt = np.linalg.svd(E)
    return U @ np.diag([1.0, 1.0, 0.0]) @ Vt  # nearest essential matrix (equal singular values)


def triangulate_depths(R: np.ndarray, t: np.ndarray, b_src: np.ndarray, b_tgt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Midpoint triangulation: depths along the source and target bearings (units of |t|).

    Camera centres: source at 0, target at ``-R^T t`` in the source frame.
    """
    d1 = b_src
    d2 = b_tgt @ R  # target bearings rotated into the source frame: R^T b_tgt
    c2 = -R.T @ t
    # Solve s1 d1 - s2 d2 = c2 in least squares per point (2x2 normal equations).
    a = np.sum(d1 * d1, -1)
    b = np.sum(d1 * d2, -1)
    c = np.sum(d2 * d2, -1)
    e1 = d1 @ c2
    e2 = d2 @ c2
    den = a * c - b * b
    den = np.where(np.abs(den) < 1e-12, 1e-12, den)
    s1 = (c * e1 - b * e2) / den
    s2 = (b * e1 - a * e2) / den
    return s1, s2


def decompose_essential(E: np.ndarray, b_src: np.ndarray, b_tgt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (R, t) of the four candidates that puts most points in front of both cameras."""
    U, _, Vt = np.linalg.svd(E)
    if np.linalg.det(U) < 0:
        U = -U
    if np.linalg.det(Vt) < 0:
        Vt = -Vt
    W = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    best, best_count = None, -1
    for R in (U @ W @ Vt, U @ W.T @ Vt):
        for t in (U[:, 2], -U[:, 2]):
            s1, s2 = triangulate_depths(R, t, b_src, b_tgt)
            count = int(np.sum((s1 > 0) & (s2 > 0)))
            if count > best_count:
                best, best_count = (R, t), count
    return best


def _iterations_needed(inlier_ratio: float, sample_size: int, confidence: float) -> int:
    good = inlier_ratio**sample_size
    if good <= 1e-12:
        return 10**9
    if good >= 1:
        return 1
    return int(np.ceil(np.log(1 - confidence) / np.log(1 - good)))


def ransac_essential_reference(b_src: np.ndarray, b_tgt: np.ndarray, config: RansacConfig = RansacConfig()) -> RelativePose | None:
    """8-point RANSAC on bearings with the angular error; batches of hypotheses at a time."""
    n = len(b_src)
    if n < 8:
        return None
    rng = np.random.default_rng(config.seed)
    thr = np.radians(config.threshold_deg)
    best_E, best_mask, best_count, done, needed, batch = None, None, -1, 0, config.max_iterations, 64
    while done < min(needed, config.max_iterations):
        idx = np.stack([rng.choice(n, 8, replace=False) for _ in range(batch)])
        E = eight_point(b_src[idx], b_tgt[idx])
        masks = angular_errors(E, b_src, b_tgt) < thr
        counts = masks.sum(-1)
        k = int(np.argmax(counts))
        if counts[k] > best_count:
            best_E, best_count, best_mask = E[k], int(counts[k]), masks[k]
            needed = _iterations_needed(best_count / n, 8, config.confidence)
        done += batch
    if best_count < 8:
        return None
    # Re-fit on all inliers once (cheap local optimisation), then keep the better model.
    E = eight_point(b_src[best_mask], b_tgt[best_mask])
    mask = angular_errors(E, b_src, b_tgt) < thr
    if mask.sum() < best_count:
        E, mask = best_E, best_mask
    R, t = decompose_essential(E, b_src[mask], b_tgt[mask])
    return RelativePose(R=R, t=t, inliers=mask)


def ransac_essential_pycolmap(b_src: np.ndarray, b_tgt: np.ndarray, config: RansacConfig = RansacConfig()) -> RelativePose | None:
    """pycolmap's LO-RANSAC 5-point estimator on camera rays; inliers re-scored with our error."""
    import cv2  # noqa: F401  must load before pycolmap: pycolmap's zlib otherwise breaks cv2's PNG writer
    import pycolmap

    if len(b_src) < 5:
        return None
    options = pycolmap.RANSACOptions()
    options.max_error = float(np.radians(config.threshold_deg))
    options.confidence = config.confidence
    options.max_num_trials = config.max_iterations * 10
    options.min_num_trials = min(100, options.max_num_trials)
    options.random_seed = config.seed
    result = pycolmap.estimate_relative_pose(np.ascontiguousarray(b_src, np.float64),
                                             np.ascontiguousarray(b_tgt, np.float64), options)
    if result is None:
        return None
    pose = result["cam2_from_cam1"]
    R, t = pose.rotation.matrix(), np.asarray(pose.translation, np.float64)
    t = t / max(np.linalg.norm(t), 1e-12)
    mask = angular_errors(essential_from_pose(R, t), b_src, b_tgt) < np.radians(config.threshold_deg)
    return RelativePose(R=R, t=t, inliers=mask)


ESTIMATORS = {"pycolmap": ransac_essential_pycolmap, "reference": ransac_essential_reference}


def _tangent_basis(t: np.ndarray) -> np.ndarray:
    """Two unit vectors orthogonal to t (columns of a 3x2 matrix)."""
    helper = np.array([1.0, 0, 0]) if abs(t[0]) < 0.9 else np.array([0, 1.0, 0])
    u = np.cross(t, helper)
    u /= np.linalg.norm(u)
    return np.stack([u, np.cross(t, u)], axis=1)


def _signed_errors(E, b_src, b_tgt):
    n_tgt = b_src @ E.T
    n_src = b_tgt @ E
    dot = np.sum(n_tgt * b_tgt, -1)
    return np.concatenate([dot / np.maximum(np.linalg.norm(n_tgt, axis=-1), 1e-12),
                           dot / np.maximum(np.linalg.norm(n_src, axis=-1), 1e-12)])


def refine_pose(R: np.ndarray, t: np.ndarray, b_src: np.ndarray, b_tgt: np.ndarray,
                threshold_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Non-linear least squares of the angular epipolar errors over (R, unit t), robust loss."""
    from scipy.optimize import least_squares

    basis = _tangent_basis(t)

    def unpack(x):
        R_new = cv.rotation_from_axis_angle(x[:3]) @ R
        t_new = t + basis @ x[3:]
        return R_new, t_new / np.linalg.norm(t_new)

    def residuals(x):
        return _signed_errors(essential_from_pose(*unpack(x)), b_src, b_tgt)

    scale = np.radians(threshold_deg)
    sol = least_squares(residuals, np.zeros(5), loss="soft_l1", f_scale=scale, method="trf", x_scale=1e-3,
                        max_nfev=50)
    return unpack(sol.x)


def estimate_relative_pose(b_src: np.ndarray, b_tgt: np.ndarray, config: RansacConfig = RansacConfig(),
                           estimator: str = "pycolmap", refine: bool = True) -> RelativePose | None:
    """Robust relative pose of the target camera w.r.t. the source from matched bearings."""
    pose = ESTIMATORS[estimator](b_src, b_tgt, config)
    if pose is None or pose.inliers.sum() < 8 or not refine:
        return pose
    R, t = refine_pose(pose.R, pose.t, b_src[pose.inliers], b_tgt[pose.inliers], config.threshold_deg)
    mask = angular_errors(essential_from_pose(R, t), b_src, b_tgt) < np.radians(config.threshold_deg)
    if mask.sum() >= pose.inliers.sum() * 0.9:
        pose = RelativePose(R=R, t=t, inliers=mask)
    return pose
