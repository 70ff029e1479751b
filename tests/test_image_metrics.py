"""Standard image metrics: Gaussian-window SSIM (Wang et al. 2004) and PSNR on 8-bit-rounded images."""
from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from ingest.image_metrics import psnr, ssim, ssim_unit, to_uint8

C1, C2 = 0.01**2, 0.03**2


def _skimage_gaussian(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(a, b, channel_axis=-1 if a.ndim == 3 else None, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, data_range=1.0)


@pytest.mark.parametrize("shape", [(40, 57, 3), (33, 21)])
def test_ssim_equals_skimage_gaussian_window(shape):
    rng = np.random.default_rng(1)
    a = rng.random(shape)
    b = np.clip(a + 0.1 * rng.standard_normal(shape), 0, 1)
    assert ssim_unit(a, b) == pytest.approx(_skimage_gaussian(a, b), abs=1e-12)
    # uint8 inputs are scored on their levels, the same as skimage on level / 255.
    a8, b8 = to_uint8(a), to_uint8(b)
    assert ssim(a8, b8) == pytest.approx(_skimage_gaussian(a8 / 255.0, b8 / 255.0), abs=1e-12)


def test_ssim_published_reference_value():
    """torchmetrics' documented example: uniform [0, 1) images of 3x3x256x256 against 0.75 times
    themselves give SSIM 0.9219 (Gaussian 11x11, sigma 1.5, data range 1). Averaged over 590k
    pixels, the value does not depend on which random draw is used (spread ~1e-6)."""
    images = np.random.default_rng(0).random((3, 256, 256, 3))
    value = np.mean([ssim_unit(x, 0.75 * x) for x in images])
    assert round(value, 4) == 0.9219


def test_ssim_hand_computed_constant_images():
    """Constant images: every local variance is 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1)."""
    a, b = np.full((16, 20), 0.5), np.full((16, 20), 0.25)
    assert ssim_unit(a, b) == pytest.approx((2 * 0.5 * 0.25 + C1) / (0.5**2 + 0.25**2 + C1), rel=1e-12)
    assert ssim_unit(a, a) == pytest.approx(1.0)


def test_ssim_hand_computed_checkerboard_against_flat():
    """x = m + d(-1)^(i+j) against the flat image m. The Gaussian window (taps g_k, k = -5..5) sees
    local mean m +- d s^2 and variance d^2 (1 - s^4), with s = sum_k g_k (-1)^k; half the pixels
    take each sign, and the flat image has no variance or covariance."""
    m, d = 0.5, 0.2
    k = np.arange(-5, 6)
    g = np.exp(-k**2 / (2 * 1.5**2))
    s = float(np.sum(g * (-1.0) ** k) / g.sum())
    i, j = np.indices((30, 30))
    x = m + d * (-1.0) ** (i + j)
    var = d**2 * (1 - s**4)
    expected = np.mean([(2 * mu * m + C1) / (mu**2 + m**2 + C1) * C2 / (var + C2) for mu in (m + d * s**2, m - d * s**2)])
    assert ssim_unit(x, np.full_like(x, m)) == pytest.approx(expected, rel=1e-9)
    assert expected < 0.1  # the structure term dominates: a flat guess of a texture scores low


def test_ssim_is_undefined_below_its_window_and_refuses_shape_mismatch():
    assert np.isnan(ssim(np.zeros((10, 40, 3)), np.zeros((10, 40, 3))))
    assert not np.isnan(ssim(np.zeros((11, 11, 3)), np.zeros((11, 11, 3))))
    with pytest.raises(ValueError, match="one shape"):
        ssim(np.zeros((20, 20)), np.zeros((20, 21)))


def test_psnr_is_measured_on_8_bit_levels():
    target = np.zeros((8, 8, 3))
    # 0.1 is saved as level round(25.5) = 26 (half to even), so the error is 26/255, not 0.1.
    assert psnr(target + 0.1, target) == pytest.approx(20 * np.log10(255 / 26))
    # Differences below half a level vanish once rounded; values outside [0, 1] are clipped.
    assert psnr(target + 0.4 / 255, target) == pytest.approx(120.0)
    assert psnr(np.full((8, 8, 3), 1.7), np.ones((8, 8, 3), np.uint8) * 255) == pytest.approx(120.0)
    # A float render scores what its saved PNG would.
    render = np.random.default_rng(2).random((12, 9, 3))
    gt = (np.random.default_rng(3).random((12, 9, 3)) * 255).astype(np.uint8)
    assert psnr(render, gt) == psnr(to_uint8(render), gt)
    mse = np.mean((to_uint8(render).astype(float) - gt) ** 2) / 255**2
    assert psnr(render, gt) == pytest.approx(-10 * np.log10(mse))


def test_psnr_mask_selects_pixels():
    target = np.zeros((4, 4, 3), np.uint8)
    pred = target.copy()
    pred[0] = 51  # 0.2: 13.98 dB where it differs
    mask = np.zeros((4, 4), bool)
    mask[0] = True
    assert psnr(pred, target, mask) == pytest.approx(20 * np.log10(255 / 51))
    assert psnr(pred, target, ~mask) == pytest.approx(120.0)
