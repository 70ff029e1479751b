"""Pose conditioning: per-pixel Plücker ray maps and the global pose vector.

Both describe the relative pose ``T_tgt_from_src`` of ``ingest.conventions`` (it maps source-camera
points into the target camera).  The source camera is the reference frame: the Plücker map holds,
for every pixel of the target image, the ray that pixel sees expressed in source-camera
coordinates, so the map alone tells the network both where the target camera is and how it looks.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ingest import conventions as cv
from ingest.errors import OdinError

POSE_VECTOR_DIM = 10  # 6-D rotation + translation (3) + log scale (1)
PLUCKER_CHANNELS = 6


def check_rotation(R, source=None) -> None:
    """Refuse a relative pose whose rotation block is not a rotation (one line, naming the source)."""
    R = np.asarray(R.detach().cpu() if isinstance(R, torch.Tensor) else R, dtype=np.float64)
    for i, Ri in enumerate(R.reshape(-1, 3, 3)):
        if not cv.is_rotation(Ri):
            det = np.linalg.det(Ri) if np.all(np.isfinite(Ri)) else float("nan")
            where = f" (pose {i})" if R.ndim > 2 else ""
            raise OdinError(f"pose{where} is not a rotation: R R^T != I or det(R) = {det:.4g} != 1", source)


def pose_vector(R: torch.Tensor, t: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(B, 10) global pose code: 6-D rotation, translation (scale-normalised unit), log scale."""
    scale = torch.as_tensor(scale, dtype=R.dtype, device=R.device).reshape(-1, 1)
    return torch.cat([cv.rotation_6d_from_rotation(R), t, torch.log(scale.clamp_min(1e-6))], dim=-1).float()


def plucker_map(R: torch.Tensor, t: torch.Tensor, K: cv.Intrinsics) -> torch.Tensor:
    """(6, H, W) Plücker rays (d, o x d) of the target camera's pixels, in the source camera's frame."""
    T_src_from_tgt = cv.invert_pose(cv.make_pose(R.double(), t.double()))
    dirs = cv.perspective_directions(K, like=T_src_from_tgt)
    origins, directions = cv.rays_world(T_src_from_tgt, dirs)
    return cv.plucker_rays(origins, directions).permute(2, 0, 1).float()


def plucker_maps(R: torch.Tensor, t: torch.Tensor, Ks: list[cv.Intrinsics]) -> torch.Tensor:
    """(B, 6, H, W) for a batch of relative poses and target intrinsics (all of one size)."""
    return torch.stack([plucker_map(R[i], t[i], Ks[i]) for i in range(len(Ks))])


def plane_reprojection(images: torch.Tensor, R: torch.Tensor, t: torch.Tensor, Ks_src: list[cv.Intrinsics],
                       Ks_tgt: list[cv.Intrinsics], depth: float = 1.0) -> torch.Tensor:
    """(B, C, H, W): each source image as the target camera would see it if the scene were the plane
    z = ``depth`` of the source camera.

    Pairs divide ``t`` by a robust depth of the source view, so depth 1 is that depth whatever the
    scene's scale: the warp is right where the scene is near its typical depth and off by the
    parallax elsewhere, which is what the network is left to correct.  Target rays that miss the
    plane (it lies behind them) take the source's border colour."""
    grids = []
    for i in range(images.shape[0]):
        T_src_from_tgt = cv.invert_pose(cv.make_pose(R[i].double(), t[i].double()))
        origins, directions = cv.rays_world(T_src_from_tgt, cv.perspective_directions(Ks_tgt[i], like=T_src_from_tgt))
        dz = directions[..., 2]
        dz = torch.where(dz.abs() < 1e-9, torch.full_like(dz, 1e-9), dz)
        reach = (depth - origins[..., 2]) / dz
        u, v, _ = cv.project_perspective(origins + reach[..., None] * directions, Ks_src[i])
        K = Ks_src[i]
        grid = torch.stack([2 * u / K.width - 1, 2 * v / K.height - 1], dim=-1)
        grids.append(torch.where((reach > 0)[..., None], grid.clamp(-2, 2), torch.full_like(grid, 2.0)))
    grid = torch.stack(grids).to(images.device, images.dtype)
    return torch.nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def resize_intrinsics(K: cv.Intrinsics, width: int, height: int) -> cv.Intrinsics:
    """Intrinsics of the same camera after resizing its image to width x height."""
    return K.scaled(width / K.width, height / K.height)


def square_crop_intrinsics(K: cv.Intrinsics) -> cv.Intrinsics:
    """Intrinsics after a centred crop to the largest square (what image loading does)."""
    side = min(K.width, K.height)
    dx, dy = (K.width - side) / 2, (K.height - side) / 2
    return cv.Intrinsics(K.fx, K.fy, K.cx - math.floor(dx), K.cy - math.floor(dy), side, side)


def keep_mask(batch_size: int, dropout: float, generator: torch.Generator, device) -> torch.Tensor:
    """(B,) bool: True keeps the conditioning, False drops it (classifier-free guidance training)."""
    if dropout <= 0:
        return torch.ones(batch_size, dtype=torch.bool, device=device)
    return torch.rand(batch_size, generator=generator, device=generator.device).to(device) >= dropout
