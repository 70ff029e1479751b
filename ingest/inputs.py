"""What to ingest: files, folders, text lists of paths, or a 360-1M metadata Parquet."""
from __future__ import annotations

import math
import os
from pathlib import Path

from ingest.errors import OdinError
from ingest.manifest import video_id_for
from ingest.pipeline import WorkItem
from ingest.probe import IMAGE_SUFFIXES, VIDEO_SUFFIXES

_LIST_SUFFIXES = {".txt", ".lst", ".list"}
_FROM_LIST_COLUMNS = ("id", "width", "height", "fps", "duration", "format")
# Aspects ingest can turn into a 2:1 equirect (mono, top-bottom, side-by-side, squeezed 16:9).
_USABLE_ASPECTS = (2.0, 1.0, 4.0, 16 / 9)


def item_for_path(path: str | Path) -> WorkItem:
    p = Path(path).expanduser().absolute()
    return WorkItem(video_id_for(p.stem, str(p)), str(p))


def resolve_inputs(args: list[str]) -> list[WorkItem]:
    """Expand files, folders (recursively: video and image suffixes) and text lists, in order, deduplicated."""
    items: dict[str, WorkItem] = {}
    for arg in args:
        for path in _expand(Path(arg)):
            item = item_for_path(path)
            items.setdefault(item.video_id, item)
    return list(items.values())


def _expand(path: Path):
    if path.is_dir():
        for dirpath, _, names in sorted(os.walk(path)):
            for name in sorted(names):
                if Path(name).suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES:
                    yield Path(dirpath) / name
    elif path.suffix.lower() in _LIST_SUFFIXES and path.is_file():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                entry = Path(line) if Path(line).is_absolute() else path.parent / line
                yield entry
    else:
        # Missing or unreadable files are still work items: they are recorded as failed, with the reason.
        yield path


def plan_from_list(parquet: str | Path, video_dir: str | Path) -> list[WorkItem]:
    """Work items from a 360-1M style metadata Parquet (columns id, width, height, fps, duration, format).

    Rows whose layout ingest cannot use are planned as skipped (with the reason) without opening
    anything; the rest point at ``video_dir/ID.*``.
    """
    import pyarrow.parquet as pq

    parquet, video_dir = Path(parquet), Path(video_dir)
    try:
        table = pq.read_table(parquet)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several unrelated types for a bad file
        raise OdinError(f"cannot read as Parquet ({str(e).splitlines()[0][:120]})", parquet) from e
    missing = [c for c in ("id",) if c not in table.column_names]
    if missing:
        raise OdinError(f"--from-list needs columns {', '.join(_FROM_LIST_COLUMNS)}; missing {missing}", parquet)
    files = _index_video_dir(video_dir)
    items = []
    for row in table.to_pylist():
        vid = str(row["id"])
        meta = {k: row.get(k) for k in _FROM_LIST_COLUMNS if k in row}
        path = files.get(vid, video_dir / f"{vid}.mp4")
        items.append(WorkItem(video_id_for(vid, vid), str(path), skip_reason_for_row(meta), meta))
    return items


def _index_video_dir(video_dir: Path) -> dict[str, Path]:
    if not video_dir.is_dir():
        raise OdinError("--video-dir is not a folder", video_dir)
    return {p.stem: p for p in sorted(video_dir.iterdir()) if p.suffix.lower() in VIDEO_SUFFIXES}


def skip_reason_for_row(row: dict) -> str | None:
    """Why a 360-1M row is not worth opening, or None."""
    fmt = str(row.get("format") or "").lower()
    for word in ("cubemap", "eac", "fisheye", "flat", "180", "mesh"):
        if word in fmt:
            return f"not equirectangular: format {row.get('format')!r}"
    w, h = row.get("width"), row.get("height")
    if w and h:
        ratio = float(w) / float(h)
        if not any(abs(ratio / a - 1) <= 0.02 for a in _USABLE_ASPECTS):
            return f"not equirectangular: aspect {w}x{h}"
    duration = row.get("duration")
    if duration is not None and (not math.isfinite(float(duration)) or float(duration) <= 0):
        return f"no duration: {duration}"
    return None
