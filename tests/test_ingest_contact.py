"""The per-video contact sheet: bounded memory, evenly spread tiles, a PNG of the right grid."""
from __future__ import annotations

import numpy as np
import pytest

from ingest.contact import ContactSheet
from ingest.shards import decode_image


def _frame(k: int) -> np.ndarray:
    """A 64x128 BGR frame whose blue and green levels encode its number (flat: survives the shrink)."""
    f = np.zeros((64, 128, 3), np.uint8)
    f[..., 0], f[..., 1] = k % 256, k // 256
    return f


@pytest.mark.parametrize("n", [1, 5, 36, 37, 71, 72, 500])
def test_tiles_are_bounded_and_evenly_spread(n):
    sheet = ContactSheet(max_tiles=36, tile_width=32)
    for k in range(n):
        sheet.add(_frame(k))
        assert len(sheet._tiles) < 2 * 36
    tiles = sheet.tiles()
    assert 1 <= len(tiles) <= 36 and len(tiles) >= min(n, 18)
    ids = [int(t[0, 0, 2]) + 256 * int(t[0, 0, 1]) for t in tiles]  # tiles are RGB: blue is last
    assert ids[0] == 0 and ids == sorted(ids)
    steps = set(np.diff(ids).tolist())
    assert len(steps) <= 1  # a constant stride: evenly spread


def test_save_writes_the_grid(tmp_path):
    sheet = ContactSheet(max_tiles=4, columns=3, tile_width=32)
    assert sheet.save(tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    for k in range(4):
        sheet.add(_frame(40 * k))
    path = sheet.save(tmp_path / "sheet.png")
    grid = decode_image(path.read_bytes())
    pad = 2
    assert grid.shape == (2 * (16 + pad) + pad, 3 * (32 + pad) + pad, 3)
    assert grid[pad, pad + 32 + pad + 1, 2] == 40  # second tile, blue channel, in RGB order
    assert (grid[-1] == 255).all()  # white gutter; the missing sixth tile stays white
