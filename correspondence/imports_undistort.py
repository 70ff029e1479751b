"""Lens distortion is removed at load: each distorted frame is resampled to a pinhole image with the
same K (OpenCV's radial-tangential model, k1, k2, p1, p2, k3), cached as PNG beside the scene.

The renderers downstream (NRC, the viewer, Odin) are pinhole-only; resampling once keeps them so.
Pixels of the pinhole image that no source pixel covers (the corners, under barrel distortion) are
marked in a mask written beside the image (``mask_path``: nonzero = use), together with the frame's
own mask when it has one.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from correspondence.nerfstudio import PosedFrame, PosedScene
from ingest import conventions as cv
from ingest.atomic import atomic_path
from ingest.errors import OdinError


def opencv_camera_matrix(K: cv.Intrinsics) -> np.ndarray:
    """Our K (pixel centres at +0.5) as OpenCV's (pixel centres on integers)."""
    M = K.matrix()
    M[0, 2] -= 0.5
    M[1, 2] -= 0.5
    return M


def undistortion_maps(K: cv.Intrinsics, distortion) -> tuple[np.ndarray, np.ndarray]:
    """(map_x, map_y), float32 (H, W): where in the distorted image each pinhole pixel (same K) samples."""
    M = opencv_camera_matrix(K)
    return cv2.initUndistortRectifyMap(M, np.asarray(distortion, np.float64), None, M, (K.width, K.height),
                                       cv2.CV_32FC1)


def undistort_image(image: np.ndarray, K: cv.Intrinsics, distortion,
                    interpolation: int = cv2.INTER_LINEAR) -> tuple[np.ndarray, np.ndarray]:
    """(pinhole image, bool (H, W) mask of pixels that the distorted image covers)."""
    mx, my = undistortion_maps(K, distortion)
    out = cv2.remap(image, mx, my, interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    h, w = image.shape[:2]
    covered = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)  # bilinear taps all inside the image
    return out, covered


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # keeps bit depth and channels; BGR in, BGR out
    if image is None:
        raise OdinError("unreadable image", path)
    return image


def _write_png(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise OdinError("could not write image", path)


def _cache_dir(scene: PosedScene) -> Path:
    folder = scene.source if scene.source.is_dir() else scene.source.parent
    cache = folder / ".odin_undistorted"
    try:
        cache.mkdir(exist_ok=True)
        if os.access(cache, os.W_OK):
            return cache
    except OSError:
        pass
    # a read-only scene: cache per scene folder under the temp dir instead
    key = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:12]
    cache = Path(tempfile.gettempdir()) / "odin_undistorted" / key
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def undistort_frame(frame: PosedFrame, cache: Path) -> PosedFrame:
    """The frame as an undistorted pinhole (cached; the key covers the image file, K and the coefficients)."""
    src = Path(frame.image_path)
    try:
        st = src.stat()
    except FileNotFoundError:
        raise OdinError("image missing", src) from None
    key = hashlib.sha1(repr((str(src.resolve()), st.st_size, st.st_mtime_ns, frame.intrinsics, frame.distortion,
                             None if frame.mask_path is None else str(frame.mask_path))).encode()).hexdigest()[:12]
    image_out, mask_out = cache / f"{src.stem}_{key}.png", cache / f"{src.stem}_{key}_mask.png"
    if not image_out.exists():
        image = _read(src)
        if image.shape[:2] != (frame.height, frame.width):
            raise OdinError(f"image is {image.shape[1]}x{image.shape[0]} but its camera says "
                            f"{frame.width}x{frame.height}", src)
        out, covered = undistort_image(image, frame.intrinsics, frame.distortion)
        if frame.mask_path is not None:
            mask = _read(Path(frame.mask_path))
            mask = mask.max(-1) if mask.ndim == 3 else mask
            covered &= undistort_image(mask, frame.intrinsics, frame.distortion, cv2.INTER_NEAREST)[0] > 0
        _write_png(mask_out, covered.astype(np.uint8) * 255)
        _write_png(image_out, out)  # last: its presence means both are complete
    return replace(frame, image_path=image_out, distortion=None, mask_path=mask_out)


def undistort_scene(scene: PosedScene) -> PosedScene:
    cache = _cache_dir(scene)
    frames = [undistort_frame(f, cache) if f.distortion is not None else f for f in scene.frames]
    return replace(scene, frames=frames)
