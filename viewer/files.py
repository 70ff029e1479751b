"""Everything the viewer writes lives in ``RUN/viewer/`` under names the server makes.

A browser only ever sends a *name* ("my_path"); the server checks it, adds the folder and the
suffix. Uploaded images are checked for size (bytes, then pixels from the header, before any
decoding) and stored by content hash. Renders of camera paths run one at a time per run.
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import re
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ingest.atomic import atomic_write_bytes
from ingest.errors import OdinError

log = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
UPLOAD_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000


def viewer_dir(run_dir: str | Path) -> Path:
    folder = Path(run_dir) / "viewer"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def safe_name(name: str, suffix: str) -> str:
    """``name`` + ``suffix`` if ``name`` is a plain file name (letters, digits, ``._-``, at most 64,
    not starting with a dot); anything with a folder, a NUL or other characters is refused."""
    name = str(name).strip()
    if name.lower().endswith(suffix):
        name = name[: -len(suffix)]
    if not NAME_PATTERN.fullmatch(name):
        shown = name if len(name) <= 40 else name[:40] + "…"
        raise OdinError(f"name {shown!r} refused: use 1-64 letters, digits, '.', '_' or '-' (no folders)")
    return name + suffix


def output_path(run_dir: str | Path, name: str, suffix: str) -> Path:
    folder = viewer_dir(run_dir).resolve()
    path = folder / safe_name(name, suffix)
    if path.is_symlink() or path.resolve().parent != folder:  # a planted link must not redirect the write
        raise OdinError("refused: not a plain file inside the run's viewer folder", path)
    return path


def _rgb8(image: np.ndarray) -> np.ndarray:
    """Any decoded image as (H, W, 3) uint8; 16-bit keeps its range instead of saturating."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise OdinError(f"unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def check_upload(content: bytes, limits: UploadLimits = UploadLimits()) -> tuple[np.ndarray, str]:
    """(RGB uint8 image, file suffix) of an uploaded image, or OdinError with the reason."""
    from PIL import Image

    from ingest.shards import decode_image

    if len(content) > limits.max_bytes:
        raise OdinError(f"upload refused: {len(content) / 1e6:.1f} MB is over the {limits.max_bytes / 1e6:.0f} MB limit")
    if not content:
        raise OdinError("upload refused: the file is empty")
    try:
        with Image.open(io.BytesIO(content)) as im:  # reads the header only
            fmt, (w, h) = im.format, im.size
    except Exception as e:  # PIL raises many types for junk input; all mean "not an image we read"
        raise OdinError(f"upload refused: not a readable PNG/JPEG/WebP image ({type(e).__name__})") from None
    if fmt not in UPLOAD_FORMATS:
        raise OdinError(f"upload refused: {fmt} images are not accepted (PNG, JPEG or WebP)")
    if w * h > limits.max_pixels:
        raise OdinError(f"upload refused: {w}x{h} is over the {limits.max_pixels / 1e6:.0f} megapixel limit")
    try:
        image = decode_image(content)
    except Exception as e:  # truncated or corrupt data past a valid header
        raise OdinError(f"upload refused: the image data is corrupt ({e})") from None
    return _rgb8(image), UPLOAD_FORMATS[fmt]


def store_upload(run_dir: str | Path, content: bytes, suffix: str) -> Path:
    folder = viewer_dir(run_dir) / "uploads"
    folder.mkdir(exist_ok=True)
    path = folder / (hashlib.sha256(content).hexdigest()[:16] + suffix)
    if not path.exists():
        atomic_write_bytes(path, content)
    return path


class RenderJobs:
    """At most one camera-path render per run: a lock file in ``RUN/viewer`` (held by the OS, so
    it also stops a second viewer of the same run and vanishes if this process dies). The render
    belongs to the tab that asked for it and is killed when that tab closes."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._owner = None
        self._lock_file = None

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._proc is not None

    def _take_run_lock(self) -> bool:
        f = open(viewer_dir(self.run_dir) / ".render.lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        self._lock_file = f
        return True

    def _release_run_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing releases the flock
            self._lock_file = None

    def start(self, owner, camera_path: Path, out: Path, on_done: Callable[[bool, str], None]) -> str:
        """Starts the render and returns a status line, or says why it did not start."""
        with self._lock:
            if self._proc is not None or not self._take_run_lock():
                return "Another render of this run is still running; try again when it has finished."
            cmd = [sys.executable, "-m", "ingest.cli", "nrc", "render", str(self.run_dir), "--camera-path",
                   str(camera_path), "--out", str(out)]
            try:
                self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            except OSError as e:
                self._release_run_lock()
                return f"Render could not start: {e}"
            self._owner = owner
        threading.Thread(target=self._wait, args=(self._proc, out, on_done), daemon=True,
                         name="odin-viewer-mp4").start()
        return f"Rendering {out.name} …"

    def _wait(self, proc: subprocess.Popen, out: Path, on_done) -> None:
        _, err = proc.communicate()
        with self._lock:
            self._proc, self._owner = None, None
            self._release_run_lock()
        if proc.returncode == 0:
            on_done(True, f"Wrote {out.name} in the run's viewer folder.")
        elif proc.returncode < 0:
            on_done(False, "Render cancelled.")
        else:
            on_done(False, f"Render failed: {(err or '').strip()[-300:]}")

    def cancel(self, owner=None) -> bool:
        """Kills the running render if ``owner`` (or anyone, for None) started it."""
        with self._lock:
            if self._proc is None or (owner is not None and self._owner != owner):
                return False
            self._proc.kill()
            return True
