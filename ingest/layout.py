"""Which part of a decoded frame is one 2:1 equirectangular image, and how to get it out.

Decided from the spherical metadata when the file has it, else from the aspect ratio, and in
the ambiguous cases confirmed from the pixels of a sample frame:

* 2:1                      mono equirectangular
* 1:1 (halves alike)       top-bottom stereo: keep the top (left) eye
* 4:1 (halves alike)       side-by-side stereo: keep the left eye
* 16:9 (edges wrap around) a 2:1 equirect squeezed into 16:9: resample to 2:1
* 16:9 top-bottom          stereo whose eyes are 32:9 (3.56:1): keep the top eye, resample to 2:1
* anything else            refused, with the reason

``--layout`` (``detect_layout(..., override=...)``) skips detection for files that lie.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ingest.errors import OdinError
from ingest.probe import VideoInfo

_ASPECT_TOL = 0.02
# A 360° image's first and last columns are neighbours on the sphere: their difference is like
# that of any two adjacent columns. A flat image's edges differ far more.
_SEAM_RATIO_MAX = 3.0
# Two eyes of a stereo pair agree closely after a blur; unrelated halves of one image do not.
_STEREO_MIN_CORRELATION = 0.6
# Sky and ground halves of one squeezed panorama are unlike; two stacked eyes agree closely.
_SQUEEZED_TB_MIN_CORRELATION = 0.85
# What `odin ingest --layout` accepts, and the crop each one means.
LAYOUT_CHOICES = ("mono", "squeezed", "top-bottom", "side-by-side")


@dataclass(frozen=True)
class Layout:
    name: str  # "mono", "top-bottom", "left-right", "squeezed"
    crop: tuple[int, int, int, int]  # x0, y0, x1, y1 of the kept eye in the decoded frame
    eye: str  # "mono", "top", "left"
    source: str  # "metadata", "aspect" or "aspect+content": what the decision rests on
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def crop_width(self) -> int:
        return self.crop[2] - self.crop[0]

    @property
    def crop_height(self) -> int:
        return self.crop[3] - self.crop[1]


def _near(ratio: float, target: float) -> bool:
    return abs(ratio / target - 1.0) <= _ASPECT_TOL


def _gray_small(rgb: np.ndarray, width: int = 256) -> np.ndarray:
    import cv2

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    h = max(2, int(round(gray.shape[0] * width / gray.shape[1])))
    return cv2.resize(gray, (width, h), interpolation=cv2.INTER_AREA).astype(np.float32)


def seam_ratio(rgb: np.ndarray) -> float:
    """|first column - last column| relative to the median difference of adjacent columns.

    Measured on a 256-wide thumbnail so upscaled (smooth) and sharp sources compare alike:
    2:1 panoramas in ../shared/data score 0.5-2.1, flat crops of them 3.9-89.
    """
    gray = _gray_small(rgb, 256)
    adjacent = np.abs(np.diff(gray, axis=1)).mean(axis=0)
    seam = np.abs(gray[:, 0] - gray[:, -1]).mean()
    return float(seam / max(np.median(adjacent), 1e-3))


def halves_correlation(rgb: np.ndarray, axis: int) -> float:
    """Normalised correlation of the two halves (axis 0: top/bottom, 1: left/right), blurred."""
    import cv2

    gray = _gray_small(rgb, 256 if axis == 0 else 512)
    n = gray.shape[axis] // 2
    a, b = (gray[:n], gray[n:2 * n]) if axis == 0 else (gray[:, :n], gray[:, n:2 * n])
    a, b = (cv2.GaussianBlur(x, (0, 0), 2.0) for x in (a, b))
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def detect_layout(info: VideoInfo, sample_rgb: np.ndarray | None = None, override: str | None = None) -> Layout:
    """The layout of ``info``'s frames; ``sample_rgb`` (a decoded frame) settles ambiguous aspects;
    ``override`` (one of LAYOUT_CHOICES) is taken as said, whatever the file claims."""
    w, h = info.width, info.height
    if info.rotation in (90, 270):
        w, h = h, w
    if override is not None:
        return forced_layout(w, h, override)
    ratio = w / h
    proj, stereo = info.projection, info.stereo_mode
    if proj is not None and proj != "equirectangular":
        raise OdinError(f"spherical projection is {proj!r}, only equirectangular is supported", info.path)
    if stereo in ("top-bottom", "left-right"):
        return _stereo_from_metadata(info, w, h, stereo)
    if stereo not in (None, "mono"):
        raise OdinError(f"spherical stereo mode {stereo!r} is not supported", info.path)
    if _near(ratio, 2.0):
        return Layout("mono", (0, 0, w, h), "mono", "metadata" if proj else "aspect")
    if _near(ratio, 16 / 9):
        return _squeezed(info, w, h, sample_rgb)
    if _near(ratio, 1.0) or _near(ratio, 4.0):
        return _stereo_from_content(info, w, h, sample_rgb, "top-bottom" if _near(ratio, 1.0) else "left-right")
    raise OdinError(f"aspect {w}x{h} ({ratio:.3f}:1) is not 2:1 equirectangular, 1:1 top-bottom or 4:1 "
                    "side-by-side stereo, or 16:9 squeezed equirectangular", info.path)


def check_video(path, override: str | None = None) -> tuple[VideoInfo, Layout]:
    """What ingest would decide about ``path`` from its header and first frame, without ingesting it:
    for commands (``odin demo --video``) that must refuse an unusable file before making anything."""
    import av

    from ingest.decode import to_rgb
    from ingest.probe import probe

    info = probe(path)
    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0), None)
    except (av.error.FFmpegError, StopIteration) as e:
        raise OdinError(f"cannot decode its first frame ({e.__class__.__name__})", path) from None
    if frame is None:
        raise OdinError("has no decodable frame", path)
    return info, detect_layout(info, apply_rotation(to_rgb(frame), info.rotation), override)


def forced_layout(w: int, h: int, name: str) -> Layout:
    """The layout the user named; every eye is resampled to 2:1 whatever its aspect."""
    if name not in LAYOUT_CHOICES:
        raise OdinError(f"--layout must be one of {', '.join(LAYOUT_CHOICES)}, got {name!r}")
    mode = {"side-by-side": "left-right"}.get(name, name)
    if mode in ("top-bottom", "left-right"):
        crop, eye = _stereo_crop(w, h, mode)
    else:
        crop, eye = (0, 0, w, h), "mono"
    eye_ratio = (crop[2] - crop[0]) / (crop[3] - crop[1])
    note = "" if _near(eye_ratio, 2.0) else f"eye {eye_ratio:.2f}:1 resampled to 2:1"
    return Layout(mode, crop, eye, "override", note)


def _stereo_crop(w: int, h: int, mode: str) -> tuple[tuple[int, int, int, int], str]:
    return ((0, 0, w, h // 2), "top") if mode == "top-bottom" else ((0, 0, w // 2, h), "left")


def _stereo_from_metadata(info: VideoInfo, w: int, h: int, mode: str) -> Layout:
    crop, eye = _stereo_crop(w, h, mode)
    eye_ratio = (crop[2] - crop[0]) / (crop[3] - crop[1])
    if _near(eye_ratio, 1.0):
        raise OdinError(f"{mode} stereo with square eyes is a 180° (VR180) video, not a full 360° panorama", info.path)
    if _near(eye_ratio, 32 / 9) and mode == "top-bottom":
        # A 16:9 frame holding two squeezed eyes, as some cameras export: like squeezed mono.
        return Layout(mode, crop, eye, "metadata", f"eye {eye_ratio:.2f}:1 resampled to 2:1")
    if not _near(eye_ratio, 2.0):
        raise OdinError(f"{mode} stereo eyes are {eye_ratio:.3f}:1, expected 2:1 (or 32:9 top-bottom in 16:9); "
                        "--layout overrides", info.path)
    return Layout(mode, crop, eye, "metadata")


def _stereo_from_content(info: VideoInfo, w: int, h: int, rgb: np.ndarray | None, mode: str) -> Layout:
    if rgb is None:
        raise OdinError(f"aspect {w}x{h} suggests {mode} stereo but no frame could be decoded to confirm it", info.path)
    corr = halves_correlation(rgb, 0 if mode == "top-bottom" else 1)
    if corr < _STEREO_MIN_CORRELATION:
        raise OdinError(f"aspect {w}x{h} suggests {mode} stereo, but its halves differ (correlation {corr:.2f}); "
                        "not an equirectangular layout", info.path)
    crop, eye = _stereo_crop(w, h, mode)
    return Layout(mode, crop, eye, "aspect+content", f"halves correlation {corr:.2f}")


def _squeezed(info: VideoInfo, w: int, h: int, rgb: np.ndarray | None) -> Layout:
    if rgb is not None and halves_correlation(rgb, 0) >= _SQUEEZED_TB_MIN_CORRELATION:
        # Two 32:9 eyes stacked in 16:9 (the metadata, if any, may only say "equirectangular").
        corr = halves_correlation(rgb, 0)
        crop, eye = _stereo_crop(w, h, "top-bottom")
        return Layout("top-bottom", crop, eye, "metadata+content" if info.projection else "aspect+content",
                      f"16:9 top-bottom stereo, eye resampled to 2:1; halves correlation {corr:.2f}")
    if info.projection == "equirectangular":
        return Layout("squeezed", (0, 0, w, h), "mono", "metadata", "16:9 resampled to 2:1")
    if rgb is None:
        raise OdinError(f"16:9 ({w}x{h}) without spherical metadata, and no frame decoded to check it", info.path)
    ratio = seam_ratio(rgb)
    if ratio > _SEAM_RATIO_MAX:
        raise OdinError(f"16:9 ({w}x{h}) without spherical metadata and its left and right edges do not meet "
                        f"(seam {ratio:.1f}x the usual column step): a flat video, not 360°", info.path)
    return Layout("squeezed", (0, 0, w, h), "mono", "aspect+content", f"16:9 resampled to 2:1; seam {ratio:.2f}")


def apply_rotation(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a decoded frame upright as a player would (display matrix, counter-clockwise degrees)."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def to_equirect(rgb: np.ndarray, layout: Layout, out_width: int) -> np.ndarray:
    """Crop the kept eye and resample to ``out_width`` x ``out_width // 2`` (area filter when shrinking)."""
    import cv2

    x0, y0, x1, y1 = layout.crop
    eye = rgb[y0:y1, x0:x1]
    out_h = out_width // 2
    if eye.shape[1] == out_width and eye.shape[0] == out_h:
        return np.ascontiguousarray(eye)
    shrink = out_width < eye.shape[1]
    return cv2.resize(eye, (out_width, out_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
