"""Writing what people look at: PNG images and grids, H.264 MP4 videos (all atomic)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Iterable

import numpy as np

from ingest.atomic import atomic_path, atomic_write_bytes
from ingest.errors import OdinError
from ingest.shards import encode_image


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    atomic_write_bytes(path, encode_image(np.ascontiguousarray(rgb), "png"))
    return Path(path)


def image_grid(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
    """Tile equally sized (H, W, 3) or (H, W) uint8 images row by row, with a white gutter."""
    tiles = [[t if t.ndim == 3 else np.repeat(t[..., None], 3, axis=2) for t in row] for row in rows]
    h, w = tiles[0][0].shape[:2]
    n_cols = max(len(r) for r in tiles)
    grid = np.full((len(tiles) * (h + pad) + pad, n_cols * (w + pad) + pad, 3), 255, np.uint8)
    for i, row in enumerate(tiles):
        for j, tile in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y:y + h, x:x + w] = tile
    return grid


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], fps: float = 10.0, crf: int = 18,
              keyframe_interval: int | None = None, preset: str = "veryfast") -> Path:
    """H.264 (yuv420p) MP4 from an iterable of (H, W, 3) uint8 frames, streamed and atomic.

    Odd sizes are padded to even by repeating the edge (the codec needs even sizes).
    """
    import av

    path = Path(path)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = None
            for rgb in frames:
                h, w = rgb.shape[:2]
                if stream is None:
                    stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                    stream.width, stream.height, stream.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
                    stream.options = {"crf": str(crf), "preset": preset,
                                      **({"g": str(keyframe_interval)} if keyframe_interval else {})}
                if (h % 2) or (w % 2):
                    rgb = np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                    container.mux(packet)
            if stream is None:
                raise OdinError("no frames to encode", path)
            for packet in stream.encode():
                container.mux(packet)
    return path
