"""Read an ingested dataset: records from the Parquet manifest, images from the tar shards.

    ds = Dataset("DATASET")
    for vid in ds.video_ids():
        for fr in ds.frames(vid):                 # kept frames, in time order
            eq = ds.load_equirect(fr.frame_id)    # (H, W, 3) uint8 RGB
            for v in ds.views(fr.frame_id):
                img = ds.load_view(v.view_id)     # camera: c2w_frame @ make_pose(v.R_frame_from_view, 0)

    mask = ds.rig_mask(vid)                       # (H, W) bool, True on the rig, or None
    for shot in ds.shots(vid): ...                # frame ids per shot; never pair across shots

``iter_samples()`` streams every kept frame with its views shard by shard (no random seeks),
for training. Random access reads one member of one tar through the shard's offset index.
When the Parquet manifest is missing (a run was killed before consolidating), the finished
parts are read directly.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ingest import conventions as cv
from ingest.errors import OdinError
from ingest.manifest import TABLES, iter_parts, part_dir, read_record
from ingest.rigmask import RIG_MASK_PNG, load_mask_png
from ingest.shards import check_shard, decode_image, iter_shard, load_index, read_sample
from ingest.views import equirect_to_perspective_map, extract_views  # noqa: F401 - re-exported for users

__all__ = ["Dataset", "FrameRecord", "ViewRecord", "VideoRecord", "extract_views", "equirect_to_perspective_map"]


@dataclass(frozen=True)
class VideoRecord:
    video_id: str
    path: str
    status: str
    error: str | None
    layout: str | None
    fps: float | None
    duration: float | None
    width: int | None  # of the source video
    height: int | None
    equirect_width: int | None  # of the stored frames
    equirect_height: int | None
    n_kept: int
    row: dict  # every manifest column, for provenance


@dataclass(frozen=True)
class FrameRecord:
    frame_id: str  # "VIDEOID/000012"
    video_id: str
    index: int  # position among the sampled frames
    source_index: int  # frame number in the video
    time: float  # seconds
    width: int
    height: int


@dataclass(frozen=True)
class ViewRecord:
    view_id: str  # "VIDEOID/000012/v03"
    frame_id: str
    yaw_deg: float
    pitch_deg: float
    intrinsics: cv.Intrinsics

    @property
    def R_frame_from_view(self) -> np.ndarray:
        return cv.rotation_from_ypr(math.radians(self.yaw_deg), math.radians(self.pitch_deg), 0.0)


def _video_of(some_id: str) -> str:
    return some_id.split("/", 1)[0]


class Dataset:
    def __init__(self, path: str | Path):
        self.root = Path(path)
        if not self.root.is_dir():
            raise OdinError("no such dataset folder", self.root)
        self._tables = self._load_tables()
        self._videos = {r["video_id"]: r for r in self._tables["videos"]}
        self._frames: dict[str, list[dict]] = {}
        for r in self._tables["frames"]:
            if r.get("kept"):
                self._frames.setdefault(r["video_id"], []).append(r)
        for rows in self._frames.values():
            rows.sort(key=lambda r: r["time"])
        self._frame_rows = {r["frame_id"]: r for rows in self._frames.values() for r in rows}
        self._views: dict[str, list[dict]] = {}
        for r in self._tables["views"]:
            self._views.setdefault(r["frame_id"], []).append(r)
        for rows in self._views.values():
            rows.sort(key=lambda r: r["view_index"])
        self._view_rows = {r["view_id"]: r for rows in self._views.values() for r in rows}

    def _load_tables(self) -> dict[str, list[dict]]:
        if all((self.root / f"{t}.parquet").exists() for t in TABLES):
            import pyarrow.parquet as pq

            return {t: pq.read_table(self.root / f"{t}.parquet").to_pylist() for t in TABLES}
        tables = {t: [] for t in TABLES}
        for part in iter_parts(self.root):
            record = read_record(part)
            if record is not None:
                tables["videos"].append({**record["video"], "part": part.relative_to(self.root).as_posix()})
                tables["frames"].extend(record["frames"])
                tables["views"].extend(record["views"])
        if not tables["videos"]:
            raise OdinError("not an ingested dataset (no manifest and no finished parts)", self.root)
        return tables

    # ------------------------------------------------------------------ records
    def video_ids(self) -> list[str]:
        """Videos ingested successfully (status done), sorted."""
        return sorted(v for v, r in self._videos.items() if r["status"] == "done")

    def video(self, video_id: str) -> VideoRecord:
        r = self._videos.get(video_id)
        if r is None:
            raise OdinError(f"no video {video_id!r} in dataset", self.root)
        return VideoRecord(r["video_id"], r["path"], r["status"], r.get("error"), r.get("layout"), r.get("fps"),
                           r.get("duration"), r.get("width"), r.get("height"), r.get("equirect_width"),
                           r.get("equirect_height"), int(r.get("n_kept") or 0), dict(r))

    def frames(self, video_id: str) -> list[FrameRecord]:
        if video_id not in self._videos:
            raise OdinError(f"no video {video_id!r} in dataset", self.root)
        return [_frame_record(r) for r in self._frames.get(video_id, [])]

    def shots(self, video_id: str) -> list[list[str]]:
        """Kept frame ids per shot (shots in order, frames in time order); nothing is paired across
        two shots. A dataset ingested before cuts were detected is one shot."""
        self._video_row(video_id)
        groups: dict[int, list[str]] = {}
        for r in self._frames.get(video_id, []):
            groups.setdefault(int(r.get("shot") or 0), []).append(r["frame_id"])
        return [groups[k] for k in sorted(groups)]

    def cuts(self, video_id: str) -> list[dict]:
        """The cuts ingest found: [{"index": first sampled frame of the new shot, "time", "score"}]."""
        return json.loads(self._video_row(video_id).get("cuts") or "[]")

    def rig_mask(self, video_id: str) -> np.ndarray | None:
        """(H, W) bool at the stored equirect resolution, True on the rig (pixels to ignore), or None
        when no rig was found or given (``rig_mask.png`` in the video's part, 255 = rig)."""
        self._video_row(video_id)
        path = part_dir(self.root, video_id) / RIG_MASK_PNG
        return load_mask_png(path) if path.is_file() else None

    def _video_row(self, video_id: str) -> dict:
        r = self._videos.get(video_id)
        if r is None:
            raise OdinError(f"no video {video_id!r} in dataset", self.root)
        return r

    def frame(self, frame_id: str) -> FrameRecord:
        return _frame_record(self._frame_row(frame_id))

    def views(self, frame_id: str) -> list[ViewRecord]:
        self._frame_row(frame_id)
        return [_view_record(r) for r in self._views.get(frame_id, [])]

    def view(self, view_id: str) -> ViewRecord:
        return _view_record(self._view_row(view_id))

    def _frame_row(self, frame_id: str) -> dict:
        r = self._frame_rows.get(frame_id)
        if r is None:
            raise OdinError(f"no kept frame {frame_id!r} in dataset", self.root)
        return r

    def _view_row(self, view_id: str) -> dict:
        r = self._view_rows.get(view_id)
        if r is None:
            raise OdinError(f"no view {view_id!r} in dataset", self.root)
        return r

    # ------------------------------------------------------------------ images
    def _shard_path(self, video_id: str, shard: str) -> Path:
        return part_dir(self.root, video_id) / shard

    @functools.lru_cache(maxsize=64)
    def _index(self, shard_path: Path) -> dict:
        return load_index(shard_path)

    def check_shards(self, video_id: str) -> None:
        """Every shard of the video is as long as its index says (see ``check_shard``)."""
        for path in sorted(part_dir(self.root, video_id).glob("*.tar")):
            check_shard(path, self._index(path))

    def _image(self, key: str, shard: str) -> np.ndarray:
        path = self._shard_path(_video_of(key), shard)
        data = read_sample(path, key, self._index(path))["jpg"]
        try:
            return decode_image(data)
        except ValueError:
            raise OdinError(f"image of sample {key!r} does not decode (corrupt shard); re-create it", path) from None

    def load_equirect(self, frame_id: str) -> np.ndarray:
        return self._image(frame_id, self._frame_row(frame_id)["shard"])

    def load_view(self, view_id: str) -> np.ndarray:
        return self._image(view_id, self._view_row(view_id)["shard"])

    def iter_samples(self, decode: bool = True) -> Iterator[dict]:
        """Stream every kept frame: {"frame", "equirect", "views": [(ViewRecord, image)]}, shard by shard.

        Frames and views are written in the same order, so both shard streams are read in lockstep
        and memory holds one frame's images at a time.
        """
        load = decode_image if decode else (lambda b: b)
        for video_id in self.video_ids():
            part = part_dir(self.root, video_id)
            views = _chain_shards(sorted(part.glob("views-*.tar")))
            pending = next(views, None)
            for key, fields in _chain_shards(sorted(part.glob("frames-*.tar"))):
                frame_views = []
                while pending is not None and pending[0].rsplit("/", 1)[0] == key:
                    frame_views.append((self.view(pending[0]), load(pending[1]["jpg"])))
                    pending = next(views, None)
                yield {"frame": self.frame(key), "equirect": load(fields["jpg"]), "views": frame_views}


def _chain_shards(paths) -> Iterator[tuple[str, dict[str, bytes]]]:
    for path in paths:
        yield from iter_shard(path)


def _frame_record(r: dict) -> FrameRecord:
    return FrameRecord(r["frame_id"], r["video_id"], int(r["index"]), int(r["source_index"]), float(r["time"]),
                       int(r["width"]), int(r["height"]))


def _view_record(r: dict) -> ViewRecord:
    K = cv.Intrinsics(float(r["fx"]), float(r["fy"]), float(r["cx"]), float(r["cy"]), int(r["width"]),
                      int(r["height"]))
    return ViewRecord(r["view_id"], r["frame_id"], float(r["yaw_deg"]), float(r["pitch_deg"]), K)
