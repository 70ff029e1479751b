"""Probe a video (or a still) with PyAV: codec, size, fps, duration, rotation, spherical metadata.

Spherical metadata is read from the MP4 boxes themselves (Google's Spherical Video V2 ``st3d``
/ ``sv3d`` boxes, and the V1 XMP ``uuid`` box), because PyAV does not expose stream side data.
Every failure becomes an ``OdinError`` naming the file and the problem.
"""
from __future__ import annotations

import re
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

from ingest.errors import OdinError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".ts", ".mts", ".flv", ".mpg", ".mpeg", ".3gp"}
_MOOV_READ_LIMIT = 64 << 20  # a moov box larger than this is not searched for spherical boxes
_STEREO_MODES = {0: "mono", 1: "top-bottom", 2: "left-right"}


@dataclass
class VideoInfo:
    path: str
    kind: str  # "video" or "image"
    container: str
    codec: str
    width: int
    height: int
    fps: float
    duration: float  # seconds; 0 for a still
    n_frames: int  # from the header, or estimated from duration * fps
    rotation: int  # degrees counter-clockwise the player turns the picture (display matrix)
    projection: str | None  # "equirectangular", "cubemap", "mesh" or None when not stated
    stereo_mode: str | None  # "mono", "top-bottom", "left-right" or None when not stated
    size_bytes: int

    def to_dict(self) -> dict:
        return asdict(self)


def probe(path: str | Path) -> VideoInfo:
    """Open ``path`` and describe its first video stream (raises OdinError on anything unusable)."""
    import av

    path = Path(path)
    if not path.exists():
        raise OdinError("no such file", path)
    if path.is_dir():
        raise OdinError("is a folder, not a video", path)
    size = path.stat().st_size
    if size == 0:
        raise OdinError("empty file (0 bytes)", path)
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise OdinError(f"not a video or image PyAV can read ({_short(e)})", path) from e
    with container:
        if not container.streams.video:
            raise OdinError("has no video stream", path)
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if not ctx.width or not ctx.height:
            raise OdinError("video stream has no frame size (corrupt header?)", path)
        image_format = container.format.name == "image2" or container.format.name.endswith("_pipe")
        if image_format and path.suffix.lower() in VIDEO_SUFFIXES:
            # A still renamed by mistake: refused, since "a video" of one frame hides the mistake downstream.
            raise OdinError(f"is a {ctx.name.upper()} image, not a video, despite its {path.suffix} name "
                            "(rename it to ingest it as a still)", path)
        is_image = path.suffix.lower() in IMAGE_SUFFIXES or image_format
        fps = float(stream.average_rate or stream.guessed_rate or stream.base_rate or 0.0)
        duration = 0.0
        if not is_image:
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1e6
            if fps <= 0:
                raise OdinError("video stream has no frame rate", path)
        n_frames = 1 if is_image else int(stream.frames or round(duration * fps))
        rotation = _rotation(container, stream)
        codec = ctx.name
        fmt = container.format.name
    projection, stereo = (None, None) if is_image else read_spherical_metadata(path)
    return VideoInfo(str(path), "image" if is_image else "video", fmt, codec, int(ctx.width), int(ctx.height),
                     fps, duration, n_frames, rotation, projection, stereo, size)


def _rotation(container, stream) -> int:
    """Display-matrix rotation of the first frame (PyAV reports it per frame), else the old 'rotate' tag."""
    tag = stream.metadata.get("rotate")
    if tag is not None:
        try:
            return int(float(tag)) % 360
        except ValueError:
            return 0
    try:
        frame = next(container.decode(stream))
    except (StopIteration, Exception):  # noqa: BLE001 - undecodable first frames surface later, with a reason
        return 0
    return int(round(getattr(frame, "rotation", 0) or 0)) % 360


def _short(e: Exception) -> str:
    return str(e).split("\n")[0][:160]


# --------------------------------------------------------------------------- spherical metadata
def read_spherical_metadata(path: str | Path) -> tuple[str | None, str | None]:
    """(projection, stereo_mode) from an MP4/MOV's boxes; (None, None) when absent or not MP4."""
    moov = _read_moov(Path(path))
    if moov is None:
        return None, None
    projection = stereo = None
    i = moov.find(b"st3d")
    if i >= 4 and i + 9 <= len(moov):
        stereo = _STEREO_MODES.get(moov[i + 8], "other")
    i = moov.find(b"proj")
    if i >= 0:
        kinds = {b"equi": "equirectangular", b"cbmp": "cubemap", b"mshp": "mesh"}
        found = [(moov.find(k, i), name) for k, name in kinds.items() if moov.find(k, i) >= 0]
        projection = min(found)[1] if found else "other"
    xmp = re.search(rb"<GSpherical:ProjectionType>([^<]*)<", moov)
    if xmp and projection is None:
        projection = xmp.group(1).decode("ascii", "replace").strip().lower()
    xmp = re.search(rb"<GSpherical:StereoMode>([^<]*)<", moov)
    if xmp and stereo is None:
        stereo = xmp.group(1).decode("ascii", "replace").strip().lower()
    if projection is None and re.search(rb"<GSpherical:Spherical>\s*true", moov):
        projection = "equirectangular"  # V1 metadata only knew equirectangular
    return projection, stereo


def _read_moov(path: Path) -> bytes | None:
    """The top-level moov box's payload (walking box headers, 64-bit sizes included)."""
    try:
        with open(path, "rb") as f:
            end = path.stat().st_size
            pos = 0
            while pos + 8 <= end:
                f.seek(pos)
                header = f.read(16)
                if len(header) < 8:
                    return None
                size, kind = struct.unpack(">I4s", header[:8])
                offset = 8
                if size == 1 and len(header) == 16:
                    size, offset = struct.unpack(">Q", header[8:16])[0], 16
                elif size == 0:
                    size = end - pos
                if size < offset:
                    return None
                if kind == b"moov":
                    if size > _MOOV_READ_LIMIT:
                        return None
                    f.seek(pos + offset)
                    return f.read(size - offset)
                pos += size
    except OSError:
        return None
    return None
