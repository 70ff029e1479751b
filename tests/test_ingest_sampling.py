"""Frame sampling (seeking + non-reference skipping vs decoding everything) and frame filters."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from ingest.decode import SamplingConfig, iter_sampled_frames, sample_times_reference
from ingest.errors import OdinError
from ingest.filters import (FilterConfig, FrameFilter, frame_stats, laplacian_variance,
                            laplacian_variance_reference, thumbnail)
from ingest.probe import probe


@pytest.mark.parametrize("fps", [1.0, 2.0, 0.0, 7.0])
def test_sampling_matches_full_decode_on_synthetic(tiny_world, fps):
    info = probe(tiny_world.video_path)
    config = SamplingConfig(fps=fps)
    got = [d.time for d in iter_sampled_frames(tiny_world.video_path, info, config)]
    assert got == sample_times_reference(tiny_world.video_path, info, config)
    if fps == 0:
        assert len(got) == len(tiny_world)
    else:
        # One sample per 1/fps seconds (the source's 5 fps caps it), at the ground truth frame times.
        assert len(got) == len(np.unique(np.floor(np.asarray(tiny_world.times) * min(fps, 5) + 1e-6)))
        assert all(min(abs(tiny_world.times - t)) < 1e-3 for t in got)


def test_sampling_with_seeks_on_real_video(shared_data):
    path = shared_data / "video360/car_overpass-clip.mp4"
    info = probe(path)
    fast = [(d.source_index, d.time) for d in iter_sampled_frames(path, info, SamplingConfig(1.0))]
    assert [t for _, t in fast] == sample_times_reference(path, info, SamplingConfig(1.0))
    assert [i for i, _ in fast] == [0, 30, 60, 90]


def test_sampled_pixels_equal_full_decode(tiny_world):
    """Seeking must give the very same picture as decoding from the start."""
    info = probe(tiny_world.video_path)
    seek = {d.source_index: d.frame.to_ndarray(format="rgb24")
            for d in iter_sampled_frames(tiny_world.video_path, info, SamplingConfig(1.0))}
    full = {d.source_index: d.frame.to_ndarray(format="rgb24")
            for d in iter_sampled_frames(tiny_world.video_path, info, SamplingConfig(0.0))}
    for k, img in seek.items():
        assert np.array_equal(img, full[k])


def test_bad_fps_flag():
    with pytest.raises(OdinError, match="--fps"):
        SamplingConfig(fps=float("nan"))
    with pytest.raises(OdinError, match="--fps"):
        SamplingConfig(fps=-1)


def test_laplacian_fast_matches_reference():
    gray = np.random.default_rng(0).random((40, 60)).astype(np.float32) * 255
    assert laplacian_variance(gray) == pytest.approx(laplacian_variance_reference(gray), rel=1e-4)


def _frame(tiny_world, i):
    return tiny_world.render(i).rgb


def test_filters_drop_with_reasons(tiny_world):
    f = FrameFilter(FilterConfig())
    sharp = _frame(tiny_world, 0)
    assert f(sharp)[0] is None
    assert f(sharp.copy())[0] == "duplicate"
    assert f(np.full_like(sharp, 3))[0] == "black"
    assert f(np.full_like(sharp, 128))[0] == "uniform"
    assert f(cv2.GaussianBlur(_frame(tiny_world, 10), (0, 0), 3))[0] == "blurred"
    assert f(_frame(tiny_world, 10))[0] is None
    assert FrameFilter(FilterConfig(enabled=False))(np.zeros_like(sharp))[0] is None


def test_moving_camera_frames_are_not_duplicates(shared_data):
    import av

    with av.open(str(shared_data / "video360/car_overpass-clip.mp4")) as c:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(3), c.decode(video=0))]
    stats = frame_stats(thumbnail(frames[1]), thumbnail(frames[0]))
    assert stats.diff_prev > FilterConfig().duplicate_max_diff  # consecutive frames at 30 fps, car moving


def test_bad_filter_threshold():
    with pytest.raises(OdinError, match="finite"):
        FilterConfig(blur_min_laplacian_var=float("nan"))
