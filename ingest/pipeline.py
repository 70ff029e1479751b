"""One unit of work: turn one video into a finished part (frames, views, record), atomically.

``ingest_video`` never raises for a bad input: the video is recorded as failed with its reason
and the run goes on. Only interruption (KeyboardInterrupt, a kill) escapes, leaving a hidden
temporary folder that the next run removes and redoes.
"""
from __future__ import annotations

import collections
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ingest.analysis import ClipAnalysis
from ingest.atomic import atomic_write_json
from ingest.contact import CONTACT_SHEET, ContactSheet
from ingest.decode import SamplingConfig, iter_sampled_frames, to_bgr
from ingest.errors import OdinError
from ingest.filters import FilterConfig, FrameFilter
from ingest.layout import LAYOUT_CHOICES, apply_rotation, detect_layout, to_equirect
from ingest.manifest import RECORD, commit_part, frame_id, new_tmp_part, part_dir, read_record
from ingest.probe import probe
from ingest.rigmask import RigMaskConfig
from ingest.shards import ShardWriter, encode_bgr_image
from ingest.shots import CutConfig
from ingest.views import ViewsConfig, extract_views, view_id


@dataclass(frozen=True)
class IngestConfig:
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    rig_mask: RigMaskConfig = field(default_factory=RigMaskConfig)
    cuts: CutConfig = field(default_factory=CutConfig)
    equirect_width: int = 2048  # stored equirect frames (never upscaled beyond the source's eye)
    layout: str | None = None  # force a layout (ingest.layout.LAYOUT_CHOICES) instead of detecting it
    mask_file: str | None = None  # a user's rig mask for every video, instead of the automatic one
    jpeg_quality: int = 95
    threads: int = 2  # per video: view extraction and JPEG encoding overlap decoding
    shard_max_count: int = 1000
    shard_max_bytes: int = 512 << 20

    def __post_init__(self):
        if self.equirect_width < 8 or self.equirect_width % 2:
            raise OdinError(f"must be an even number >= 8, got {self.equirect_width}", "--equirect-width")
        if not (1 <= self.jpeg_quality <= 100):
            raise OdinError(f"must be in [1, 100], got {self.jpeg_quality}", "--jpeg-quality")
        if self.layout is not None and self.layout not in LAYOUT_CHOICES:
            raise OdinError(f"--layout must be one of {', '.join(LAYOUT_CHOICES)}, got {self.layout!r}")

    def identity(self) -> dict:
        """The settings that decide what a dataset contains (a resumed run must use the same)."""
        d = asdict(self)
        for k in ("threads", "shard_max_count", "shard_max_bytes"):
            d.pop(k)
        d["sampling"].pop("threads")
        return json.loads(json.dumps(d))


@dataclass(frozen=True)
class WorkItem:
    video_id: str
    path: str
    skip_reason: str | None = None  # set by planning (e.g. a 360-1M row that is not equirectangular)
    meta: dict = field(default_factory=dict)  # provenance, e.g. the 360-1M row


def error_kind(message: str) -> str:
    """Group failures for the summary: the message up to its first ':' or '(' ('truncated', ...)."""
    for sep in (":", "(", ","):
        message = message.split(sep)[0]
    return message.strip() or "error"


def ingest_video(item: WorkItem, root: str | Path, config: IngestConfig, retry_failed: bool = False) -> dict:
    """Process one video into ``parts/``; returns its video row (status done, failed or skipped)."""
    root = Path(root)
    final = part_dir(root, item.video_id)
    existing = read_record(final) if final.exists() else None
    if existing is not None and not (retry_failed and existing["video"]["status"] == "failed"):
        return {**existing["video"], "resumed": True}
    tmp = new_tmp_part(root, item.video_id)
    try:
        record = _build_part(item, tmp, config)
        atomic_write_json(tmp / RECORD, record, indent=None)
        commit_part(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**record["video"], "resumed": False}


def _build_part(item: WorkItem, tmp: Path, config: IngestConfig) -> dict:
    started = time.perf_counter()
    video = {"video_id": item.video_id, "path": item.path, "status": "done", "error": None, "error_kind": None,
             "source_meta": json.dumps(item.meta) if item.meta else None}
    frames, views = [], []
    if item.skip_reason:
        video.update(status="skipped", error=item.skip_reason, error_kind=error_kind(item.skip_reason))
        return {"video": video, "frames": [], "views": []}
    try:
        _extract(item, tmp, config, video, frames, views)
    except OdinError as e:
        message = str(e)[len(e.path) + 2:] if e.path else str(e)
        video.update(status="failed", error=message, error_kind=error_kind(message))
        frames.clear(), views.clear()
        for f in tmp.iterdir():
            f.unlink()
    except Exception as e:  # noqa: BLE001 - an unforeseen library error must not stop a million-video run
        message = f"unexpected {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
        video.update(status="failed", error=message, error_kind=f"unexpected {type(e).__name__}")
        frames.clear(), views.clear()
        for f in tmp.iterdir():
            f.unlink()
    kept = [f for f in frames if f["kept"]]
    drops = collections.Counter(f["drop_reason"] for f in frames if not f["kept"])
    video.update(n_sampled=len(frames), n_kept=len(kept), n_views=len(views), dropped=json.dumps(dict(drops)),
                 seconds=round(time.perf_counter() - started, 3))
    return {"video": video, "frames": frames, "views": views}


def _extract(item: WorkItem, tmp: Path, config: IngestConfig, video: dict, frames: list, views: list) -> None:
    info = probe(item.path)
    video.update({k: v for k, v in info.to_dict().items() if k != "path"})
    specs = config.views.specs()
    frame_filter = FrameFilter(config.filters)
    layout, out_w = None, None
    frame_writer = ShardWriter(tmp, "frames", config.shard_max_count, config.shard_max_bytes)
    view_writer = ShardWriter(tmp, "views", config.shard_max_count, config.shard_max_bytes)
    pending = collections.deque()
    sheet = ContactSheet()
    analysis = ClipAnalysis(config.rig_mask, config.cuts, config.mask_file)
    with ThreadPoolExecutor(max(1, config.threads)) as pool, frame_writer, view_writer:
        for decoded in iter_sampled_frames(item.path, info, config.sampling):
            # Frames stay in OpenCV's BGR order end to end: views and JPEGs need no channel swap.
            bgr = apply_rotation(to_bgr(decoded.frame), info.rotation)
            if layout is None:
                layout = detect_layout(info, np.ascontiguousarray(bgr[..., ::-1]), config.layout)  # it reads RGB
                out_w = min(config.equirect_width, layout.crop_width - layout.crop_width % 2)
                video.update(layout=layout.name, layout_eye=layout.eye, layout_source=layout.source,
                             layout_note=layout.note, equirect_width=out_w, equirect_height=out_w // 2)
            equirect = to_equirect(bgr, layout, out_w)
            _check_frame(equirect, item.path)
            reason, stats = frame_filter(_gray(equirect))
            fid = frame_id(item.video_id, decoded.index)
            row = {"frame_id": fid, "video_id": item.video_id, "index": decoded.index,
                   "source_index": decoded.source_index, "time": decoded.time, "width": out_w, "height": out_w // 2,
                   "kept": reason is None, "drop_reason": reason, "mean": stats.mean, "std": stats.std,
                   "laplacian_var": stats.laplacian_var, "diff_prev": stats.diff_prev, "shard": None}
            frames.append(row)
            analysis.add(equirect, reason)
            if reason is None:
                sheet.add(equirect)
                pending.append((row, pool.submit(_encode_frame, equirect, specs, config.jpeg_quality)))
            # Bounded look-ahead keeps memory flat however long the video is.
            while len(pending) > 2 * max(1, config.threads):
                _write_frame(*pending.popleft(), specs, frame_writer, view_writer, views)
        while pending:
            _write_frame(*pending.popleft(), specs, frame_writer, view_writer, views)
    if not frames:
        raise OdinError("no frame could be decoded", item.path)
    mask, fields = analysis.finish(tmp, frames, out_w, out_w // 2)
    video.update(fields)
    sheet.save(tmp / CONTACT_SHEET, mask)


def _check_frame(equirect: np.ndarray, path: str) -> None:
    if equirect.ndim != 3 or equirect.shape[2] != 3 or equirect.dtype != np.uint8:
        raise OdinError(f"decoded frame has unexpected shape {equirect.shape} / {equirect.dtype}", path)


def _gray(bgr: np.ndarray) -> np.ndarray:
    """The filters' grey frame (same luma weights as from RGB, so the same stats)."""
    import cv2

    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)


def _encode_frame(equirect_bgr: np.ndarray, specs, quality: int) -> tuple[bytes, list[bytes]]:
    crops = extract_views(equirect_bgr, specs)
    return encode_bgr_image(equirect_bgr, "jpg", quality), [encode_bgr_image(c, "jpg", quality) for c in crops]


def _write_frame(row: dict, future, specs, frame_writer: ShardWriter, view_writer: ShardWriter, views: list) -> None:
    eq_jpg, view_jpgs = future.result()
    fid = row["frame_id"]
    meta = {k: row[k] for k in ("frame_id", "video_id", "index", "source_index", "time", "width", "height")}
    shard = frame_writer.write(fid, {"jpg": eq_jpg, "json": json.dumps(meta).encode()})
    row["shard"] = shard.name
    for k, (spec, jpg) in enumerate(zip(specs, view_jpgs)):
        K = spec.intrinsics
        vrow = {"view_id": view_id(fid, k), "frame_id": fid, "video_id": row["video_id"], "view_index": k,
                "yaw_deg": spec.yaw_deg, "pitch_deg": spec.pitch_deg, "fov_deg": spec.fov_deg,
                "fx": K.fx, "fy": K.fy, "cx": K.cx, "cy": K.cy, "width": K.width, "height": K.height}
        vshard = view_writer.write(vrow["view_id"], {"jpg": jpg, "json": json.dumps(vrow).encode()})
        views.append({**vrow, "shard": vshard.name})
