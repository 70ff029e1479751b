"""A contact sheet per video: a PNG grid of small thumbnails of its kept frames, to eyeball a part.

Frames arrive one at a time and their number is unknown until the end, so the sheet keeps every
``stride``-th kept frame and, whenever it holds twice what it shows, drops every other one and
doubles the stride: memory stays bounded (at most ``2 * max_tiles`` thumbnails) and the tiles
stay evenly spread over the video, however long it is.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ingest.media import image_grid, save_png

CONTACT_SHEET = "contact_sheet.png"


class ContactSheet:
    def __init__(self, max_tiles: int = 36, columns: int = 6, tile_width: int = 256):
        if max_tiles < 1 or columns < 1 or tile_width < 2:
            raise ValueError("ContactSheet needs max_tiles >= 1, columns >= 1 and tile_width >= 2")
        self.max_tiles, self.columns, self.tile_width = max_tiles, columns, tile_width
        self._tiles: list[np.ndarray] = []
        self._stride, self._seen = 1, 0

    def add(self, equirect_bgr: np.ndarray) -> None:
        """Offer one kept frame (BGR, as the pipeline holds it); only every stride-th is shrunk and kept."""
        k, self._seen = self._seen, self._seen + 1
        if k % self._stride:
            return
        self._tiles.append(_thumbnail_rgb(equirect_bgr, self.tile_width))
        if len(self._tiles) >= 2 * self.max_tiles:
            self._tiles, self._stride = self._tiles[::2], 2 * self._stride

    def tiles(self) -> list[np.ndarray]:
        """The tiles to show: evenly spaced over the kept frames, at most ``max_tiles``."""
        step = max(1, -(-len(self._tiles) // self.max_tiles))  # ceil: thin out once more if over the cap
        return self._tiles[::step]

    def save(self, path: str | Path, rig_mask: np.ndarray | None = None) -> Path | None:
        """Write the grid as PNG, the rig mask (bool, any size) tinted red on every tile;
        None (and nothing written) when no frame was kept."""
        tiles = self.tiles()
        if not tiles:
            return None
        if rig_mask is not None:
            tiles = [tint_mask(t, rig_mask) for t in tiles]
        rows = [tiles[i:i + self.columns] for i in range(0, len(tiles), self.columns)]
        return save_png(path, image_grid(rows))


def _thumbnail_rgb(bgr: np.ndarray, width: int) -> np.ndarray:
    import cv2

    h = max(1, round(bgr.shape[0] * width / bgr.shape[1]))
    small = cv2.resize(bgr, (width, h), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2RGB) if small.ndim == 3 else small


def tint_mask(rgb: np.ndarray, mask: np.ndarray, color=(255, 0, 0), alpha: float = 0.5) -> np.ndarray:
    """``rgb`` with the pixels of ``mask`` (resized to it) blended towards ``color``."""
    from ingest.rigmask import resize_mask

    m = resize_mask(mask, rgb.shape[1], rgb.shape[0])
    out = rgb.copy()
    out[m] = ((1 - alpha) * out[m] + alpha * np.asarray(color, np.float32)).astype(np.uint8)
    return out
