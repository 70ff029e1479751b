"""One writer per output folder, no litter from writers that were killed, no silent reuse.

Every long command (ingest, mine, reconstruct, nrc fit, train) writes its output folder inside
``run_lock(OUT, ...)``:

- an exclusive ``flock`` on ``OUT/.odin.lock``. The kernel releases it when the process dies,
  however it dies, so kill -9 never leaves a stale lock; a second writer is refused at once with
  one line instead of interleaving with the first (two ingests into one dataset used to delete
  each other's work in progress). The file is unlinked by a clean exit; it stays only after a
  kill, empty of meaning, and the next run reuses it.
- with the lock held, the temporary files a killed writer left behind are deleted: without the
  lock they could be a live writer's work in progress, which is why no command may clean up
  before it holds the lock.

``claim_settings`` records the settings an output folder was made with and refuses a re-run with
others, so that resuming never silently keeps results made differently.
"""
from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import os
import shutil
from pathlib import Path
from typing import Iterable

from ingest.errors import OdinError

LOCK_NAME = ".odin.lock"
# The hidden names our writers give unfinished work (ingest.atomic, ingest.shards,
# ingest.manifest, odin.checkpoint; ".wk.*": work folders issue 18 found after kills, which no
# current writer makes); nothing finished is ever named like this.
ORPHAN_PATTERNS = (".*.tmp*", ".step_*", ".pipeline.*", ".wk.*")


def _refuse_input_as_out(folder: Path, inputs: Iterable[str | Path]) -> None:
    out = folder.resolve()
    for item in inputs:
        path = Path(item).resolve()
        if out == path or (path.is_file() and out == path.parent):
            raise OdinError(f"--out is {'an input' if out == path else 'the folder of an input'} ({item}); "
                            "outputs never go into their inputs, choose another --out", folder)


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those it created, deepest first."""
    if folder.exists():
        if not folder.is_dir():
            raise OdinError("--out exists and is not a folder", folder)
        return []
    missing, p = [], folder
    while not p.exists() and p.parent != p:
        missing.append(p)
        p = p.parent
    try:
        folder.mkdir(parents=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in folder.parents if p.exists() and not p.is_dir()), folder)
        raise OdinError("is a file, so --out cannot be created under it", blocker) from None
    except PermissionError:
        raise OdinError("permission denied creating --out", folder) from None
    return missing


def _acquire(path: Path, what: str) -> int:
    """An fd holding the exclusive lock on the file now at ``path`` (a holder may unlink it as it
    exits: the lock is ours only if the file we locked is still the one at ``path``)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise OdinError(f"another odin process{pid} is writing this {what}; wait for it to finish or stop it, "
                            "or choose another --out", path.parent) from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            return fd
        os.close(fd)


def clean_orphans(folder: str | Path, subdirs: Iterable[str] = ("",)) -> int:
    """Delete the temporary files and folders of killed writers in ``folder`` and its ``subdirs``
    (glob patterns relative to it); returns how many. Call only while holding the folder's lock.

    A ``.NAME.old`` whose ``NAME`` is missing is the only copy of a swap a kill interrupted
    (odin.checkpoint.export_pipeline): it is put back, not deleted."""
    folder, n, dirs = Path(folder), 0, []
    for sub in subdirs:
        if not sub:
            dirs.append(folder)
        elif any(c in sub for c in "*?["):
            dirs.extend(sorted(folder.glob(sub)))
        else:
            dirs.append(folder / sub)
    for d in dirs:
        if not d.is_dir():
            continue
        for entry in list(d.iterdir()):
            if entry.name == LOCK_NAME or not any(fnmatch.fnmatchcase(entry.name, p) for p in ORPHAN_PATTERNS):
                continue
            original = entry.with_name(entry.name[1:-len(".old")]) if entry.name.endswith(".old") else None
            if original is not None and not original.exists():
                os.rename(entry, original)
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
            n += 1
    return n


@contextlib.contextmanager
def run_lock(folder: str | Path, what: str, inputs: Iterable[str | Path] = (), clean: Iterable[str] = ("",)):
    """Hold ``folder``'s write lock (creating the folder) and clean its orphans in ``clean``
    (see :func:`clean_orphans`); ``inputs``: paths ``folder`` must not be. ``what`` names the
    folder's kind in the refusal ("dataset", "NRC run", ...). A folder this call created and
    left empty is removed again (with the parents it made), so a refused command leaves nothing."""
    folder = Path(folder)
    _refuse_input_as_out(folder, inputs)
    created = _make_folder(folder)
    path = folder / LOCK_NAME
    fd = _acquire(path, what)
    try:
        clean_orphans(folder, tuple(clean))
        yield folder
    finally:
        # Unlinked before the close, while still held: see _acquire.
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)
        for made in created:  # deepest first; stops at the first that is not empty
            try:
                made.rmdir()
            except OSError:
                break


def contents(folder: Path) -> list[Path]:
    """A folder's entries without its lock file (what "is this folder empty" checks look at)."""
    return [p for p in folder.iterdir() if p.name != LOCK_NAME] if folder.is_dir() else []


def changed_keys(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted names of the settings that differ between two nested dicts ("config.max_frames")."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += changed_keys(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


def claim_settings(folder: str | Path, name: str, settings: dict, what: str) -> None:
    """Record in ``folder/name`` the settings ``folder`` is being made with; a folder made with
    other settings is refused (naming the ones that differ) instead of being silently kept."""
    from ingest.atomic import atomic_write_json

    path = Path(folder) / name
    settings = json.loads(json.dumps(settings))  # tuples as lists: what a re-read gives
    if path.exists():
        try:
            existing = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise OdinError(f"unreadable settings record ({e}); remove it or choose another --out", path) from None
        if existing != settings:
            raise OdinError(f"this {what} was made with other settings ({', '.join(changed_keys(existing, settings))}); "
                            "re-run with the same settings to resume, or choose another --out", folder)
        return
    atomic_write_json(path, settings)
