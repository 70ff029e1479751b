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

import cv2  # also: must load before pycolmap, whose zlib otherwise breaks cv2's PNG writer
import numpy as np



@dataclass(frozen=True)
class RansacConfig:
    threshold_deg: float = 0.15  # angular inlier threshold (about 0.5 px at 1024-wide equirect)
    # The hypothesis search scores at search_factor x threshold: at the tight threshold only
    # ~60% of good matches count (sub-pixel noise), so adaptive stopping needs 5x more trials;
    # the refinement at the tight threshold then restores the accuracy (bench/mine.py).
    search_factor: float = 3.0
    max_iterations: int = 2000
    min_iterations: int = 20  # pycolmap's default floor of 100 trials dominated its run time
    confidence: float = 0.9999
    seed: int = 0

    @property
    def search_threshold(self) -> float:
        """Radians."""
        return float(np.radians(self.threshold_deg * self.search_factor))


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
    thr = config.search_threshold
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
    import pycolmap

    if len(b_src) < 5:
        return None
    options = pycolmap.RANSACOptions()
    options.max_error = config.search_threshold
    options.confidence = config.confidence
    options.max_num_trials = config.max_iterations * 10
    options.min_num_trials = min(config.min_iterations, options.max_num_trials)
    options.random_seed = config.seed
    result = pycolmap.estimate_relative_pose(np.ascontiguousarray(b_src, np.float64),
                                             np.ascontiguousarray(b_tgt, np.float64), options)
    if result is None:
        return None
    pose = result["cam2_from_cam1"]
    R, t = pose.rotation.matrix(), np.asarray(pose.translation, np.float64)
    t = t / max(np.linalg.norm(t), 1e-12)
    mask = angular_errors(essential_from_pose(R, t), b_src, b_tgt) < config.search_threshold
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


def _soft_l1_cost(r: np.ndarray, scale: float) -> float:
    return float(np.sum(np.sqrt(1 + (r / scale) ** 2) - 1))


def refine_pose(R: np.ndarray, t: np.ndarray, b_src: np.ndarray, b_tgt: np.ndarray,
                threshold_deg: float, iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Robust non-linear least squares of the angular epipolar errors over (R, unit t).

    Levenberg-Marquardt on iteratively reweighted residuals (soft-L1 loss at the inlier
    threshold), forward-difference Jacobian over 5 parameters: a rotation increment and a
    step of t in its tangent plane. Hand-written because scipy's least_squares spent ~4x
    more time in its own bookkeeping than in the residuals on these small problems.
    """
    basis = _tangent_basis(t)
    scale = np.radians(threshold_deg)

    def unpack(x):
        t_new = t + basis @ x[3:]
        # cv2.Rodrigues: the same rotation as cv.rotation_from_axis_angle, 40x less overhead
        return cv2.Rodrigues(x[:3])[0] @ R, t_new / np.linalg.norm(t_new)

    def residuals(x):
        return _signed_errors(essential_from_pose(*unpack(x)), b_src, b_tgt)

    x, r, damping, step = np.zeros(5), residuals(np.zeros(5)), 1e-3, 1e-7
    cost = _soft_l1_cost(r, scale)
    for _ in range(iterations):
        J = np.stack([(residuals(x + step * e) - r) / step for e in np.eye(5)], axis=1)
        w = 1 / np.sqrt(1 + (r / scale) ** 2)  # soft-L1 IRLS weights
        A, g = J.T @ (w[:, None] * J), J.T @ (w * r)
        dx = np.linalg.solve(A + damping * np.diag(np.diag(A) + 1e-18), -g)
        r_new = residuals(x + dx)
        cost_new = _soft_l1_cost(r_new, scale)
        if cost_new >= cost:
            damping *= 10
            continue
        x, r, damping, converged = x + dx, r_new, damping / 10, cost - cost_new < 1e-6 * cost
        cost = cost_new
        if converged:
            break
    return unpack(x)


def estimate_relative_pose(b_src: np.ndarray, b_tgt: np.ndarray, config: RansacConfig = RansacConfig(),
                           estimator: str = "pycolmap", refine: bool = True) -> RelativePose | None:
    """Robust relative pose of the target camera w.r.t. the source from matched bearings.

    The search's (loose) inliers are refined; the result's inliers are at ``threshold_deg``.
    """
    pose = ESTIMATORS[estimator](b_src, b_tgt, config)
    if pose is None:
        return None
    thr = np.radians(config.threshold_deg)
    tight = RelativePose(pose.R, pose.t, angular_errors(essential_from_pose(pose.R, pose.t), b_src, b_tgt) < thr)
    if pose.inliers.sum() < 8 or not refine:
        return tight
    R, t, mask = pose.R, pose.t, pose.inliers
    for _ in range(2):  # loose inliers first, then the tight inliers of the refined pose
        R, t = refine_pose(R, t, b_src[mask], b_tgt[mask], config.threshold_deg)
        mask = angular_errors(essential_from_pose(R, t), b_src, b_tgt) < thr
    return RelativePose(R=R, t=t, inliers=mask) if mask.sum() >= tight.inliers.sum() * 0.9 else tight
