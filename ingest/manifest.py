"""Dataset layout on disk, per-video parts, and the consolidated Parquet manifest.

    DATASET/
      ingest_config.json          settings the dataset was built with (a re-run must match)
      parts/ab/VIDEOID/           one finished unit of work (ab = 2 hex chars of a hash of the id)
        record.json               video (with rig mask stats and cuts), frames (kept and dropped, with
                                  reasons, and their shot) and views rows
        frames-00000.tar          kept equirect frames  (key VIDEOID/000012: jpg + json)
        views-00000.tar           perspective views     (key VIDEOID/000012/v03: jpg + json)
        contact_sheet.png         thumbnails of up to 36 kept frames, evenly spread, rig mask tinted red
        rig_mask.png              the rig / self-body mask at the stored resolution, 255 = rig (when found or given)
      videos.parquet frames.parquet views.parquet   consolidated from parts/ at the end of a run
      summary.json                counts of the last run (also printed)

A part folder is built under a hidden temporary name and renamed into place when complete, so
``parts/ab/VIDEOID`` existing means that video is finished; the Parquet files are rewritten
atomically from the parts, so killing a run never corrupts them. The next run removes what a
killed one left (hidden ``.VIDEOID.tmp-*`` folders) once it holds the dataset's lock
(ingest.runlock).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path

from ingest.atomic import atomic_path, atomic_write_json, temp_dir
from ingest.errors import OdinError

RECORD = "record.json"
TABLES = ("videos", "frames", "views")
_TMP_MARK = ".tmp-"


def video_id_for(name: str, key: str) -> str:
    """Stable id: a sanitised name plus a short hash of ``key`` (absolute path or 360-1M id)."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")[:40] or "video"
    return f"{stem}-{hashlib.sha1(key.encode('utf-8')).hexdigest()[:8]}"


def frame_id(video_id: str, index: int) -> str:
    return f"{video_id}/{index:06d}"


def part_dir(root: Path, video_id: str) -> Path:
    bucket = hashlib.sha1(video_id.encode("utf-8")).hexdigest()[:2]
    return Path(root) / "parts" / bucket / video_id


def new_tmp_part(root: Path, video_id: str) -> Path:
    final = part_dir(root, video_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    return temp_dir(final.parent, f".{video_id}{_TMP_MARK}")


def commit_part(tmp: Path, final: Path) -> None:
    """Move a finished temporary part into place (replacing an older one, e.g. a retried failure)."""
    if final.exists():
        trash = final.with_name(f".{final.name}{_TMP_MARK}old-{uuid.uuid4().hex[:6]}")
        os.rename(final, trash)
        os.rename(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, final)


def read_record(part: Path) -> dict | None:
    try:
        return json.loads((part / RECORD).read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:  # cannot happen with atomic writes, but never trust a disk blindly
        raise OdinError(f"corrupt part record ({e})", part / RECORD) from e


def iter_parts(root: Path):
    """Finished part folders (temporary ones skipped)."""
    parts = Path(root) / "parts"
    if not parts.is_dir():
        return
    for bucket in sorted(parts.iterdir()):
        if not bucket.is_dir():
            continue
        for part in sorted(bucket.iterdir()):
            if part.is_dir() and not part.name.startswith("."):
                yield part


def check_config(root: Path, config_dict: dict) -> None:
    """Record the settings on first use; refuse to mix datasets built with different settings."""
    path = Path(root) / "ingest_config.json"
    if path.exists():
        existing = json.loads(path.read_text())
        if existing != config_dict:
            changed = sorted(k for k in set(existing) | set(config_dict) if existing.get(k) != config_dict.get(k))
            raise OdinError(f"was built with different settings ({', '.join(changed)}); use a new --out", root)
    else:
        atomic_write_json(path, config_dict)


# --------------------------------------------------------------------------- Parquet
def consolidate(root: Path) -> dict[str, int]:
    """Rewrite videos/frames/views.parquet from the finished parts; returns row counts."""
    import pyarrow.parquet as pq

    rows = {name: [] for name in TABLES}
    for part in iter_parts(root):
        record = read_record(part)
        if record is None:
            continue
        rel = part.relative_to(root).as_posix()
        rows["videos"].append({**record["video"], "part": rel})
        rows["frames"].extend(record.get("frames", []))
        rows["views"].extend(record.get("views", []))
    for name in TABLES:
        table = _table(rows[name])
        with atomic_path(Path(root) / f"{name}.parquet") as tmp:
            pq.write_table(table, tmp)
    return {name: len(r) for name, r in rows.items()}


def _table(rows: list[dict]):
    """Columns are the union of the rows' keys (a failed video has fewer fields than a done one)."""
    import pyarrow as pa

    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    return pa.table({k: [row.get(k) for row in rows] for k in keys})
