"""Rig and self-body masks: the pixels that stay the same in equirect coordinates while the scene moves.

Whatever is bolted to a 360° camera (a car's body and passengers, drone arms and propellers, a
tripod, a selfie stick, a burnt-in logo) sits at the same equirect pixels in every frame, while
the world slides past. Those pixels look like zero parallax to matching and to SfM, so they
must be masked.

Evidence is accumulated frame by frame as running sums (memory does not grow with the clip):
for each pixel of a small grey thumbnail, the sum of its image gradient vectors and the sum of
their magnitudes. Where an edge stays put, the gradient vectors add up (their sum's length is
the sum of lengths: *stability* 1); where the scene moves past, their directions scatter and
the ratio falls towards 1/sqrt(n). The ratio ignores brightness changes (a car passing under
a bridge) because it only looks at gradient directions. Textureless pixels (sky, a blank wall)
carry no evidence either way and are never marked from this test alone. Pixels that are black
and constant in every frame (the nadir band of a car mount, letterboxing) carry no picture at
all and are marked too.

Stability alone also marks what lies along the direction of travel or at infinity: a horizon,
lane edges straight ahead, streaks of motion blur. Those are lines (one gradient orientation);
an object on the rig has edges every way. So the mask starts from stable pixels whose pooled
structure is two-dimensional (seeds) and grows a bounded distance into stable 1-D structure
next to them. Then it is cleaned (opening, closing, small islands dropped, small holes filled)
and, when the rig reaches a pole (car mounts and tripods at the nadir, a drone body at the
zenith), filled from the pole out to the rig's outline along each meridian, which covers the
rig's textureless parts (a dark car body) that carry no evidence of their own.

What it still gets wrong, seen on the clips in ../shared/data: far scene content that barely
moves during the clip (clouds over a slowly flying drone, the sun, the road straight ahead of a
dragster) is masked too. For matching this costs little (such content has no parallax), for
training on the rays it means those regions go unsupervised.

A static camera cannot tell its rig from the scene: every edge is stable. When most textured
pixels are stable the clip is called static and only the black constant pixels are masked
(``RigMaskResult.static``); the user can still give a mask (``odin ingest --mask``).
Cameras that stabilise the horizon in software move the rig in equirect coordinates when they
turn; that case needs per-frame rotations and is not handled here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ingest.errors import OdinError

RIG_MASK_PNG = "rig_mask.png"


@dataclass(frozen=True)
class RigMaskConfig:
    enabled: bool = True
    width: int = 512  # analysis thumbnail width (height width/2)
    min_frames: int = 3  # fewer usable frames: no automatic mask
    blur_sigma: float = 1.5  # thumbnail pixels, before gradients (tames compression noise)
    window: int = 9  # box (thumbnail pixels) over which gradient sums are pooled
    texture_min: float = 3.0  # mean gradient magnitude (grey levels / pixel) a pixel needs to be judged
    # Stability threshold: random directions give about 1/sqrt(n); an attached edge about 1.
    stability_floor: float = 0.7
    structure_window: int = 25  # box over which the stable edges' orientations are pooled
    min_two_dimensional: float = 0.1  # seeds: stable structure this far from one orientation (see two_dimensional)
    grow_frac: float = 0.015  # stable 1-D structure joins the mask this close to the seeds ...
    grow_steps: int = 3  # ... repeatedly
    static_stable_fraction: float = 0.8  # of textured pixels stable: the camera does not move
    dead_max_mean: float = 20.0  # grey level: black ...
    dead_max_std: float = 3.0  # ... and constant over time
    close_frac: float = 0.03  # closing radius, fraction of the width: joins the rig's pieces
    open_frac: float = 0.008  # opening radius: removes speckle of chance-stable scene pixels
    min_area_frac: float = 0.004  # connected pieces smaller than this share of the image are dropped
    max_hole_frac: float = 0.01  # enclosed unmasked holes below this share are filled (rig interior)
    pole_fill_coverage: float = 0.6  # see fill_from_poles
    margin_frac: float = 0.0  # final dilation; pooling over `window` already leaves a halo of window/2

    def __post_init__(self):
        if self.width < 32 or self.width % 2:
            raise OdinError(f"rig mask width must be an even number >= 32, got {self.width}")


@dataclass
class RigMaskResult:
    mask: np.ndarray | None  # (H, W) bool at the analysis width; None when nothing was found
    n_frames: int
    stable_fraction: float  # of textured pixels
    static: bool  # the camera did not move: only black constant pixels were masked
    fraction: float  # of the image masked

    def stats(self) -> dict:
        return {"rig_mask_frames": self.n_frames, "rig_mask_stable_fraction": round(self.stable_fraction, 4),
                "rig_mask_static_camera": self.static, "rig_mask_fraction": round(self.fraction, 4)}


class RigMaskAccumulator:
    """Running per-pixel gradient and intensity sums over the frames offered with :meth:`add`."""

    def __init__(self, config: RigMaskConfig = RigMaskConfig()):
        self.config = config
        self.n = 0
        self._sums: dict[str, np.ndarray] = {}

    def add(self, equirect_bgr: np.ndarray) -> None:
        import cv2

        c = self.config
        gray = cv2.cvtColor(equirect_bgr, cv2.COLOR_BGR2GRAY) if equirect_bgr.ndim == 3 else equirect_bgr
        g = cv2.resize(gray, (c.width, c.width // 2), interpolation=cv2.INTER_AREA).astype(np.float32)
        blurred = cv2.GaussianBlur(g, (0, 0), c.blur_sigma) if c.blur_sigma > 0 else g
        gx = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3) / 8
        gy = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3) / 8
        terms = {"gx": gx, "gy": gy, "mag": np.hypot(gx, gy), "i": g, "i2": g * g}
        for k, v in terms.items():
            self._sums[k] = self._sums[k] + v if k in self._sums else v.astype(np.float64)
        self.n += 1

    def stability(self) -> tuple[np.ndarray, np.ndarray]:
        """(stability in [0, 1], mean gradient magnitude), both pooled over ``window``."""
        import cv2

        s, n, k = self._sums, self.n, (self.config.window, self.config.window)
        coherent = cv2.blur((np.hypot(s["gx"], s["gy"]) / n).astype(np.float32), k)
        energy = cv2.blur((s["mag"] / n).astype(np.float32), k)
        return coherent / np.maximum(energy, 1e-6), energy

    def two_dimensional(self) -> np.ndarray:
        """How far the stable gradient field is from one orientation: the structure tensor's
        smaller eigenvalue over its trace, pooled over ``window`` (0 = a single line, 0.5 = isotropic).

        Lines parallel to the motion (a horizon, lane edges ahead, motion-blur streaks) stay put in
        equirect coordinates while the camera translates; an object on the rig has edges every way.
        """
        import cv2

        s, n = self._sums, self.n
        k = (self.config.structure_window, self.config.structure_window)
        mx, my = (s["gx"] / n).astype(np.float32), (s["gy"] / n).astype(np.float32)
        a, b, c = (cv2.blur(v, k) for v in (mx * mx, mx * my, my * my))
        half_trace = (a + c) / 2
        root = np.sqrt(((a - c) / 2) ** 2 + b * b)
        return (half_trace - root) / np.maximum(2 * half_trace, 1e-9)

    def dead(self) -> np.ndarray:
        mean = self._sums["i"] / self.n
        std = np.sqrt(np.maximum(self._sums["i2"] / self.n - mean * mean, 0))
        return (mean <= self.config.dead_max_mean) & (std <= self.config.dead_max_std)

    def result(self) -> RigMaskResult:
        c = self.config
        if self.n < c.min_frames:
            return RigMaskResult(None, self.n, 0.0, False, 0.0)
        stability, energy = self.stability()
        dead = self.dead()
        textured = (energy >= c.texture_min) & ~dead
        threshold = max(c.stability_floor, 0.5 + 0.5 / math.sqrt(self.n))
        stable = textured & (stability >= threshold)
        stable_fraction = float(stable.sum() / max(textured.sum(), 1))
        static = stable_fraction >= c.static_stable_fraction
        if static:
            mask = clean_mask(dead, c)
        else:
            # Hysteresis: stable pixels count where they connect to stable 2-D structure (seeds).
            seeds = stable & (self.two_dimensional() >= c.min_two_dimensional)
            mask = clean_mask(grow_within(seeds, stable, c.grow_frac * c.width, c.grow_steps) | dead, c)
        fraction = float(mask.mean())
        return RigMaskResult(mask if mask.any() else None, self.n, stable_fraction, static, fraction)


def grow_within(seeds: np.ndarray, region: np.ndarray, radius_px: float, steps: int) -> np.ndarray:
    """``seeds`` grown ``steps`` times by ``radius_px`` inside ``region`` (a geodesic dilation of
    bounded reach: a horizon line touching the rig is not followed round the whole sphere)."""
    import cv2

    grown, kernel, region = seeds.astype(np.uint8), _disc(radius_px), region.astype(np.uint8)
    for _ in range(steps):
        grown = cv2.dilate(grown, kernel) & (region | grown)
    return grown.astype(bool)


def _disc(radius_px: float) -> np.ndarray:
    import cv2

    r = max(1, int(round(radius_px)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def clean_mask(raw: np.ndarray, config: RigMaskConfig) -> np.ndarray:
    """Close gaps between the rig's pieces, drop speckle and small islands, fill small holes, add a margin."""
    import cv2

    w = raw.shape[1]
    m = raw.astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _disc(config.open_frac * w))
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, _disc(config.close_frac * w))
    m = _drop_small(m, config.min_area_frac * m.size)
    holes = _drop_small(1 - m, config.max_hole_frac * m.size, keep_border=True)
    m = fill_from_poles(1 - holes, config.pole_fill_coverage)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _disc(config.open_frac * w))  # the fill's ragged columns
    if config.margin_frac > 0:
        m = cv2.dilate(m, _disc(config.margin_frac * w))
    return m.astype(bool)


def fill_from_poles(m: np.ndarray, min_coverage: float) -> np.ndarray:
    """For each half whose pole is mostly masked: along each column, mask from the pole to the
    farthest row up to which at least ``min_coverage`` of the pixels are already masked.

    A rig reaches the camera through a pole (a car mount, a tripod, a selfie stick from the
    nadir; a drone body from the zenith): along a meridian it runs from the pole to its outline,
    so its textureless parts (a dark car body, the underside of a drone) lie between evidence
    found nearer the pole and further out.
    """
    h = m.shape[0]
    top, bottom = m[: h // 2], m[h // 2:][::-1]  # each half seen from its pole outwards
    return np.concatenate([_fill_half(top, min_coverage), _fill_half(bottom, min_coverage)[::-1]])


def _fill_half(half: np.ndarray, min_coverage: float) -> np.ndarray:
    band = max(1, half.shape[0] // 32)
    if half[:band].mean() < 0.5:  # the rig does not reach this pole (a box hovering in front is not filled)
        return half
    half = half.copy()
    half[:band] = 1  # the pole is one point on the sphere: on the rig for one column, on it for all
    rows = np.arange(1, half.shape[0] + 1)[:, None]
    # ... ending on a masked pixel: the fill joins evidence, it never runs past the outline.
    ok = (np.cumsum(half, axis=0) / rows >= min_coverage) & (half > 0)
    depth = np.where(ok.any(axis=0), half.shape[0] - np.argmax(ok[::-1], axis=0), 0)
    return np.maximum(half, (rows <= depth[None, :]).astype(half.dtype))


def _drop_small(m: np.ndarray, min_area: float, keep_border: bool = False) -> np.ndarray:
    """``m`` without its connected components smaller than ``min_area`` (those touching the border
    are kept when ``keep_border``: a region open to the image edge is not an enclosed hole)."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    if keep_border:
        h, w = m.shape
        x, y, bw, bh = (stats[:, k] for k in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH,
                                              cv2.CC_STAT_HEIGHT))
        keep |= (x == 0) | (y == 0) | (x + bw == w) | (y + bh == h)
    keep[0] = False
    return keep[labels].astype(np.uint8)


# --------------------------------------------------------------------------- files
def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """A bool mask at another resolution (linear, then halfway threshold: smooth outlines)."""
    import cv2

    if mask.shape == (height, width):
        return mask.astype(bool)
    m = cv2.resize(mask.astype(np.uint8) * 255, (width, height), interpolation=cv2.INTER_LINEAR)
    return m >= 128


def save_mask_png(path: str | Path, mask: np.ndarray) -> Path:
    """One channel, 255 = rig, 0 = scene (atomic)."""
    from ingest.media import save_png

    return save_png(path, mask.astype(np.uint8) * 255)


def load_mask_png(path: str | Path) -> np.ndarray:
    """The bool mask :func:`save_mask_png` wrote."""
    from ingest.shards import decode_image

    return decode_image(Path(path).read_bytes()) >= 128


def load_mask_file(path: str | Path, flag: str = "--mask") -> np.ndarray:
    """A user's mask image (any resolution; white/non-zero = rig) as bool; one-line error if unusable."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise OdinError(f"{flag}: no such file", path)
    from cv2.utils import logging as cv_log

    level = cv_log.getLogLevel()
    cv_log.setLogLevel(cv_log.LOG_LEVEL_SILENT)  # its decoder's C++ complaint would be a second stderr line
    try:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    finally:
        cv_log.setLogLevel(level)
    if img is None or img.size == 0:
        raise OdinError(f"{flag}: not an image OpenCV can read (give a PNG, 255 = rig)", path)
    if img.ndim == 3:
        img = img[..., 3] if img.shape[2] == 4 and img[..., 3].min() < img[..., 3].max() else img[..., :3].max(axis=2)
    h, w = img.shape[:2]
    if abs(w / h - 2.0) > 0.05:
        raise OdinError(f"{flag}: mask is {w}x{h}, expected an equirectangular 2:1 image", path)
    mask = img > (np.iinfo(img.dtype).max // 2 if img.dtype.kind == "u" else 0.5)
    if mask.all():
        raise OdinError(f"{flag}: mask covers the whole image, nothing would be left", path)
    return mask
