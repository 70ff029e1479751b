"""SIFT features of an equirectangular frame, lifted to unit bearing vectors.

Equirect images stretch the sky and the ground, so SIFT runs on low-distortion perspective
faces (a cube around the camera, each face slightly wider than 90° so keypoints near an
edge keep their support region). Every keypoint is lifted to a camera-frame bearing of the
360° frame; a keypoint is kept only by the face whose axis is nearest to its bearing, so
the overlap between faces yields no duplicates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ingest import conventions as cv
from ingest.views import ViewSpec, extract_views, rotation_frame_from_view

# (yaw, pitch) in degrees of the six cube faces; pitch +90 looks up (ingest.conventions).
CUBE_FACES = ((0.0, 0.0), (90.0, 0.0), (180.0, 0.0), (-90.0, 0.0), (0.0, 90.0), (0.0, -90.0))


@dataclass(frozen=True)
class FeatureConfig:
    # Strongest keypoints kept per face (after dropping those another face owns): matching
    # cost grows with the square of the count, accuracy barely beyond a few hundred per face.
    max_features_per_face: int = 300
    face_fov_deg: float = 100.0  # > 90 so that keypoints at a face edge keep their neighbourhood
    face_scale: float = 1.0  # face focal length relative to the equirect's pixels per radian
    contrast_threshold: float = 0.02
    root_sift: bool = True


@dataclass
class FrameFeatures:
    bearings: np.ndarray  # (N, 3) float64 unit camera-frame rays of the 360° frame
    descriptors: np.ndarray  # (N, 128) float32
    sizes: np.ndarray  # (N,) keypoint scale in face pixels

    def __len__(self) -> int:
        return len(self.bearings)

    def subset(self, mask: np.ndarray) -> "FrameFeatures":
        return FrameFeatures(self.bearings[mask], self.descriptors[mask], self.sizes[mask])


def face_specs(equirect_width: int, config: FeatureConfig) -> list[ViewSpec]:
    """The cube faces as ingest views, sized so a face pixel is about an equator equirect pixel."""
    focal = config.face_scale * equirect_width / (2 * math.pi)
    size = int(round(2 * focal * math.tan(math.radians(config.face_fov_deg) / 2)))
    return [ViewSpec(yaw, pitch, config.face_fov_deg, size) for yaw, pitch in CUBE_FACES]


def bearings_from_face_pixels(pts_cv2: np.ndarray, K: cv.Intrinsics, R_frame_from_view: np.ndarray) -> np.ndarray:
    """OpenCV keypoint coordinates (centres at integers) -> unit bearings in the 360° frame."""
    u, v = pts_cv2[:, 0] + 0.5, pts_cv2[:, 1] + 0.5
    rays = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u)], axis=-1)
    return cv.normalize(rays @ R_frame_from_view.T)


def nearest_face(bearings: np.ndarray, faces=CUBE_FACES) -> np.ndarray:
    """Index of the face whose optical axis is closest to each bearing."""
    axes = np.stack([rotation_frame_from_view(y, p)[:, 2] for y, p in faces])
    return np.argmax(bearings @ axes.T, axis=-1)


def _root_sift(desc: np.ndarray) -> np.ndarray:
    desc = desc / np.maximum(np.abs(desc).sum(-1, keepdims=True), 1e-12)
    return np.sqrt(desc).astype(np.float32)


def _strongest(own: np.ndarray, keypoints, limit: int) -> np.ndarray:
    """Indices of the ``limit`` owned keypoints of highest response."""
    idx = np.flatnonzero(own)
    if len(idx) > limit:
        response = np.array([keypoints[i].response for i in idx])
        idx = np.sort(idx[np.argsort(-response, kind="stable")[:limit]])
    return idx


def _face_features(sift, face: np.ndarray, spec: ViewSpec, k: int, limit: int, rig_mask: np.ndarray | None):
    """(bearings, descriptors, sizes) of the keypoints face ``k`` owns (off the rig), or None.

    Detection and description are split so that descriptors (2/3 of SIFT's time) are
    computed only for the keypoints kept: owned by this face and among the strongest.
    """
    keypoints = sift.detect(face, None)
    if not keypoints:
        return None
    pts = np.array([kp.pt for kp in keypoints], np.float64)
    b = bearings_from_face_pixels(pts, spec.intrinsics, spec.R_frame_from_view)
    own = nearest_face(b) == k
    if rig_mask is not None:  # before choosing the strongest: the face keeps its quota off the rig
        own &= ~on_mask(b, rig_mask)
    keep = _strongest(own, keypoints, limit)
    kept = [keypoints[i] for i in keep]
    kept, desc = sift.compute(face, kept)
    if desc is None or not kept:
        return None
    # compute() may drop keypoints (none at these borders in practice): re-lift what it kept.
    pts = np.array([kp.pt for kp in kept], np.float64)
    return (bearings_from_face_pixels(pts, spec.intrinsics, spec.R_frame_from_view), desc,
            np.array([kp.size for kp in kept], np.float32))


def on_mask(bearings: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Whether each camera-frame bearing falls on a True pixel of an equirect ``mask`` (any size)."""
    h, w = mask.shape
    u, v = cv.equirect_pixel_from_direction(bearings, w, h)
    cols = np.clip(np.floor(u).astype(np.int64), 0, w - 1)
    rows = np.clip(np.floor(v).astype(np.int64), 0, h - 1)
    return mask[rows, cols]


def extract_features(equirect: np.ndarray, config: FeatureConfig = FeatureConfig(),
                     rig_mask: np.ndarray | None = None) -> FrameFeatures:
    """SIFT on the cube faces of one equirect frame (H, W, 3) uint8 -> bearings + descriptors.

    ``rig_mask`` (equirect (H', W') bool, any resolution, True = rig): keypoints on it are
    dropped; they sit still while the scene moves and would vote for zero parallax.
    """
    gray = cv2.cvtColor(equirect, cv2.COLOR_RGB2GRAY) if equirect.ndim == 3 else equirect
    specs = face_specs(gray.shape[1], config)
    sift = cv2.SIFT_create(contrastThreshold=config.contrast_threshold)
    found = [_face_features(sift, face, spec, k, config.max_features_per_face, rig_mask)
             for k, (spec, face) in enumerate(zip(specs, extract_views(gray, specs)))]
    found = [f for f in found if f is not None]
    if not found:
        return FrameFeatures(np.zeros((0, 3)), np.zeros((0, 128), np.float32), np.zeros(0, np.float32))
    bearings, descs, sizes = zip(*found)
    desc = np.concatenate(descs).astype(np.float32)
    return FrameFeatures(np.concatenate(bearings), _root_sift(desc) if config.root_sift else desc,
                         np.concatenate(sizes))
