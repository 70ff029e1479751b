"""Progressive rendering for one viewer client: a quick preview while the camera moves, a
full-resolution frame once it has been still for a moment.

Rendering happens on a worker thread that always takes the *latest* camera, so a fast-moving
user never waits for a queue of stale frames. A failing ``publish`` (a browser tab that went
away mid-render) stops only this worker, never the server.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ViewRequest:
    c2w: np.ndarray  # (4, 4) OpenCV axes
    fov_y: float  # radians
    aspect: float  # width / height
    mode: str  # "rgb" | "depth" | "codes" | ...
    stamp: float


class ProgressiveRenderer:
    def __init__(self, render: Callable[[ViewRequest, int], np.ndarray], publish: Callable[[np.ndarray], None],
                 preview_height: int = 128, full_height: int = 512, settle_seconds: float = 0.3):
        self._render, self._publish = render, publish
        self.preview_height, self.full_height, self.settle_seconds = preview_height, full_height, settle_seconds
        self._latest: ViewRequest | None = None
        self._wake = threading.Condition()
        self._stopped = False
        self.frames_published = 0
        self.last_error: Exception | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True, name="odin-viewer-render")
        self._thread.start()

    def request(self, c2w: np.ndarray, fov_y: float, aspect: float, mode: str) -> None:
        with self._wake:
            self._latest = ViewRequest(np.asarray(c2w, np.float64), float(fov_y), float(aspect), mode, time.monotonic())
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _next(self, after: ViewRequest | None) -> ViewRequest | None:
        with self._wake:
            while not self._stopped and (self._latest is None or self._latest is after):
                self._wake.wait()
            return None if self._stopped else self._latest

    def _newer_within(self, req: ViewRequest, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        with self._wake:
            while not self._stopped and self._latest is req:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(left)
            return True

    def _emit(self, req: ViewRequest, height: int) -> bool:
        try:
            image = self._render(req, height)
            self._publish(image)
            self.frames_published += 1
            return True
        except Exception as e:  # a closed tab or a bad frame must not take the server down
            self.last_error = e
            log.warning("viewer render stopped for one client: %s", e)
            self.stop()
            return False

    def _loop(self) -> None:
        done: ViewRequest | None = None
        while True:
            req = self._next(done)
            if req is None:
                return
            if not self._emit(req, self.preview_height):
                return
            done = req
            if self.full_height > self.preview_height and not self._newer_within(req, self.settle_seconds):
                if not self._emit(req, self.full_height):
                    return
