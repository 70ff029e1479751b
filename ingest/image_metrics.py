"""Image quality metrics shared by every evaluation (NRC held-out views, Odin generations).

Both metrics score images as they would be saved: float renders are first rounded to 8-bit
levels (``to_uint8``), as papers and toolkits do when they compare PNGs, so our numbers can be
put beside theirs. SSIM is the standard one of Wang et al. (2004): an 11x11 Gaussian window with
sigma 1.5, population (not sample) covariances, K1 = 0.01, K2 = 0.03, averaged over the pixels whose
window lies inside the image and over channels -- equal to torchmetrics' default and to
``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1)``.
"""
from __future__ import annotations

import numpy as np

SSIM_SIGMA = 1.5
SSIM_WINDOW = 11
SSIM_K1, SSIM_K2 = 0.01, 0.03


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """8-bit levels of an image in [0, 1] (clipped, rounded to nearest); uint8 passes through."""
    return rgb if rgb.dtype == np.uint8 else np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def as_unit(img: np.ndarray) -> np.ndarray:
    """float64 image in [0, 1] (uint8 images are scaled)."""
    return img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)


def quantised(img: np.ndarray) -> np.ndarray:
    """float64 in [0, 1] on the 256 levels an 8-bit image can hold."""
    return as_unit(to_uint8(np.asarray(img)))


def psnr(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB of 8-bit-rounded images (given in [0, 1] or uint8), over ``mask`` pixels when given."""
    err = (quantised(pred) - quantised(target)) ** 2
    err = err.mean(-1) if err.ndim == 3 else err
    mse = float(err[mask].mean() if mask is not None else err.mean())
    return float(-10 * np.log10(max(mse, 1e-12)))


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> np.ndarray:
    """Normalised 1-D Gaussian taps; the 2-D window is its outer product."""
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(img: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable correlation over axes 0 and 1, keeping only positions whose window fits inside."""
    from numpy.lib.stride_tricks import sliding_window_view

    k = len(taps)
    rows = sliding_window_view(img, k, axis=0) @ taps
    return sliding_window_view(rows, k, axis=1) @ taps


def ssim_unit(x: np.ndarray, y: np.ndarray) -> float:
    """Gaussian-window SSIM of float images with data range 1, (H, W) or (H, W, C), no rounding;
    NaN for images smaller than the 11x11 window."""
    if x.shape != y.shape:
        raise ValueError(f"SSIM needs images of one shape, got {x.shape} and {y.shape}")
    if min(x.shape[:2]) < SSIM_WINDOW:  # undefined (skimage refuses): NaN, which reports write as null
        return float("nan")
    taps = gaussian_window()
    c1, c2 = SSIM_K1**2, SSIM_K2**2

    def blur(a):
        return _filter_valid(a, taps)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """SSIM (Gaussian window, sigma 1.5, 11x11) of 8-bit-rounded images given in [0, 1] or uint8."""
    return ssim_unit(quantised(pred), quantised(target))
