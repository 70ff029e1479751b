"""PNG figures without matplotlib (not a dependency): loss curves, colour maps, image panels."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ingest.atomic import atomic_path
from ingest.image_metrics import to_uint8  # noqa: F401  (re-exported: metrics score the levels we save)

# A fixed, well-separated palette for code / object ids (index 0 first).
_PALETTE = np.array([
    [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189], [140, 86, 75],
    [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207], [174, 199, 232], [255, 187, 120],
    [152, 223, 138], [255, 152, 150], [197, 176, 213], [196, 156, 148]], dtype=np.uint8)


def write_png(path: str | Path, image: np.ndarray) -> Path:
    from PIL import Image

    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG")
    return path


def colorize_labels(labels: np.ndarray) -> np.ndarray:
    return _PALETTE[np.asarray(labels).astype(np.int64) % len(_PALETTE)]


def colorize_depth(depth: np.ndarray, max_depth: float | None = None) -> np.ndarray:
    """Near = bright yellow, far = dark blue (inverse depth, so near detail shows)."""
    d = np.asarray(depth, np.float64)
    finite = d[np.isfinite(d)]
    hi = max_depth or (float(np.percentile(finite, 99)) if finite.size else 1.0)
    x = np.clip(1 - d / max(hi, 1e-9), 0, 1)
    stops = np.array([[13, 8, 135], [126, 3, 168], [204, 71, 120], [248, 149, 64], [240, 249, 33]], np.float64)
    pos = x * (len(stops) - 1)
    i = np.clip(pos.astype(int), 0, len(stops) - 2)
    f = (pos - i)[..., None]
    return np.round(stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def panel(images: list[np.ndarray], labels: list[str] | None = None, gap: int = 2) -> np.ndarray:
    """Images (H, W, 3) side by side, each with its label on top."""
    from PIL import Image, ImageDraw

    h = max(im.shape[0] for im in images)
    label_h = 12 if labels else 0
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    # A column is as wide as its label too: small renders (48 px) otherwise print labels over each other.
    widths = [max(im.shape[1], int(measure.textlength(labels[k])) + 4 if labels else 0) for k, im in enumerate(images)]
    canvas = Image.new("RGB", (sum(widths) + gap * (len(images) - 1), h + label_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    x = 0
    for k, im in enumerate(images):
        canvas.paste(Image.fromarray(to_uint8(im)), (x, label_h))
        if labels:
            draw.text((x + 2, 0), labels[k], fill=(0, 0, 0))
        x += widths[k] + gap
    return np.asarray(canvas)


def line_plot(series: dict[str, tuple[list[float], list[float]]], title: str, size=(640, 360),
              log_y: bool = False) -> np.ndarray:
    """Polylines of (x, y) series on shared axes, with min/max tick labels."""
    from PIL import Image, ImageDraw

    w, h = size
    left, right, top, bottom = 60, 10, 24, 30
    img = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((left, 4), title, fill=(0, 0, 0))
    xs = [x for sx, _ in series.values() for x in sx]
    ys = [np.log10(max(y, 1e-12)) if log_y else y for _, sy in series.values() for y in sy]
    if not xs:
        return np.asarray(img)
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    draw.rectangle([left, top, w - right, h - bottom], outline=(0, 0, 0))
    fmt = (lambda v: f"1e{v:.1f}") if log_y else (lambda v: f"{v:.3g}")
    draw.text((2, top), fmt(y1), fill=(0, 0, 0))
    draw.text((2, h - bottom - 10), fmt(y0), fill=(0, 0, 0))
    draw.text((left, h - bottom + 4), f"{x0:g}", fill=(0, 0, 0))
    draw.text((w - right - 40, h - bottom + 4), f"{x1:g}", fill=(0, 0, 0))
    for k, (name, (sx, sy)) in enumerate(series.items()):
        colour = tuple(int(c) for c in _PALETTE[k])
        pts = [(left + (x - x0) / (x1 - x0) * (w - left - right),
                h - bottom - ((np.log10(max(y, 1e-12)) if log_y else y) - y0) / (y1 - y0) * (h - top - bottom))
               for x, y in zip(sx, sy)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        draw.text((w - right - 120, top + 4 + 12 * k), name, fill=colour)
    return np.asarray(img)
