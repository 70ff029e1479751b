"""The pairs format between mining and Odin training.

A PAIRS folder holds:

    pairs.parquet                   one row per pair (columns = the fields of :class:`PairRecord`)
    mine_config.json                the settings the pairs were mined with (a re-run must match)
    parts/<video>.parquet           the rows of one finished video (the unit of resumable work)
    shards/<video>-%05d.tar         WebDataset samples keyed by pair_id: src.jpg, tgt.jpg,
                                    motion.png (optional, over the TARGET view, 255 = moving), json

``R``/``t`` are the relative pose ``T_tgt_from_src`` (``ingest.conventions``) between the two
perspective cameras, with ``t`` divided by ``scale`` (a robust scene depth) so that pairs from
different videos share a unit. A video counts as done once its part file exists; shards of a
video without a part file are leftovers of a killed run and are replaced.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterator

import numpy as np

from ingest import conventions as cv
from ingest.atomic import atomic_path
from ingest.errors import OdinError
from ingest.shards import ShardWriter, decode_image, encode_image, iter_shard

SETTINGS = "mine_config.json"


@dataclass
class PairRecord:
    pair_id: str
    video_id: str
    src_frame_id: str
    tgt_frame_id: str
    src_view_id: str
    tgt_view_id: str
    R: list[float]  # 9, row-major rotation of T_tgt_from_src
    t: list[float]  # 3, translation of T_tgt_from_src divided by `scale`
    scale: float
    inliers: int
    overlap: float
    motion_fraction: float
    K_src: dict = field(default_factory=dict)  # Intrinsics.to_dict()
    K_tgt: dict = field(default_factory=dict)
    split: str = "train"
    source: str = "mined"  # "mined" | "gt"

    @property
    def rotation(self) -> np.ndarray:
        return np.asarray(self.R, np.float64).reshape(3, 3)

    @property
    def translation(self) -> np.ndarray:
        return np.asarray(self.t, np.float64)


@dataclass
class PairSample:
    record: PairRecord
    src: np.ndarray  # (H, W, 3) uint8
    tgt: np.ndarray
    motion: np.ndarray | None  # (H, W) float32 in [0, 1] over the target view
    K_src: cv.Intrinsics
    K_tgt: cv.Intrinsics
    R: np.ndarray  # (3, 3)
    t: np.ndarray  # (3,)


def _safe_name(video_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", video_id)


def _write_parquet(rows: list[dict], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = [f.name for f in fields(PairRecord)]
    table = pa.Table.from_pylist(rows) if rows else pa.table({n: [] for n in names})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _read_parquet(path: Path) -> list[PairRecord]:
    import pyarrow.parquet as pq

    names = {f.name for f in fields(PairRecord)}
    return [PairRecord(**{k: v for k, v in row.items() if k in names}) for row in pq.read_table(path).to_pylist()]


def done_videos(pairs_dir: str | Path) -> set[str]:
    """Video ids whose pairs are fully committed."""
    parts = Path(pairs_dir) / "parts"
    if not parts.is_dir():
        return set()
    return {json.loads(p.read_text())["video_id"] for p in parts.glob("*.done.json")}


class PairsWriter:
    """Append pairs video by video; each video becomes visible only at :meth:`commit_video`."""

    def __init__(self, pairs_dir: str | Path, max_pairs_per_shard: int = 1000):
        self.root = Path(pairs_dir)
        (self.root / "shards").mkdir(parents=True, exist_ok=True)
        (self.root / "parts").mkdir(parents=True, exist_ok=True)
        self.max_pairs_per_shard = max_pairs_per_shard
        self._video: str | None = None
        self._rows: list[dict] = []
        self._writer: ShardWriter | None = None

    def begin_video(self, video_id: str) -> None:
        if self._video is not None:
            raise RuntimeError(f"video {self._video} not committed before starting {video_id}")
        prefix = _safe_name(video_id)
        for stale in (self.root / "shards").glob(f"{prefix}-*.tar*"):  # leftovers of a killed run
            stale.unlink()
        self._video, self._rows = video_id, []
        self._writer = ShardWriter(self.root / "shards", prefix, max_count=self.max_pairs_per_shard)

    def add(self, record: PairRecord, src_rgb: np.ndarray, tgt_rgb: np.ndarray,
            motion_mask: np.ndarray | None = None) -> None:
        if self._video is None:
            self.begin_video(record.video_id)
        if record.video_id != self._video:
            raise ValueError(f"pair {record.pair_id} belongs to {record.video_id}, not {self._video}")
        row = asdict(record)
        sample = {"src.jpg": encode_image(src_rgb), "tgt.jpg": encode_image(tgt_rgb)}
        if motion_mask is not None:
            sample["motion.png"] = encode_image(np.clip(np.asarray(motion_mask) * 255, 0, 255).astype(np.uint8), "png")
        sample["json"] = json.dumps(row).encode()
        # Members are "<pair_id>.src.jpg" etc.: WebDataset's layout, the key may hold no '.'.
        shard = self._writer.write(record.pair_id.replace(".", "_"), sample)
        row["shard"] = str(shard.relative_to(self.root))
        self._rows.append(row)

    def commit_video(self, video_id: str | None = None) -> int:
        """Finish the current video (possibly with zero pairs). Returns its pair count."""
        video_id = video_id or self._video
        if self._video is None:
            self.begin_video(video_id)
        if video_id != self._video:
            raise ValueError(f"commit of {video_id} while writing {self._video}")
        self._writer.close()
        name = _safe_name(video_id)
        _write_parquet(self._rows, self.root / "parts" / f"{name}.parquet")
        with atomic_path(self.root / "parts" / f"{name}.done.json") as tmp:
            tmp.write_text(json.dumps({"video_id": video_id, "pairs": len(self._rows)}))
        n, self._video, self._rows, self._writer = len(self._rows), None, [], None
        return n

    def abort_video(self) -> None:
        if self._writer is not None:
            self._writer.abort()
        self._video, self._rows, self._writer = None, [], None

    def close(self) -> Path:
        """Consolidate all committed parts into pairs.parquet."""
        if self._video is not None:
            raise RuntimeError(f"video {self._video} was not committed")
        return consolidate(self.root)


def consolidate(pairs_dir: str | Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(pairs_dir)
    done = sorted((root / "parts").glob("*.done.json"))
    tables = [pq.read_table(p.with_name(p.name.replace(".done.json", ".parquet"))) for p in done]
    tables = [t for t in tables if t.num_rows]
    out = root / "pairs.parquet"
    if tables:
        with atomic_path(out) as tmp:
            pq.write_table(pa.concat_tables(tables, promote_options="default"), tmp)
    else:
        _write_parquet([], out)
    return out


def read_pairs_table(pairs_dir: str | Path) -> list[PairRecord]:
    path = Path(pairs_dir) / "pairs.parquet"
    if not path.exists():
        raise OdinError("no pairs.parquet (run `odin mine` first)", pairs_dir)
    return _read_parquet(path)


def _sample_from_fields(fields_: dict[str, bytes]) -> PairSample:
    row = json.loads(fields_["json"])
    names = {f.name for f in fields(PairRecord)}
    rec = PairRecord(**{k: v for k, v in row.items() if k in names})
    motion = fields_.get("motion.png")
    return PairSample(record=rec, src=decode_image(fields_["src.jpg"]), tgt=decode_image(fields_["tgt.jpg"]),
                      motion=None if motion is None else decode_image(motion).astype(np.float32) / 255.0,
                      K_src=cv.Intrinsics(**rec.K_src), K_tgt=cv.Intrinsics(**rec.K_tgt),
                      R=rec.rotation, t=rec.translation)


def iter_pair_samples(pairs_dir: str | Path, split: str | None = None, shuffle_buffer: int = 0,
                      seed: int = 0) -> Iterator[PairSample]:
    """Stream pair samples from the shards (shard order shuffled too when ``shuffle_buffer`` > 0)."""
    root = Path(pairs_dir)
    shards = sorted((root / "shards").glob("*.tar"))
    if not shards:
        raise OdinError("no pair shards found (empty or unfinished mining run)", root / "shards")
    rng = random.Random(seed)
    if shuffle_buffer:
        rng.shuffle(shards)
    buffer: list[PairSample] = []
    for shard in shards:
        for _, fields_ in iter_shard(shard):
            sample = _sample_from_fields(fields_)
            if split is not None and sample.record.split != split:
                continue
            if not shuffle_buffer:
                yield sample
                continue
            buffer.append(sample)
            if len(buffer) >= shuffle_buffer:
                yield buffer.pop(rng.randrange(len(buffer)))
    rng.shuffle(buffer)
    yield from buffer
