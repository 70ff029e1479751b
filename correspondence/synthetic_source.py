"""A frame source over a synthetic world: lossless renders with exact poses, for tests and bench.

It offers what mining reads from an ingested dataset (``correspondence.mine.FrameSource``)
without going through video encoding, so accuracy measurements see the geometry alone.
Frame ids are ``<video_id>/<index:06d>``; frames carry no ingest views (the fallback grid is used).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ingest.synth import SyntheticWorld


@dataclass(frozen=True)
class SyntheticFrame:
    frame_id: str
    video_id: str
    index: int
    source_index: int
    time: float
    width: int
    height: int


class SyntheticFrameSource:
    def __init__(self, world: SyntheticWorld, height: int = 256, frame_indices=None, video_id: str | None = None):
        self.world, self.height = world, int(height)
        self.indices = list(range(len(world))) if frame_indices is None else [int(k) for k in frame_indices]
        self.video_id = video_id or f"synthetic-{world.root.name}"

    def video_ids(self) -> list[str]:
        return [self.video_id]

    def frames(self, video_id: str) -> list[SyntheticFrame]:
        return [SyntheticFrame(f"{video_id}/{k:06d}", video_id, k, k, float(self.world.times[k]), 2 * self.height,
                               self.height) for k in self.indices]

    def views(self, frame_id: str) -> list:
        return []

    def rig_mask(self, video_id: str) -> np.ndarray | None:
        """The exact pixels of the world's camera-attached rig (``odin synth --rig-box``), or None."""
        return self.world.rig_mask(self.height)

    def shots(self, video_id: str) -> list[list[str]]:
        """Frame ids per shot of the world (two when it was made with ``--cut-at``)."""
        by_shot: dict[int, list[str]] = {}
        for f in self.frames(video_id):
            by_shot.setdefault(int(self.world.shots[f.index]), []).append(f.frame_id)
        return [by_shot[k] for k in sorted(by_shot)]

    def frame_index(self, frame_id: str) -> int:
        return int(frame_id.rsplit("/", 1)[1])

    def c2w(self, frame_id: str) -> np.ndarray:
        return self.world.poses[self.frame_index(frame_id)]

    def load_equirect(self, frame_id: str) -> np.ndarray:
        return _render(self.world, self.frame_index(frame_id), self.height)


@functools.lru_cache(maxsize=64)
def _render(world: SyntheticWorld, index: int, height: int) -> np.ndarray:
    """Shared by every source over the same world object (renders take about a second)."""
    rgb = world.render(index, height).rgb
    rgb.setflags(write=False)
    return rgb
