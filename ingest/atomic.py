"""Atomic file writes: readers see the old file or the new one, never half of one.

``tempfile`` makes its files 0600 and its folders 0700 whatever the umask (they are meant to be
private); our temporaries become outputs by rename, so they are given the mode an ordinary
``open``/``mkdir`` would have given them.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


def umask() -> int:
    """The process's umask, read without changing it (os.umask can only be read by setting it,
    which would race with other threads creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def public_mode(path: str | Path, folder: bool = False) -> None:
    """Give ``path`` the mode ``open``/``mkdir`` would have: 0666 (0777) less the umask."""
    os.chmod(path, (0o777 if folder else 0o666) & ~umask())


def temp_dir(parent: str | Path, prefix: str) -> Path:
    """A hidden work folder in ``parent`` that becomes an output by rename (so: the umask's mode)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    public_mode(tmp, folder=True)
    return tmp


@contextlib.contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path in the same folder; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        public_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")
