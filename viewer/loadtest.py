"""Scripted viewer tabs: viser's websocket protocol without a browser, for load tests and
benchmarks (many tabs at once, some vanishing mid-render). Loopback use only; every loop is
bounded in count and time.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

MAX_MESSAGES = 400  # camera messages one tab sends at most


def subprotocol() -> str:
    import viser

    return f"viser-v{viser.__version__}"


def camera_message(x: float = 0.0, width: int = 64, height: int = 48) -> bytes:
    """A browser's camera report: looking down +Z from (x, 0, 0) on a width x height canvas."""
    import msgspec

    return msgspec.msgpack.encode({"type": "ViewerCameraMessage", "wxyz": [1.0, 0.0, 0.0, 0.0],
                                   "position": [x, 0.0, 0.0], "fov": 1.0, "near": 0.01, "far": 100.0,
                                   "image_height": height, "image_width": width, "look_at": [x, 0.0, 1.0],
                                   "up_direction": [0.0, -1.0, 0.0]})


def background_images(raw: bytes) -> list[bytes]:
    """JPEG payloads of the background images in one server->client frame (layout: viser's
    ``_message_producer``: two uint64 sizes, zstd msgpack, then 8-byte aligned binary buffers)."""
    import msgspec
    import zstandard

    n, c = int.from_bytes(raw[:8], "little"), int.from_bytes(raw[8:16], "little")
    inner = msgspec.msgpack.decode(zstandard.ZstdDecompressor().decompress(raw[16:16 + c], max_output_size=n))
    buffers, start = [], 16 + c
    for length in inner["binaryBufferLengths"]:
        start += (-start) % 8
        buffers.append(raw[start:start + length])
        start += length
    out = []
    for message in inner["messages"]:
        if message.get("type") == "BackgroundImageMessage":
            data = message.get("rgb_data")
            if isinstance(data, dict) and "__binary_index" in data:
                data = buffers[data["__binary_index"]]
            if data:
                out.append(bytes(data))
    return out


def rss_mb() -> float:
    """Resident memory of this process (Linux), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def tab(url: str, x0: float, frames: list, stop_at: float, leave_at: float | None = None,
              width: int = 64, height: int = 48, period: float = 0.15) -> None:
    """One tab: moves its camera every ``period`` s until ``stop_at`` and records (time, jpeg)
    of every frame it gets; with ``leave_at`` it vanishes then without a close handshake."""
    from websockets.asyncio.client import connect

    ws = await asyncio.wait_for(connect(url, subprotocols=[subprotocol()], max_size=None), 20)

    async def reader():
        async for raw in ws:
            frames.extend((time.monotonic(), jpeg) for jpeg in background_images(raw))

    task = asyncio.create_task(reader())
    end = stop_at if leave_at is None else leave_at
    try:
        for step in range(MAX_MESSAGES):
            if time.monotonic() >= end:
                break
            await ws.send(camera_message(x0 + 0.01 * step, width, height))
            await asyncio.sleep(period)
    finally:
        if leave_at is None:
            await ws.close()
        else:
            ws.transport.abort()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@dataclass
class CrowdReport:
    frames: list[list] = field(default_factory=list)  # per tab: (time, jpeg)
    errors: list[str] = field(default_factory=list)  # tabs that could not connect or broke
    leave_at: float = 0.0
    peak_rss_mb: float = 0.0

    def frames_after_leave(self, first_staying: int, margin: float = 0.5) -> list[int]:
        return [sum(1 for t, _ in f if t > self.leave_at + margin) for f in self.frames[first_staying:]]


def crowd(url: str, tabs: int = 20, leaving: int = 8, leave_after: float = 4.0, seconds: float = 10.0) -> CrowdReport:
    """``tabs`` tabs at once; the first ``leaving`` vanish after ``leave_after`` s, mid-render."""
    report = CrowdReport(frames=[[] for _ in range(tabs)])

    async def watch_rss(until: float) -> None:
        while time.monotonic() < until:
            report.peak_rss_mb = max(report.peak_rss_mb, rss_mb())
            await asyncio.sleep(0.25)

    async def scenario() -> None:
        t0 = time.monotonic()
        report.leave_at = t0 + leave_after
        results = await asyncio.gather(
            watch_rss(t0 + seconds),
            *[tab(url, 0.05 * i, report.frames[i], t0 + seconds, report.leave_at if i < leaving else None)
              for i in range(tabs)], return_exceptions=True)
        report.errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]

    asyncio.run(asyncio.wait_for(scenario(), seconds + 60))
    return report
