"""Frame filters: drop black/uniform, blurred and near-duplicate frames, saying why.

All measures are taken on a small grey thumbnail of the equirect frame (``THUMB_WIDTH`` wide)
so thresholds do not depend on the video's resolution, and cost little.
The polar bands (top and bottom 1/6) are left out: the rig, the car roof or a tripod often
sits there, and it does not move with the scene.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ingest.errors import OdinError

THUMB_WIDTH = 512


@dataclass(frozen=True)
class FilterConfig:
    enabled: bool = True
    black_max_mean: float = 12.0  # mean grey level (0-255) below which a frame is "black"
    uniform_max_std: float = 4.0  # grey std below which a frame is "uniform" (fades, lens cap, test cards)
    blur_min_laplacian_var: float = 40.0  # Laplacian variance below which "blurred" (sharp real frames: 430-2060; 4 px blur at 2048 wide: 25-127)
    duplicate_max_diff: float = 1.5  # mean |grey difference| to the previous kept frame below which "duplicate"

    def __post_init__(self):
        for name, value in asdict(self).items():
            if name != "enabled" and (not math.isfinite(value) or value < 0):
                flag = {"blur_min_laplacian_var": "--blur-threshold", "duplicate_max_diff": "--duplicate-threshold"}
                raise OdinError(f"must be a finite number >= 0, got {value}", flag.get(name, f"filter threshold {name}"))


@dataclass
class FrameStats:
    mean: float
    std: float
    laplacian_var: float
    diff_prev: float | None  # to the previous kept frame; None for the first


def thumbnail(equirect: np.ndarray) -> np.ndarray:
    """Grey float32 thumbnail, polar bands cut off."""
    import cv2

    gray = cv2.cvtColor(equirect, cv2.COLOR_RGB2GRAY) if equirect.ndim == 3 else equirect
    h = max(6, THUMB_WIDTH // 2)
    small = cv2.resize(gray, (THUMB_WIDTH, h), interpolation=cv2.INTER_AREA).astype(np.float32)
    return small[h // 6: h - h // 6]


def laplacian_variance(gray: np.ndarray) -> float:
    import cv2

    return float(cv2.Laplacian(gray, cv2.CV_32F, ksize=1).var())


def laplacian_variance_reference(gray: np.ndarray) -> float:
    """The 4-neighbour Laplacian written out (interior pixels; borders reflected like OpenCV's default)."""
    g = np.pad(gray.astype(np.float64), 1, mode="reflect")
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def frame_stats(thumb: np.ndarray, prev_thumb: np.ndarray | None) -> FrameStats:
    diff = None if prev_thumb is None else float(np.abs(thumb - prev_thumb).mean())
    return FrameStats(float(thumb.mean()), float(thumb.std()), laplacian_variance(thumb), diff)


def drop_reason(stats: FrameStats, config: FilterConfig) -> str | None:
    """Why a frame is dropped ('black', 'uniform', 'blurred', 'duplicate'), or None to keep it."""
    if not config.enabled:
        return None
    if stats.mean < config.black_max_mean:
        return "black"
    if stats.std < config.uniform_max_std:
        return "uniform"
    if stats.laplacian_var < config.blur_min_laplacian_var:
        return "blurred"
    if stats.diff_prev is not None and stats.diff_prev < config.duplicate_max_diff:
        return "duplicate"
    return None


class FrameFilter:
    """Stateful filter over one video's sampled frames: duplicates are judged against the last kept one."""

    def __init__(self, config: FilterConfig):
        self.config = config
        self._prev: np.ndarray | None = None

    def __call__(self, equirect: np.ndarray) -> tuple[str | None, FrameStats]:
        thumb = thumbnail(equirect)
        stats = frame_stats(thumb, self._prev)
        reason = drop_reason(stats, self.config)
        if reason is None:
            self._prev = thumb
        return reason, stats
