"""Progressive rendering for viewer clients: a quick preview while the camera moves, a
full-resolution frame once it has been still for a moment.

Every tab has a ``ProgressiveRenderer`` holding only its *latest* camera, so a fast-moving
user never waits for a queue of stale frames. The renders themselves run on a ``RenderPool``
shared by all tabs: one frame at a time, tabs in turn (previews come due at once, full frames
after the settle delay). Running every tab's render in parallel would only make them contend
for the same cores while each tab waits longer. A closed tab's queued work is dropped and its
render in flight is abandoned at the next ``abort()`` check; a failing ``publish`` stops only
that tab's renderer, never the server.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """The frame is no longer wanted: its tab closed or its camera moved on."""


@dataclass(frozen=True)
class ViewRequest:
    c2w: np.ndarray  # (4, 4) OpenCV axes
    fov_y: float  # radians
    aspect: float  # width / height
    mode: str  # "rgb" | "depth" | "codes" | ...
    stamp: float


class RenderPool:
    """Worker thread(s) running the renderers' steps in order of when they come due."""

    def __init__(self, workers: int = 1):
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, int, "ProgressiveRenderer"]] = []
        self._seq = itertools.count()
        self._stopped = False
        self._threads = [threading.Thread(target=self._loop, daemon=True, name=f"odin-viewer-render-{i}")
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def schedule(self, renderer: "ProgressiveRenderer", due: float) -> None:
        """(Re)schedules ``renderer``: any earlier entry of it becomes stale."""
        with self._cond:
            renderer._ticket += 1
            heapq.heappush(self._heap, (due, next(self._seq), renderer._ticket, renderer))
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._heap.clear()
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> None:
        for t in self._threads:
            t.join(timeout)

    def _take(self) -> "ProgressiveRenderer | None":
        with self._cond:
            while not self._stopped:
                if not self._heap:
                    self._cond.wait()
                    continue
                due, _, ticket, renderer = self._heap[0]
                if ticket != renderer._ticket or renderer.stopped or renderer._busy:
                    heapq.heappop(self._heap)  # superseded, closed, or being rendered by another worker
                    if renderer._busy and ticket == renderer._ticket:
                        renderer._again = True
                    continue
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                renderer._busy = True
                return renderer
            return None

    def _release(self, renderer: "ProgressiveRenderer") -> None:
        with self._cond:
            renderer._busy = False
            again, renderer._again = renderer._again, False
        if again and not renderer.stopped:
            self.schedule(renderer, time.monotonic())
        renderer._idle.set()

    def _loop(self) -> None:
        while True:
            renderer = self._take()
            if renderer is None:
                return
            renderer._idle.clear()
            try:
                renderer._step()
            finally:
                self._release(renderer)


class ProgressiveRenderer:
    """One tab's view. ``render(request, height, abort)`` returns an image; it should call
    ``abort()`` now and then and raise ``Cancelled`` when it says True."""

    def __init__(self, render: Callable[[ViewRequest, int, Callable[[], bool]], np.ndarray],
                 publish: Callable[[np.ndarray], None], preview_height: int = 128, full_height: int = 512,
                 settle_seconds: float = 0.3, pool: RenderPool | None = None):
        self._render, self._publish = render, publish
        self.preview_height, self.full_height, self.settle_seconds = preview_height, full_height, settle_seconds
        self._own_pool = pool is None
        self._pool = pool or RenderPool(1)
        self._latest: ViewRequest | None = None
        self._previewed: ViewRequest | None = None
        self._ticket, self._busy, self._again = 0, False, False
        self._idle = threading.Event()
        self._idle.set()
        self.stopped = False
        self.frames_published = 0
        self.last_error: Exception | None = None

    def request(self, c2w: np.ndarray, fov_y: float, aspect: float, mode: str) -> None:
        if self.stopped:
            return
        self._latest = ViewRequest(np.asarray(c2w, np.float64), float(fov_y), float(aspect), mode, time.monotonic())
        self._pool.schedule(self, time.monotonic())

    def stop(self) -> None:
        self.stopped = True
        if self._own_pool:
            self._pool.stop()

    def join(self, timeout: float | None = None) -> None:
        """Waits until no render of this tab is in flight (and, with a private pool, its thread ended)."""
        self._idle.wait(timeout)
        if self._own_pool and self.stopped:
            self._pool.join(timeout)

    def _step(self) -> None:
        req = self._latest
        if req is None or self.stopped:
            return
        if self._previewed is not req:
            self._previewed = req
            if self._emit(req, self.preview_height, lambda: self.stopped) and self.full_height > self.preview_height:
                self._pool.schedule(self, time.monotonic() + self.settle_seconds)
        elif self.full_height > self.preview_height:
            self._emit(req, self.full_height, lambda: self.stopped or self._latest is not req)

    def _emit(self, req: ViewRequest, height: int, abort: Callable[[], bool]) -> bool:
        try:
            image = self._render(req, height, abort)
            if abort():
                return False
            self._publish(image)
            self.frames_published += 1
            return True
        except Cancelled:
            return False
        except Exception as e:  # a closed tab or a bad frame must not take the server down
            self.last_error = e
            log.warning("viewer render stopped for one client: %s", e)
            self.stop()
            return False
