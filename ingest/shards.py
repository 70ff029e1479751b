"""WebDataset-compatible tar shards: write rolling shards, stream them, or read one sample.

A sample is a key plus fields ``{ext: bytes}``; in the tar each field is the member
``{key}.{ext}`` (WebDataset's convention, so `webdataset.WebDataset(url)` reads our shards).
Keys may contain '/' (e.g. ``VIDEOID/000012``); the first '.' after the last '/' splits key
from extension, as WebDataset does.

Each shard is written under a temporary name and renamed when closed, so a killed writer
leaves no shard that looks complete. Random access uses a small JSON index written beside
each shard (``name.tar.idx.json``: key -> member offsets), rebuilt from the tar if missing.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Iterator

import numpy as np

from ingest.atomic import atomic_write_json
from ingest.errors import OdinError


def split_member_name(name: str) -> tuple[str, str]:
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot < 0:
        raise ValueError(f"tar member {name!r} has no extension")
    return name[:dot], name[dot + 1:]


class ShardWriter:
    """Writes samples into ``{out_dir}/{prefix}-%05d.tar``, rolling at ``max_count`` or ``max_bytes``."""

    def __init__(self, out_dir: str | Path, prefix: str, max_count: int = 1000, max_bytes: int = 512 << 20,
                 start_index: int = 0):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.prefix, self.max_count, self.max_bytes = prefix, max_count, max_bytes
        self.index = start_index
        self.written: list[Path] = []
        self._tar = None
        self._members: dict[str, dict[str, list[int]]] = {}
        self._count = 0

    @property
    def current_path(self) -> Path:
        return self.out_dir / f"{self.prefix}-{self.index:05d}.tar"

    def _open(self):
        self._tmp = self.current_path.with_name(f".{self.current_path.name}.tmp")
        self._file = open(self._tmp, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)
        self._members, self._count = {}, 0

    def write(self, key: str, fields: dict[str, bytes]) -> Path:
        """Add one sample; returns the shard path it will live in."""
        if "." in key[key.rfind("/") + 1:]:
            raise ValueError(f"sample key {key!r} must not contain '.' after its last '/'")
        if self._tar is None:
            self._open()
        for ext, data in fields.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0  # mtime 0: byte-identical reruns
            self._tar.addfile(info, io.BytesIO(data))
            # After addfile, offset_data of the just-written member is known from the file position.
            self._members.setdefault(key, {})[ext] = [self._file.tell() - _padded(len(data)), len(data)]
        self._count += 1
        path = self.current_path
        if self._count >= self.max_count or self._file.tell() >= self.max_bytes:
            self._finish()
        return path

    def _finish(self):
        if self._tar is None:
            return
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        atomic_write_json(_index_path(self.current_path), self._members, indent=None)
        os.replace(self._tmp, self.current_path)
        self.written.append(self.current_path)
        self._tar = None
        self.index += 1

    def close(self) -> list[Path]:
        self._finish()
        return self.written

    def abort(self):
        """Drop the shard in progress (used when a unit of work fails)."""
        if self._tar is not None:
            self._tar.close()
            self._file.close()
            Path(self._tmp).unlink(missing_ok=True)
            self._tar = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _padded(n: int) -> int:
    return (n + 511) // 512 * 512


def _index_path(shard: Path) -> Path:
    return shard.with_name(shard.name + ".idx.json")


def iter_shard(path: str | Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Stream the samples of one shard in order (members of a key are consecutive)."""
    path = Path(path)
    try:
        tar = tarfile.open(path, mode="r|")
    except (tarfile.TarError, OSError) as e:
        raise OdinError(f"unreadable shard ({e})", path) from e
    key, fields = None, {}
    with tar:
        try:
            for member in tar:
                if not member.isfile():
                    continue
                k, ext = split_member_name(member.name)
                if k != key and key is not None:
                    yield key, fields
                    fields = {}
                key = k
                fields[ext] = tar.extractfile(member).read()
        except (tarfile.TarError, EOFError, OSError) as e:  # cut short by a killed copy or a full disk
            raise OdinError(f"truncated or corrupt shard ({e}); re-create it", path) from None
    if key is not None:
        yield key, fields


def load_index(path: str | Path) -> dict[str, dict[str, list[int]]]:
    """key -> {ext: [data offset, size]}; rebuilt (and saved) from the tar when the index is missing."""
    path = Path(path)
    idx = _index_path(path)
    if idx.exists():
        try:
            return json.loads(idx.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise OdinError("corrupt shard index; delete it to rebuild it from the shard", idx) from None
    members: dict[str, dict[str, list[int]]] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for m in tar.getmembers():
                if m.isfile():
                    k, ext = split_member_name(m.name)
                    members.setdefault(k, {})[ext] = [m.offset_data, m.size]
    except (tarfile.TarError, EOFError, OSError) as e:
        raise OdinError(f"truncated or corrupt shard ({e}); re-create it", path) from None
    atomic_write_json(idx, members, indent=None)
    return members


def check_shard(path: str | Path, index: dict | None = None) -> None:
    """Refuse a shard shorter than its index says (a killed copy or a full disk), before a command
    starts working through it and fails halfway, after progress output and partial results."""
    index = index if index is not None else load_index(path)
    end = max((offset + size for fields in index.values() for offset, size in fields.values()), default=0)
    if Path(path).stat().st_size < end:
        raise OdinError(f"truncated shard: {Path(path).stat().st_size} bytes, its index needs {end}; re-create it", path)


def read_sample(path: str | Path, key: str, index: dict | None = None) -> dict[str, bytes]:
    """Random access to one sample's fields (seek + read; no scan of the tar)."""
    index = index if index is not None else load_index(path)
    if key not in index:
        raise OdinError(f"sample {key!r} not in shard", path)
    out = {}
    with open(path, "rb") as f:
        for ext, (offset, size) in index[key].items():
            f.seek(offset)
            out[ext] = f.read(size)
            if len(out[ext]) != size:
                raise OdinError(f"truncated shard: sample {key!r} ends past the end of the file; re-create it", path)
    return out


def encode_image(arr: np.ndarray, ext: str = "jpg", quality: int = 95) -> bytes:
    """RGB (H, W, 3) or gray (H, W) uint8 -> JPEG/PNG bytes."""
    import cv2

    arr = np.ascontiguousarray(arr)
    if arr.dtype != np.uint8:
        raise ValueError(f"encode_image expects uint8, got {arr.dtype}")
    return encode_bgr_image(cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if arr.ndim == 3 else arr, ext, quality)


def encode_bgr_image(bgr: np.ndarray, ext: str = "jpg", quality: int = 95) -> bytes:
    """Like ``encode_image`` for pixels already in OpenCV's BGR order (no channel swap to pay)."""
    import cv2

    if bgr.dtype != np.uint8:
        raise ValueError(f"encode_bgr_image expects uint8, got {bgr.dtype}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext in ("jpg", "jpeg") else []
    ok, buf = cv2.imencode(f".{ext}", bgr, params)
    if not ok:
        raise ValueError(f"could not encode image as {ext}")
    return buf.tobytes()


def decode_image(data: bytes) -> np.ndarray:
    """JPEG/PNG bytes -> RGB (H, W, 3) or gray (H, W) uint8."""
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ValueError("could not decode image bytes")
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB if arr.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return arr
