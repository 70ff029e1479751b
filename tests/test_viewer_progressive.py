"""The per-client render loop: preview while moving, full frame when still, survives a dead tab."""
import threading
import time

import numpy as np

from viewer.progressive import Cancelled, ProgressiveRenderer, RenderPool


def make(render_delay=0.0, fail_publish=False, pool=None, settle=0.1):
    published, lock = [], threading.Lock()

    def render(req, height, abort):
        time.sleep(render_delay)
        return np.full((height, int(height * req.aspect), 3), int(req.c2w[0, 3]), np.uint8)

    def publish(image):
        if fail_publish:
            raise ConnectionError("client went away")
        with lock:
            published.append(image)

    return ProgressiveRenderer(render, publish, preview_height=8, full_height=32, settle_seconds=settle,
                               pool=pool), published


def wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


def pose(x):
    c2w = np.eye(4)
    c2w[0, 3] = x
    return c2w


def test_preview_then_full_when_still():
    r, published = make()
    r.request(pose(7), 1.0, 1.5, "rgb")
    assert wait_for(lambda: len(published) == 2)
    assert [p.shape[0] for p in published] == [8, 32] and published[1].shape[1] == 48
    r.stop()
    r.join(2)


def test_moving_camera_gets_previews_and_latest_wins():
    r, published = make(render_delay=0.02)
    for x in range(20):
        r.request(pose(x), 1.0, 1.0, "rgb")
        time.sleep(0.005)
    assert wait_for(lambda: published and published[-1].shape[0] == 32)
    assert published[-1][0, 0, 0] == 19  # the refined frame is of the last camera
    assert len(published) < 20 * 2  # stale cameras were skipped, not queued
    r.stop()
    r.join(2)


def test_failed_publish_stops_only_this_worker():
    r, _ = make(fail_publish=True)
    r.request(pose(1), 1.0, 1.0, "rgb")
    assert wait_for(lambda: r.last_error is not None)
    r.join(2)
    assert isinstance(r.last_error, ConnectionError)
    other, published = make()
    other.request(pose(2), 1.0, 1.0, "rgb")
    assert wait_for(lambda: len(published) == 2)
    other.stop()


def slow_render(started: threading.Event, seconds: float = 5.0):
    """A render of ``seconds`` that checks ``abort`` every 10 ms, like the viewer's row bands."""
    def render(req, height, abort):
        started.set()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if abort():
                raise Cancelled()
            time.sleep(0.01)
        return np.zeros((height, height, 3), np.uint8)

    return render


def test_shared_pool_serves_every_tab():
    pool = RenderPool(1)
    tabs = [make(render_delay=0.01, pool=pool, settle=0.05) for _ in range(6)]
    for i, (r, _) in enumerate(tabs):
        r.request(pose(i), 1.0, 1.0, "rgb")
    assert wait_for(lambda: all(len(p) == 2 for _, p in tabs))
    assert [p[-1][0, 0, 0] for _, p in tabs] == list(range(6))
    pool.stop()
    pool.join(2)


def test_closed_tab_abandons_its_render_and_frees_the_worker():
    pool = RenderPool(1)
    started = threading.Event()
    published = []
    closing = ProgressiveRenderer(slow_render(started), published.append, 8, 32, 0.0, pool=pool)
    staying, other_frames = make(pool=pool, settle=0.05)
    closing.request(pose(1), 1.0, 1.0, "rgb")
    assert started.wait(5)
    staying.request(pose(2), 1.0, 1.0, "rgb")
    t0 = time.monotonic()
    closing.stop()  # the tab went away mid-render
    assert wait_for(lambda: len(other_frames) == 2, timeout=4)
    assert time.monotonic() - t0 < 2 and published == []
    closing.join(2)
    pool.stop()


def test_a_moved_camera_abandons_the_full_frame():
    started = threading.Event()
    heights = []

    def render(req, height, abort):
        if height == 32 and req.c2w[0, 3] == 1:
            return slow_render(started)(req, height, abort)
        return np.full((height, height, 3), int(req.c2w[0, 3]), np.uint8)

    r = ProgressiveRenderer(render, lambda im: heights.append((im.shape[0], int(im[0, 0, 0]))), 8, 32, 0.0)
    r.request(pose(1), 1.0, 1.0, "rgb")
    assert started.wait(5)  # the full frame of camera 1 is under way
    r.request(pose(2), 1.0, 1.0, "rgb")
    assert wait_for(lambda: (32, 2) in heights, timeout=3)
    assert (32, 1) not in heights
    r.stop()
    r.join(2)
