"""`odin eval`: generated views vs true targets on held-out pairs, with baselines from the same run.

* PSNR / SSIM of the generated target, of the source copied as is, of the source reprojected over
  a plane at its robust depth (the geometric input of a model with ``reproject_source``), and
  (given the synthetic world) of the source warped into the target with GT depth: each target pixel is
  lifted with the target's GT depth, moved into the source camera by the pair's exact pose and
  sampled there; pixels the source does not see (outside its frame, or occluded by a closer
  surface in the source's GT depth) keep the copied source pixel.
* Pose following: our own two-view estimator (SIFT, mutual ratio matching, RANSAC on bearings,
  from correspondence/) between the source and the generated view; its rotation and
  translation-direction errors to the requested pose.  The same estimator on (source, true
  target) is reported as the floor that a perfect generator would reach.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import torch

from ingest import conventions as cv
from ingest.atomic import atomic_write_json
from ingest.errors import OdinError
from odin.data import collate, intrinsics_after_load, tensor_image, to_rgb_square
from ingest.image_metrics import psnr, ssim
from ingest.media import image_grid, save_png
from odin.pipeline import OdinPipeline, ViewCondition


# --------------------------------------------------------------------------- GT-depth warp
_VIEW_ID = re.compile(r"/y(-?[\d.]+)p(-?[\d.]+)$")


def _synthetic_source_camera(world, record) -> tuple[np.ndarray, float]:
    """c2w and time of a synthetic pair's source view, from the ids synthetic_gt_pairs writes."""
    from correspondence.synthetic_pairs import view_pose

    match = _VIEW_ID.search(record.src_view_id)
    frame = int(record.src_frame_id.rsplit("/", 1)[-1]) if match else -1
    if not match or not 0 <= frame < len(world):
        raise OdinError(f"pair {record.pair_id} is not a pair of this synthetic world (view id "
                        f"{record.src_view_id!r})", world.root)
    return view_pose(world.poses[frame], float(match[1]), float(match[2])), float(world.times[frame])


def gt_depth_warp(world, sample) -> np.ndarray:
    """The source image warped into the target view with GT depth (see module doc), (H, W, 3) uint8."""
    from ingest.synth import render_perspective

    record, K_src, K_tgt = sample.record, sample.K_src, sample.K_tgt
    c2w_src, time_src = _synthetic_source_camera(world, record)
    T_tgt_from_src = cv.make_pose(sample.R, sample.t * record.scale)
    c2w_tgt = c2w_src @ cv.invert_pose(T_tgt_from_src)
    tgt_frame = int(record.tgt_frame_id.rsplit("/", 1)[-1])
    depth_tgt = render_perspective(world.scene, c2w_tgt, K_tgt, float(world.times[tgt_frame])).depth
    depth_src = render_perspective(world.scene, c2w_src, K_src, time_src).depth
    rays = cv.normalize(cv.perspective_directions(K_tgt)) * depth_tgt[..., None]
    in_src = cv.transform_points(cv.invert_pose(T_tgt_from_src), rays.reshape(-1, 3))
    u, v, z = cv.project_perspective(in_src, K_src)
    h, w = depth_src.shape
    inside = (z > 1e-6) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    col, row = np.clip(u.astype(int), 0, w - 1), np.clip(v.astype(int), 0, h - 1)
    visible = inside & (np.linalg.norm(in_src, axis=1) < depth_src[row, col] * 1.02)
    import cv2

    sampled = cv2.remap(sample.src, (u - 0.5).reshape(h, w).astype(np.float32),
                        (v - 0.5).reshape(h, w).astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.where(visible.reshape(h, w, 1), sampled, sample.src)


# --------------------------------------------------------------------------- pose following
def two_view_pose(src: np.ndarray, tgt: np.ndarray, K_src: cv.Intrinsics, K_tgt: cv.Intrinsics):
    """Relative pose (R, unit t) of ``tgt`` w.r.t. ``src`` with correspondence/'s estimator, or None."""
    import cv2

    from correspondence.essential import RansacConfig, estimate_relative_pose
    from correspondence.features import FeatureConfig, bearings_from_face_pixels
    from correspondence.matching import mutual_ratio_matches

    fc = FeatureConfig()
    sift = cv2.SIFT_create(contrastThreshold=fc.contrast_threshold)
    found = []
    for img, K in ((src, K_src), (tgt, K_tgt)):
        kps, desc = sift.detectAndCompute(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), None)
        if desc is None or len(kps) < 8:
            return None
        pts = np.array([kp.pt for kp in kps], np.float64)
        found.append((bearings_from_face_pixels(pts, K, np.eye(3)), desc))
    matches, _ = mutual_ratio_matches(found[0][1], found[1][1])
    if len(matches) < 8:
        return None
    # About one pixel of angular tolerance at this focal length.
    config = RansacConfig(threshold_deg=math.degrees(1.0 / min(K_src.fx, K_tgt.fx)))
    pose = estimate_relative_pose(found[0][0][matches[:, 0]], found[1][0][matches[:, 1]], config)
    return None if pose is None else (pose.R, pose.t)


def pose_errors(estimate, R: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """(rotation error, translation direction error) in degrees; (nan, nan) when estimation failed."""
    if estimate is None:
        return math.nan, math.nan
    R_est, t_est = estimate
    rot = float(cv.rotation_angle_deg(R_est, R))
    norm = np.linalg.norm(t)
    if norm < 1e-9:
        return rot, math.nan
    cos = float(np.clip(np.dot(t_est, t / norm), -1, 1))
    return rot, math.degrees(math.acos(cos))


def _summary(values: list[float]) -> dict:
    arr = np.asarray(values, np.float64)
    ok = arr[np.isfinite(arr)]
    return {"mean": float(ok.mean()) if ok.size else None, "median": float(np.median(ok)) if ok.size else None,
            "count": int(ok.size), "failed": int(arr.size - ok.size)}


# --------------------------------------------------------------------------- evaluation
def evaluate(pipe: OdinPipeline, pairs_dir, out_dir: str | Path, split: str = "val", max_pairs: int | None = None,
             world=None, steps: int = 50, sampler: str = "ddim", guidance: float = 2.0, batch_size: int = 8,
             seed: int = 0, grid_rows: int = 8, pose_following: bool = True, progress: bool = True,
             split_by: str = "auto", val_fraction: float = 0.2) -> dict:
    """``split`` ("val", "train" or "all") is taken by the rule ``split_by`` (odin/splits.py): the
    same held-out pairs that training left out when given the run's data config."""
    from tqdm import tqdm

    from odin.data import pair_samples
    from odin.splits import load_split

    out_dir = Path(out_dir)
    res, work = pipe.resolution, pipe.work_resolution
    generator = torch.Generator("cpu").manual_seed(seed)
    metrics = {k: [] for k in ("psnr", "ssim", "psnr_copy", "ssim_copy", "psnr_plane", "ssim_plane", "psnr_warp", "ssim_warp",
                               "rot_err", "trans_err", "rot_err_gt", "trans_err_gt")}
    rows, n_done = [], 0
    pair_split = load_split(pairs_dir, split_by, val_fraction)
    samples_iter = pair_samples(pairs_dir, pair_split.ids(split))
    bar = tqdm(total=max_pairs, desc="odin eval", unit="pair", disable=not progress)
    while max_pairs is None or n_done < max_pairs:
        chunk = [s for _, s in zip(range(batch_size if max_pairs is None else min(batch_size, max_pairs - n_done)),
                                   samples_iter)]
        if not chunk:
            break
        batch = collate(chunk, res, work, pairs_dir)
        cond = ViewCondition.from_batch(batch)
        images, _ = pipe([cond], steps=steps, sampler=sampler, guidance=guidance, generator=generator)
        for i, s in enumerate(chunk):
            gen, tgt, src = tensor_image(images[i]), tensor_image(batch.target[i]), tensor_image(batch.source[i])
            metrics["psnr"].append(psnr(gen, tgt))
            metrics["ssim"].append(ssim(gen, tgt))
            metrics["psnr_copy"].append(psnr(src, tgt))
            metrics["ssim_copy"].append(ssim(src, tgt))
            plane = tensor_image(batch.reprojected[i])
            metrics["psnr_plane"].append(psnr(plane, tgt))
            metrics["ssim_plane"].append(ssim(plane, tgt))
            row = [src, gen, tgt]
            if world is not None:
                warp = to_rgb_square(gt_depth_warp(world, s), res)[0]
                metrics["psnr_warp"].append(psnr(warp, tgt))
                metrics["ssim_warp"].append(ssim(warp, tgt))
                row.insert(1, warp)
            if pose_following:
                K_src, K_tgt = intrinsics_after_load(s.K_src, res), intrinsics_after_load(s.K_tgt, res)
                for key, img in (("", gen), ("_gt", tgt)):
                    r_err, t_err = pose_errors(two_view_pose(src, img, K_src, K_tgt), s.R, s.t)
                    metrics[f"rot_err{key}"].append(r_err)
                    metrics[f"trans_err{key}"].append(t_err)
            if len(rows) < grid_rows:
                rows.append(row)
        n_done += len(chunk)
        bar.update(len(chunk))
    bar.close()
    if n_done == 0:
        raise OdinError(f"no pairs in split {split!r} to evaluate ({pair_split.summary()})", pairs_dir)
    report = {"pairs": n_done, "split": split, "split_by": pair_split.rule, "steps": steps, "sampler": sampler, "guidance": guidance,
              "columns_of_grid": ["source"] + (["gt_depth_warp"] if world is not None else []) + ["generated", "target"],
              **{k: _summary(v) for k, v in metrics.items() if v}}
    save_png(out_dir / "eval_grid.png", image_grid(rows))
    atomic_write_json(out_dir / "eval.json", report)
    return report

