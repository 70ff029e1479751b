"""Image quality metrics shared by every evaluation (NRC held-out views, Odin generations)."""
from __future__ import annotations

import numpy as np


def as_unit(img: np.ndarray) -> np.ndarray:
    """float64 image in [0, 1] (uint8 images are scaled)."""
    return img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)


def psnr(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of images in [0, 1] or uint8, over ``mask`` pixels when given."""
    err = (as_unit(pred) - as_unit(target)) ** 2
    err = err.mean(-1) if err.ndim == 3 else err
    mse = float(err[mask].mean() if mask is not None else err.mean())
    return float(-10 * np.log10(max(mse, 1e-12)))


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """SSIM (scikit-image, 7x7 window or the largest odd one that fits)."""
    from skimage.metrics import structural_similarity

    p, t = as_unit(pred), as_unit(target)
    win = min(7, *(s - (1 - s % 2) for s in p.shape[:2]))
    return float(structural_similarity(p, t, channel_axis=-1 if p.ndim == 3 else None, data_range=1.0, win_size=max(win, 3)))
