"""Ground-truth pairs from the synthetic world: exact relative poses, overlap and motion masks.

They are the oracle against which mined pairs are judged, and training data for Odin tests
that must not depend on the miner's accuracy. Same format as mined pairs (``source = "gt"``).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from correspondence.pairs_io import PairRecord, PairsWriter
from ingest import conventions as cv
from ingest.synth import SyntheticWorld, render_perspective
from ingest.views import rotation_frame_from_view


def view_pose(c2w_frame: np.ndarray, yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Camera-to-world of a perspective view at (yaw, pitch) inside an equirectangular frame."""
    return c2w_frame @ cv.make_pose(rotation_frame_from_view(yaw_deg, pitch_deg), np.zeros(3))


def covisible_fraction(depth_src: np.ndarray, c2w_src: np.ndarray, K_src: cv.Intrinsics,
                       depth_tgt: np.ndarray, c2w_tgt: np.ndarray, K_tgt: cv.Intrinsics, tol: float = 0.02) -> float:
    """Fraction of source pixels whose surface point is visible in the target view (GT depth test)."""
    dirs = cv.normalize(cv.perspective_directions(K_src)).reshape(-1, 3)
    points = cv.transform_points(c2w_src, dirs * depth_src.reshape(-1, 1))
    in_tgt = cv.transform_points(cv.invert_pose(c2w_tgt), points)
    u, v, z = cv.project_perspective(in_tgt, K_tgt)
    inside = (z > 1e-6) & (u >= 0) & (u < K_tgt.width) & (v >= 0) & (v < K_tgt.height)
    if not inside.any():
        return 0.0
    seen = depth_tgt[v[inside].astype(int), u[inside].astype(int)]
    return float(np.mean(np.abs(np.linalg.norm(in_tgt[inside], axis=1) - seen) < tol * seen) * inside.mean())


def synthetic_gt_pairs(world: SyntheticWorld, out_dir: str | Path, n_pairs: int, view_size: int = 64,
                       fov_deg: float = 90.0, seed: int = 0, max_frame_gap: int = 10, max_yaw_offset_deg: float = 30.0,
                       val_fraction: float = 0.1, min_overlap: float = 0.2) -> Path:
    """Render ``n_pairs`` co-visible perspective pairs with exact poses into a PAIRS folder."""
    rng = np.random.default_rng(seed)
    K = cv.Intrinsics.from_fov(view_size, view_size, fov_deg)
    moving_ids = [o.id for o in world.scene.objects if o.moving]
    video_id = f"synthetic-{world.root.name}"
    writer = PairsWriter(out_dir)
    writer.begin_video(video_id)
    made, attempts = 0, 0
    while made < n_pairs and attempts < 20 * n_pairs:
        attempts += 1
        i = int(rng.integers(0, len(world)))
        j = int(np.clip(i + rng.integers(-max_frame_gap, max_frame_gap + 1), 0, len(world) - 1))
        if i == j:
            continue
        yaw_i, pitch_i = rng.uniform(-180, 180), rng.uniform(-15, 15)
        c2w_src = view_pose(world.poses[i], yaw_i, pitch_i)
        # Aim the target roughly where the source looks, in the world frame, so the views overlap.
        look = c2w_src[:3, 2]
        look_in_j = world.poses[j][:3, :3].T @ look
        lon, lat = cv.lonlat_from_direction(look_in_j)
        yaw_j = math.degrees(lon) + rng.uniform(-max_yaw_offset_deg, max_yaw_offset_deg)
        pitch_j = float(np.clip(math.degrees(lat) + rng.uniform(-10, 10), -30, 30))
        c2w_tgt = view_pose(world.poses[j], yaw_j, pitch_j)
        src = render_perspective(world.scene, c2w_src, K, float(world.times[i]))
        tgt = render_perspective(world.scene, c2w_tgt, K, float(world.times[j]))
        overlap = covisible_fraction(src.depth, c2w_src, K, tgt.depth, c2w_tgt, K)
        if overlap < min_overlap:
            continue
        T = cv.relative_pose(c2w_src, c2w_tgt)
        scale = float(np.median(src.depth))
        motion = np.isin(tgt.ids, moving_ids).astype(np.float32)
        frame_i, frame_j = f"{video_id}/{i:06d}", f"{video_id}/{j:06d}"
        record = PairRecord(
            pair_id=f"{video_id}/gt{made:06d}", video_id=video_id, src_frame_id=frame_i, tgt_frame_id=frame_j,
            src_view_id=f"{frame_i}/y{yaw_i:.1f}p{pitch_i:.1f}", tgt_view_id=f"{frame_j}/y{yaw_j:.1f}p{pitch_j:.1f}",
            R=T[:3, :3].reshape(-1).tolist(), t=(T[:3, 3] / scale).tolist(), scale=scale,
            inliers=0, overlap=overlap, motion_fraction=float(motion.mean()), K_src=K.to_dict(), K_tgt=K.to_dict(),
            split="val" if rng.random() < val_fraction else "train", source="gt")
        writer.add(record, src.rgb, tgt.rgb, motion if moving_ids else None)
        made += 1
    writer.commit_video(video_id)
    return writer.close()
