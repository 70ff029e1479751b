"""The per-client render loop: preview while moving, full frame when still, survives a dead tab."""
import threading
import time

import numpy as np

from viewer.progressive import ProgressiveRenderer


def make(render_delay=0.0, fail_publish=False):
    published, lock = [], threading.Lock()

    def render(req, height):
        time.sleep(render_delay)
        return np.full((height, int(height * req.aspect), 3), int(req.c2w[0, 3]), np.uint8)

    def publish(image):
        if fail_publish:
            raise ConnectionError("client went away")
        with lock:
            published.append(image)

    return ProgressiveRenderer(render, publish, preview_height=8, full_height=32, settle_seconds=0.1), published


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
