"""`odin mine` per video: pairs against ground truth, long-range pairs, resume, empty videos."""
from __future__ import annotations

import json

import numpy as np
import pytest

from correspondence.evaluate import pair_errors
from correspondence.mine import MineConfig, load_summaries, mine_video, window_pairs
from correspondence.pairs_io import done_videos, iter_pair_samples, read_pairs_table
from correspondence.parallel import mine_source
from correspondence.propagate import PairGraph, propose_long_range
from correspondence.synthetic_source import SyntheticFrameSource
from ingest import conventions as cv
from ingest.views import ViewsConfig

CONFIG = MineConfig(window=2, long_range_per_frame=1, fallback_views=ViewsConfig(size=128))
QUICK = MineConfig(window=1, long_range=False, fallback_views=ViewsConfig(size=64))


class CountingSource(SyntheticFrameSource):
    """Counts frame loads, and can fail after a number of them (a killed run)."""

    def __init__(self, *args, fail_after: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.loads, self.fail_after = 0, fail_after

    def load_equirect(self, frame_id):
        self.loads += 1
        if self.fail_after is not None and self.loads > self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        return super().load_equirect(frame_id)


@pytest.fixture(scope="module")
def mined(tiny_world, tmp_path_factory):
    source = SyntheticFrameSource(tiny_world, height=256, frame_indices=[0, 2, 4, 6, 8])
    out = tmp_path_factory.mktemp("pairs")
    summaries = mine_source(source, out, CONFIG, progress=False)
    return source, out, summaries


def test_window_pairs():
    assert window_pairs(4, 2) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]
    assert window_pairs(1, 20) == []


def test_mined_pairs_match_ground_truth(mined):
    source, out, (summary,) = mined
    records = read_pairs_table(out)
    assert summary.pairs == len(records) > 0 and summary.long_range_pairs >= 1
    assert summary.attempted == sum(summary.reasons.values()) == len(summary.attempts)
    errors = pair_errors(records, source.c2w)
    assert np.median(errors.rotation_deg) < 0.5 and np.median(errors.translation_deg) < 3.0
    assert errors.correct(5.0).all()
    ids = [r.pair_id for r in records]
    assert len(set(ids)) == len(ids)
    for r in records:
        assert cv.is_rotation(r.rotation) and np.isfinite(r.scale) and r.scale > 0
        assert 0 < r.overlap <= 1 and r.inliers > 0
        # Scale-normalised translation: a 0.2 m step in a room metres deep is a fraction of one unit.
        assert 0 < np.linalg.norm(r.translation) < 1.0


def test_pair_shards_hold_views_and_records(mined):
    _, out, _ = mined
    samples = list(iter_pair_samples(out))
    assert len(samples) == len(read_pairs_table(out))
    s = samples[0]
    assert s.src.shape == (s.K_src.height, s.K_src.width, 3) and s.src.dtype == np.uint8
    assert s.record.source == "mined"


def test_resume_after_kill_loses_and_duplicates_nothing(tiny_world, tmp_path):
    first = CountingSource(tiny_world, height=256, frame_indices=[0, 2, 4], video_id="a")
    (reference,) = mine_source(first, tmp_path, QUICK, progress=False)
    assert reference.pairs == 2
    two = _TwoVideos(tiny_world, fail_after=4)  # dies after b's first pair is written
    with pytest.raises(KeyboardInterrupt):
        mine_source(two, tmp_path, QUICK, progress=False)
    assert done_videos(tmp_path) == {"a"}
    assert not list((tmp_path / "shards").glob("b-*.tar"))  # nothing of b looks complete
    two.fail_after, two.loads_a = None, two.sources["a"].loads
    mine_source(two, tmp_path, QUICK, progress=False)
    assert two.sources["a"].loads == two.loads_a  # video a was not mined again
    records = read_pairs_table(tmp_path)
    assert {r.video_id for r in records} == {"a", "b"}
    assert len(records) == len({r.pair_id for r in records}) == 2 * reference.pairs
    assert {s.video_id for s in load_summaries(tmp_path)} == {"a", "b"}


class _TwoVideos:
    """Videos "a" and "b" of the same world; b's loads may fail."""

    def __init__(self, world, fail_after):
        self.sources = {v: CountingSource(world, height=256, frame_indices=[0, 2, 4], video_id=v) for v in "ab"}
        self.fail_after = fail_after

    def video_ids(self):
        return ["a", "b"]

    def frames(self, video_id):
        return self.sources[video_id].frames(video_id)

    def views(self, frame_id):
        return []

    def load_equirect(self, frame_id):
        source = self.sources[frame_id.split("/")[0]]
        source.fail_after = self.fail_after if frame_id.startswith("b") else None
        return source.load_equirect(frame_id)


def test_video_without_usable_pairs_gives_clear_summary(tiny_world, tmp_path):
    still = SyntheticFrameSource(tiny_world, height=256, frame_indices=[3, 3, 3], video_id="still")
    (summary,) = mine_source(still, tmp_path, QUICK, progress=False)
    assert summary.pairs == 0 and summary.reasons == {"low_parallax": 2}
    assert "no usable pairs" in summary.note and "low_parallax" in summary.line()
    assert read_pairs_table(tmp_path) == [] and done_videos(tmp_path) == {"still"}
    saved = json.loads((tmp_path / "summaries" / "still.json").read_text())
    assert saved["note"] == summary.note
    single = SyntheticFrameSource(tiny_world, height=256, frame_indices=[0], video_id="single")
    one = mine_video(single, "single", tmp_path, QUICK, progress=False)
    assert one.pairs == 0 and "fewer than 2" in one.note


def test_long_range_proposals_compose_along_the_graph():
    rng = np.random.default_rng(0)
    c2w = [cv.make_pose(cv.rotation_from_ypr(*rng.normal(0, 0.3, 3)), rng.normal(0, 0.2, 3)) for _ in range(6)]
    graph = PairGraph(6)
    for i, j in window_pairs(6, 1):
        graph.add(i, j, cv.relative_pose(c2w[i], c2w[j]))
    assert graph.components() == [[0, 1, 2, 3, 4, 5]]
    proposals = propose_long_range(graph, window=1, per_frame=2, max_baseline=10)
    assert [(i, k) for i, k, _ in proposals][:2] == [(0, 2), (0, 3)]
    for i, k, T in proposals:
        assert np.allclose(T, cv.relative_pose(c2w[i], c2w[k]), atol=1e-9)
    graph2 = PairGraph(4)
    graph2.add(0, 1, np.eye(4))
    graph2.add(2, 3, np.eye(4))
    assert graph2.components() == [[0, 1], [2, 3]]
    assert propose_long_range(graph2, window=1, per_frame=2) == []  # never across components
