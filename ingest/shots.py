"""Shot cuts: where an edited video jumps to another place, so that nothing is paired across it.

A 360° frame sees the whole sphere, so its colour histogram barely changes when the camera
turns about the vertical (the usual way it turns) and changes slowly when it travels: fast
motion that would fool a cut detector on flat video moves content around the sphere, not out
of it. Each kept frame is described by colour histograms of three latitude bands (sky, horizon,
ground: a turn keeps them, a jump to another scene does not), with the rig's pixels left out.
A cut between two consecutive kept frames is declared when their histogram distance is both
large in absolute terms and several times the typical distance between neighbouring frames of
that video (a shaky or fast clip has large distances everywhere, a cut stands out from them).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

THUMB_SIZE = (64, 32)  # (width, height) kept per frame until the end of the video


@dataclass(frozen=True)
class CutConfig:
    enabled: bool = True
    min_distance: float = 0.35  # total-variation distance of the band histograms, in [0, 1]
    min_ratio: float = 3.0  # ... and this many times the median distance of the neighbouring frames
    neighbours: int = 8  # frames on each side that set the local median
    bins: tuple[int, int, int] = (16, 4, 4)  # hue, saturation, value


def thumbnail_hsv(equirect_bgr: np.ndarray) -> np.ndarray:
    """The small HSV image a frame is remembered by (uint8, THUMB_SIZE)."""
    import cv2

    small = cv2.resize(equirect_bgr, THUMB_SIZE, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2HSV)


def band_histograms(hsv: np.ndarray, keep: np.ndarray | None, bins=(16, 4, 4)) -> np.ndarray:
    """(3, H*S*V) joint colour histograms of the top, middle and bottom thirds, each summing to 1
    (``keep``: pixels to count, e.g. not the rig)."""
    h = hsv.shape[0]
    # OpenCV's 8-bit hue runs 0..179.
    idx = ((hsv[..., 0].astype(np.int32) * bins[0] // 180) * bins[1]
           + hsv[..., 1].astype(np.int32) * bins[1] // 256) * bins[2] + hsv[..., 2].astype(np.int32) * bins[2] // 256
    n_bins = bins[0] * bins[1] * bins[2]
    out = np.zeros((3, n_bins))
    for b, (y0, y1) in enumerate(((0, h // 3), (h // 3, h - h // 3), (h - h // 3, h))):
        sel = idx[y0:y1] if keep is None else idx[y0:y1][keep[y0:y1]]
        counts = np.bincount(sel.ravel(), minlength=n_bins).astype(np.float64)
        out[b] = counts / counts.sum() if counts.sum() else counts
    return out


def frame_distances(thumbs: list[np.ndarray], rig_mask: np.ndarray | None, config: CutConfig) -> np.ndarray:
    """Distance of each kept frame to the previous one (len - 1 values), in [0, 1]."""
    import cv2

    keep = None
    if rig_mask is not None:
        keep = cv2.resize(rig_mask.astype(np.uint8), THUMB_SIZE, interpolation=cv2.INTER_NEAREST) == 0
        if keep.mean() < 0.05:  # the mask covers nearly everything: judge the whole frame instead
            keep = None
    hists = [band_histograms(t, keep, config.bins) for t in thumbs]
    return np.array([0.5 * np.abs(a - b).sum(axis=1).mean() for a, b in zip(hists, hists[1:])])


def detect_cuts(distances: np.ndarray, config: CutConfig) -> list[tuple[int, float]]:
    """(k, score) for each cut between kept frame k-1 and k; score = distance / local median."""
    cuts = []
    n = len(distances)
    for i, d in enumerate(distances):
        lo, hi = max(0, i - config.neighbours), min(n, i + config.neighbours + 1)
        others = np.concatenate([distances[lo:i], distances[i + 1:hi]])
        typical = float(np.median(others)) if len(others) else 0.0
        score = d / max(typical, 1e-3)
        # With fewer than two neighbours there is no local level to compare with (a 3-frame clip of
        # a car passing under a bridge scores 0.46): only a jump twice the bar counts.
        bar = config.min_distance * (1 if len(others) >= 2 else 2)
        if d >= bar and score >= config.min_ratio:
            cuts.append((i + 1, float(score)))
    return cuts


def shot_indices(n_frames: int, cut_positions: list[int]) -> list[int]:
    """Shot number (0-based) of each of ``n_frames`` kept frames given the cut positions."""
    shots, shot, cuts = [], 0, set(cut_positions)
    for k in range(n_frames):
        shot += k in cuts
        shots.append(shot)
    return shots
