"""Writing what Odin produces: PNG images and grids, H.264 MP4 trajectories (all atomic)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from ingest.atomic import atomic_path, atomic_write_bytes
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


def write_mp4(path: str | Path, frames: list[np.ndarray], fps: float = 10.0, crf: int = 18) -> Path:
    """H.264 (yuv420p) video; odd sizes are padded to even, as the codec requires."""
    import av

    path = Path(path)
    h, w = frames[0].shape[:2]
    even_h, even_w = h + h % 2, w + w % 2
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = even_w, even_h, "yuv420p"
            stream.options = {"crf": str(crf), "preset": "veryfast"}
            for rgb in frames:
                padded = np.pad(rgb, ((0, even_h - h), (0, even_w - w), (0, 0)), mode="edge")
                for packet in stream.encode(av.VideoFrame.from_ndarray(padded, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path
