"""Decode the frames to sample from a video, paying as little as the codec allows at sparse rates.

Target times are ``k / fps`` (seconds from the first frame); each target takes the first frame
at or after it (within half a source frame). Between targets the decoder

* jumps ahead by seeking when a keyframe lies between the current position and the next target
  (keyframe times come from the container's index, so a seek never lands behind us), and
* skips non-reference frames (``skip_frame = NONREF``) while the next target is still far away,
  decoding everything again just before it, so the sampled frame is the exact one.

``sample_times_reference`` decodes every frame and applies the same rule; tests compare both.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ingest.errors import OdinError
from ingest.probe import VideoInfo

# Frame threading returns frames several decode calls late; switch back to full decoding this
# many source frames before a target so the change has taken effect when the target arrives.
_FULL_DECODE_MARGIN_FRAMES = 12


@dataclass(frozen=True)
class SamplingConfig:
    fps: float = 1.0  # samples per second; 0 means every frame
    seek: bool = True  # jump to the keyframe before a far-away target
    skip_nonref: bool = True  # do not decode non-reference frames far from a target
    threads: int = 0  # decoder threads; 0 lets FFmpeg choose

    def __post_init__(self):
        if not math.isfinite(self.fps) or self.fps < 0:
            raise OdinError(f"must be >= 0 (0 = every frame), got {self.fps}", "--fps")


@dataclass
class DecodedFrame:
    index: int  # position among the sampled frames of this video
    source_index: int  # frame number in the video (from its timestamp)
    time: float  # seconds since the video's first frame
    frame: object  # the av.VideoFrame (converted by the caller, once it is kept)


class _Targets:
    """The sampling rule, shared by the fast decoder and the reference."""

    def __init__(self, fps: float, source_fps: float):
        self.fps, self.half = fps, 0.5 / source_fps
        self.next = 0.0

    def accepts(self, t: float) -> bool:
        if self.fps <= 0:
            return True
        if t + self.half < self.next:
            return False
        while self.next <= t + self.half:
            self.next += 1.0 / self.fps
        return True


def sample_times_reference(path: str | Path, info: VideoInfo, config: SamplingConfig) -> list[float]:
    """Times of the frames ``iter_sampled_frames`` must yield, by decoding every frame."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = _start_time(stream)
        targets = _Targets(config.fps, info.fps or 1.0)
        return [round(f.time - start, 6) for f in container.decode(stream) if f.time is not None
                and targets.accepts(f.time - start)]


def _start_time(stream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def _keyframe_times(stream, start: float) -> np.ndarray:
    try:
        entries = stream.index_entries
        times = [e.timestamp * stream.time_base - start for e in entries if e.is_keyframe]
    except (AttributeError, TypeError):  # containers without an index: never seek
        return np.zeros(0)
    return np.asarray(sorted(float(t) for t in times))


def iter_sampled_frames(path: str | Path, info: VideoInfo, config: SamplingConfig) -> Iterator[DecodedFrame]:
    """Yield the sampled frames in time order (see module doc); raises OdinError on decode errors."""
    import av

    path = Path(path)
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise OdinError(f"cannot open ({e})", path) from e
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if config.threads:
            stream.codec_context.thread_count = config.threads
        ctx = stream.codec_context
        start = _start_time(stream)
        src_fps = info.fps or 1.0
        targets = _Targets(config.fps, src_fps)
        sparse = config.fps > 0 and src_fps / config.fps >= 4
        keyframes = _keyframe_times(stream, start) if (sparse and config.seek) else np.zeros(0)
        margin = _FULL_DECODE_MARGIN_FRAMES / src_fps
        n_out, last_t = 0, -math.inf
        position = -math.inf
        seeked_for = None  # the target we last seeked for: one seek per target, so never a loop
        while True:
            seek = False
            try:
                for frame in container.decode(stream):
                    if frame.time is None:
                        continue
                    t = frame.time - start
                    position = t
                    if targets.accepts(t):
                        yield DecodedFrame(n_out, int(round(t * src_fps)), round(t, 6), frame)
                        n_out, last_t = n_out + 1, t
                    if sparse and config.skip_nonref:
                        ctx.skip_frame = "NONREF" if targets.next - t > margin else "DEFAULT"
                    if len(keyframes) and seeked_for != targets.next and _keyframe_between(keyframes, t + margin,
                                                                                          targets.next):
                        seek, seeked_for = True, targets.next
                        break
            except av.error.FFmpegError as e:
                raise OdinError(f"decode error after {max(position, 0):.2f}s ({str(e).splitlines()[0][:120]})",
                                path) from e
            if not seek:
                break
            # FFmpeg lands on the keyframe at or before the target; frames before it are not accepted again.
            container.seek(int((seeked_for + start) / stream.time_base), stream=stream, backward=True)
            ctx.skip_frame = "DEFAULT"
        if info.kind == "video":
            _check_complete(path, info, last_t if n_out else None, position)


def _keyframe_between(keyframes: np.ndarray, lo: float, hi: float) -> bool:
    """Does the index list a keyframe in (lo, hi]? (Index times may be DTS: early by the reorder delay.)"""
    k = np.searchsorted(keyframes, hi, side="right")
    return bool(k > 0 and keyframes[k - 1] > lo)


def _check_complete(path: Path, info: VideoInfo, last_sample: float | None, position: float) -> None:
    if last_sample is None:
        raise OdinError("no frame could be decoded (corrupt or truncated video)", path)
    # A video whose frames stop well before its header's duration was cut off (a partial download).
    if info.duration > 0 and position >= 0:
        missing = info.duration - position
        if missing > max(1.0, 0.1 * info.duration):
            raise OdinError(f"truncated: frames stop at {position:.2f}s of {info.duration:.2f}s", path)


def to_rgb(frame) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an av.VideoFrame (swscale picks the colour matrix from the stream)."""
    return frame.to_ndarray(format="rgb24")


def to_bgr(frame) -> np.ndarray:
    """(H, W, 3) uint8 BGR, OpenCV's order: swscale writes it as cheaply as RGB, and the JPEG
    encoder then needs no channel swap (a full-frame copy, ~15% of ingest time)."""
    return frame.to_ndarray(format="bgr24")
