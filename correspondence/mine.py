"""`odin mine`: training pairs with relative poses from the kept frames of every video.

The unit of work is one video (:func:`mine_video`, a pure function of its arguments, so
processes and Ray workers reuse it): frames are compared inside a sliding window of
``window`` kept frames; accepted pairs get their perspective views chosen and are written
through :class:`correspondence.pairs_io.PairsWriter`; then the graph of accepted pairs
proposes long-range pairs (:mod:`correspondence.propagate`). A video is committed at the
end, with a summary (counts of every rejection reason) in ``summaries/<video>.json``;
a killed run redoes only unfinished videos.
"""
from __future__ import annotations

import dataclasses
import json
import re
import time
import zlib
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from correspondence.evaluate import aimed_view_id
from correspondence.features import FeatureConfig, FrameFeatures, extract_features
from correspondence.pairs_io import PairRecord, PairsWriter
from correspondence.twoview import TwoViewConfig, TwoViewResult, two_view_from_features
from correspondence.views import ViewChoice, choose_views, motion_mask
from ingest.atomic import atomic_write_json
from ingest.views import ViewSpec, ViewsConfig, extract_views


class FrameSource(Protocol):
    """What mining reads from an ingested dataset (``ingest.dataset.Dataset`` provides it)."""

    def video_ids(self) -> list[str]: ...
    def frames(self, video_id: str) -> list: ...  # FrameRecord: frame_id, index, time, ...
    def load_equirect(self, frame_id: str) -> np.ndarray: ...
    def views(self, frame_id: str) -> list: ...  # ViewRecord: view_id, yaw_deg, pitch_deg, intrinsics, R_frame_from_view
    def rig_mask(self, video_id: str) -> np.ndarray | None: ...  # (H, W) bool equirect, True = rig; None = none
    def shots(self, video_id: str) -> list[list[str]]: ...  # kept frame ids per shot, in time order


def rig_mask_of(source: FrameSource, video_id: str) -> np.ndarray | None:
    """The source's rig mask, or None for a source that cannot tell (one written before masks)."""
    return source.rig_mask(video_id) if hasattr(source, "rig_mask") else None


def shot_of_frames(source: FrameSource, video_id: str, frames: list) -> list[int]:
    """Shot number of each of ``frames``; a source without shots is one shot."""
    if not hasattr(source, "shots"):
        return [0] * len(frames)
    shot = {fid: k for k, ids in enumerate(source.shots(video_id)) for fid in ids}
    return [shot.get(f.frame_id, -1 - i) for i, f in enumerate(frames)]  # an unlisted frame pairs with nothing


@dataclass(frozen=True)
class MineConfig:
    window: int = 20  # kept frames compared with each frame
    analysis_width: int = 1024  # equirect width features are extracted at (larger frames are shrunk)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    twoview: TwoViewConfig = field(default_factory=TwoViewConfig)
    refine_views: bool = False  # re-aim views at the shared inliers instead of the ingest grid
    fallback_views: ViewsConfig = field(default_factory=ViewsConfig)  # used when a frame has no views
    motion_mask_radius_deg: float = 6.0
    long_range: bool = True
    long_range_per_frame: int = 2
    long_range_max_rotation_deg: float = 5.0  # verified pose vs pose composed along the graph
    val_fraction: float = 0.05  # whole videos go to "val" (no leakage between neighbouring frames)
    feature_cache: int = 64  # frames whose features stay in memory

    def identity(self) -> dict:
        """The settings that decide which pairs a video gives (a resumed run must use the same)."""
        d = dataclasses.asdict(self)
        d.pop("feature_cache")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MineConfig":
        from correspondence.essential import RansacConfig

        tv = d.get("twoview", {})
        tv = TwoViewConfig(**{**tv, "ransac": RansacConfig(**tv.get("ransac", {}))})
        return cls(**{**d, "features": FeatureConfig(**d.get("features", {})), "twoview": tv,
                      "fallback_views": ViewsConfig(**{**d.get("fallback_views", {}),
                                                       "rings": tuple(map(tuple, d.get("fallback_views", {}).get("rings", ((8, 0.0),))))})})


@dataclass
class VideoSummary:
    video_id: str
    frames: int = 0
    attempted: int = 0
    pairs: int = 0
    long_range_pairs: int = 0
    reasons: dict = field(default_factory=dict)  # status -> count over all attempted pairs
    seconds: float = 0.0
    note: str = ""
    shots: int = 1  # pairs never cross a cut between two shots
    rig_mask_fraction: float = 0.0  # share of the equirect whose keypoints were dropped as rig
    attempts: list = field(default_factory=list)  # [src_index, tgt_index, status, inliers, parallax_deg]

    def line(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items())) or "none"
        extra = f" — {self.note}" if self.note else ""
        if self.shots > 1 or self.rig_mask_fraction:
            extra = f"; {self.shots} shot(s), rig mask {100 * self.rig_mask_fraction:.1f}%" + extra
        return (f"{self.video_id}: {self.frames} frames, {self.attempted} pairs tried, {self.pairs} kept "
                f"({self.long_range_pairs} long-range); outcomes: {reasons}; {self.seconds:.1f} s{extra}")


class FeatureCache:
    """Features per frame, computed on demand; least recently used frames are dropped."""

    def __init__(self, source: FrameSource, config: MineConfig, rig_mask: np.ndarray | None = None):
        self.source, self.config, self.rig_mask = source, config, rig_mask
        self._items: OrderedDict[str, FrameFeatures] = OrderedDict()

    def __call__(self, frame_id: str) -> FrameFeatures:
        if frame_id in self._items:
            self._items.move_to_end(frame_id)
            return self._items[frame_id]
        feats = extract_features(analysis_image(self.source.load_equirect(frame_id), self.config.analysis_width),
                                 self.config.features, self.rig_mask)
        self._items[frame_id] = feats
        while len(self._items) > self.config.feature_cache:
            self._items.popitem(last=False)
        return feats


def analysis_image(equirect: np.ndarray, width: int) -> np.ndarray:
    if equirect.shape[1] <= width:
        return equirect
    return cv2.resize(equirect, (width, width // 2), interpolation=cv2.INTER_AREA)


def window_pairs(n_frames: int, window: int, shots: list[int] | None = None) -> list[tuple[int, int]]:
    """Each frame with the next ``window`` frames, never across a shot cut (``shots``: per frame)."""
    pairs = [(i, j) for i in range(n_frames) for j in range(i + 1, min(n_frames, i + window + 1))]
    return pairs if shots is None else [(i, j) for i, j in pairs if shots[i] == shots[j]]


def video_split(video_id: str, val_fraction: float) -> str:
    return "val" if (zlib.crc32(video_id.encode()) % 10000) < val_fraction * 10000 else "train"


def _view_candidates(source: FrameSource, frame_id: str, config: MineConfig) -> tuple[list, list[str]]:
    """(views, ids): the frame's ingest views, else the fallback grid with synthetic ids."""
    records = list(source.views(frame_id)) if hasattr(source, "views") else []
    if records:
        return records, [r.view_id for r in records]
    specs = config.fallback_views.specs()
    return specs, [aimed_view_id(frame_id, s.yaw_deg, s.pitch_deg) for s in specs]


def _as_spec(view) -> ViewSpec:
    if isinstance(view, ViewSpec):
        return view
    K = view.intrinsics
    return ViewSpec(float(view.yaw_deg), float(view.pitch_deg), K.fov_x_deg, int(K.width))


def build_pair(source: FrameSource, video_id: str, src, tgt, result: TwoViewResult, config: MineConfig,
               split: str, tag: str = "") -> tuple[PairRecord, np.ndarray, np.ndarray, np.ndarray | None] | None:
    """Choose views for an accepted pair; return the record, both view images and the motion mask."""
    src_views, src_ids = _view_candidates(source, src.frame_id, config)
    tgt_views, tgt_ids = _view_candidates(source, tgt.frame_id, config)
    src_specs, tgt_specs = [_as_spec(v) for v in src_views], [_as_spec(v) for v in tgt_views]
    inl = result.inliers
    choice: ViewChoice | None = choose_views(result.b_src[inl], result.b_tgt[inl], result.pose(), src_specs, tgt_specs,
                                             refine=config.refine_views)
    if choice is None:
        return None
    src_view_id = src_ids[choice.src_index] if choice.src_index >= 0 else aimed_view_id(src.frame_id, choice.src.yaw_deg, choice.src.pitch_deg)
    tgt_view_id = tgt_ids[choice.tgt_index] if choice.tgt_index >= 0 else aimed_view_id(tgt.frame_id, choice.tgt.yaw_deg, choice.tgt.pitch_deg)
    src_rgb = extract_views(source.load_equirect(src.frame_id), [choice.src])[0]
    tgt_rgb = extract_views(source.load_equirect(tgt.frame_id), [choice.tgt])[0]
    moving = result.b_tgt[result.moving] if result.moving is not None else np.zeros((0, 3))
    mask = motion_mask(moving, choice.tgt, config.motion_mask_radius_deg)
    record = PairRecord(
        pair_id=f"{video_id}/{src.index:06d}-{tgt.index:06d}{tag}", video_id=video_id,
        src_frame_id=src.frame_id, tgt_frame_id=tgt.frame_id, src_view_id=src_view_id, tgt_view_id=tgt_view_id,
        R=choice.T[:3, :3].reshape(-1).tolist(), t=choice.T[:3, 3].tolist(), scale=float(result.scale),
        inliers=int(choice.covisible), overlap=float(choice.overlap), motion_fraction=float(mask.mean()),
        K_src=choice.src.intrinsics.to_dict(), K_tgt=choice.tgt.intrinsics.to_dict(), split=split, source="mined")
    return record, src_rgb, tgt_rgb, (mask if len(moving) else None)


def mine_video(source: FrameSource, video_id: str, pairs_dir: str | Path, config: MineConfig = MineConfig(),
               progress: bool = True) -> VideoSummary:
    """Mine one video into ``pairs_dir`` and commit it (a video with no pairs commits empty)."""
    from tqdm import tqdm

    from correspondence.propagate import PairGraph, propose_long_range

    start = time.perf_counter()
    if hasattr(source, "check_shards"):  # a truncated copy is refused before any pair is written
        source.check_shards(video_id)
    frames = list(source.frames(video_id))
    summary = VideoSummary(video_id=video_id, frames=len(frames))
    writer = PairsWriter(pairs_dir)
    writer.begin_video(video_id)
    split = video_split(video_id, config.val_fraction)
    rig_mask = rig_mask_of(source, video_id)
    features = FeatureCache(source, config, rig_mask)
    shots = shot_of_frames(source, video_id, frames)
    summary.shots = len(set(shots))
    summary.rig_mask_fraction = round(float(rig_mask.mean()), 4) if rig_mask is not None else 0.0
    reasons: Counter = Counter()
    graph = PairGraph(len(frames))

    def attempt(i, j, initial=None, tag=""):
        result = two_view_from_features(features(frames[i].frame_id), features(frames[j].frame_id), config.twoview, initial)
        summary.attempts.append([frames[i].index, frames[j].index, result.status, result.n_inliers,
                                 round(result.parallax_deg, 3)])
        status = result.status
        if result.accepted and initial is not None and not graph.agrees(initial, result, config.long_range_max_rotation_deg):
            status = "disagrees_with_graph"
            summary.attempts[-1][2] = status
        if status == "accepted":
            built = build_pair(source, video_id, frames[i], frames[j], result, config, split, tag)
            if built is None:
                status = "no_covisible_views"
                summary.attempts[-1][2] = status
            else:
                writer.add(built[0], *built[1:])
                graph.add(i, j, result.pose())
        reasons[status] += 1
        return status == "accepted"

    try:
        pairs = window_pairs(len(frames), config.window, shots)
        for i, j in tqdm(pairs, desc=f"mine {video_id}", unit="pair", disable=not progress):
            summary.pairs += attempt(i, j)
        if config.long_range:
            # The graph has no edge across a cut, so no composed guess crosses one; checked all the same.
            proposals = [p for p in propose_long_range(graph, config.window, config.long_range_per_frame)
                         if shots[p[0]] == shots[p[1]]]
            for i, j, T_init in tqdm(proposals, desc=f"long-range {video_id}", unit="pair", disable=not progress):
                ok = attempt(i, j, T_init, tag="L")
                summary.pairs += ok
                summary.long_range_pairs += ok
    except BaseException:
        writer.abort_video()
        raise
    summary.attempted = sum(reasons.values())
    summary.reasons = dict(reasons)
    if len(frames) < 2:
        summary.note = "fewer than 2 kept frames: nothing to pair"
    elif summary.pairs == 0:
        top = reasons.most_common(1)[0][0] if reasons else "none"
        summary.note = f"no usable pairs (most common rejection: {top})"
    summary.seconds = time.perf_counter() - start
    atomic_write_json(Path(pairs_dir) / "summaries" / f"{_safe(video_id)}.json", dataclasses.asdict(summary))
    writer.commit_video(video_id)
    return summary


def _safe(video_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", video_id)


def load_summaries(pairs_dir: str | Path) -> list[VideoSummary]:
    folder = Path(pairs_dir) / "summaries"
    return [VideoSummary(**json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
