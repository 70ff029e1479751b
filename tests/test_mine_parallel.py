"""`odin mine --workers 2` and `odin mine --ray local` give the serial run's pairs table.

Each video is one job whatever the runner, so the three runs must agree pair for pair:
same ids, same views, poses within float tolerance.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from correspondence.mine import load_summaries
from correspondence.pairs_io import done_videos, read_pairs_table
from ingest.cli import main

# Small frames and few of them: the point is the runners, not the geometry.
INGEST = ["--fps", "2", "--equirect-width", "256", "--views", "4", "--view-size", "32", "--no-filter",
          "--no-progress"]
MINE = ["--window", "1", "--analysis-width", "256"]


@pytest.fixture(scope="module")
def dataset(tiny_world, tmp_path_factory):
    """Two videos (copies of the tiny world's), so two jobs run side by side."""
    videos = tmp_path_factory.mktemp("videos")
    for k in range(2):
        shutil.copy(tiny_world.video_path, videos / f"walk_{k}.mp4")
    out = tmp_path_factory.mktemp("ds") / "dataset"
    assert main(["ingest", str(videos), "--out", str(out), *INGEST]) == 0
    return out


@pytest.fixture(scope="module")
def serial(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "pairs"
    assert main(["mine", str(dataset), "--out", str(out), *MINE]) == 0
    records = read_pairs_table(out)
    assert len(done_videos(out)) == 2 and {r.video_id for r in records} == done_videos(out)
    return out


def _attempts(pairs_dir) -> dict:
    """Every attempted pair of every video: (status, inliers, parallax), rejected ones included."""
    return {s.video_id: [tuple(a) for a in s.attempts] for s in load_summaries(pairs_dir)}


def _assert_same_pairs(pairs_dir, serial_dir):
    assert _attempts(pairs_dir) == _attempts(serial_dir)
    records, reference = read_pairs_table(pairs_dir), read_pairs_table(serial_dir)
    assert records and sorted(r.pair_id for r in records) == sorted(r.pair_id for r in reference)
    by_id = {r.pair_id: r for r in reference}
    for r in records:
        ref = by_id[r.pair_id]
        assert (r.src_view_id, r.tgt_view_id, r.split) == (ref.src_view_id, ref.tgt_view_id, ref.split)
        assert np.allclose(r.R, ref.R, atol=1e-6) and np.allclose(r.t, ref.t, atol=1e-6)
        assert np.isclose(r.scale, ref.scale, rtol=1e-6) and r.inliers == ref.inliers


def test_workers_match_serial(dataset, serial, tmp_path, capsys):
    out = tmp_path / "pairs"
    assert main(["mine", str(dataset), "--out", str(out), *MINE, "--workers", "2"]) == 0
    assert "2 videos" in capsys.readouterr().out
    _assert_same_pairs(out, serial)


def test_ray_matches_serial(dataset, serial, tmp_path):
    ray = pytest.importorskip("ray")
    out = tmp_path / "pairs"
    try:
        assert main(["mine", str(dataset), "--out", str(out), *MINE, "--ray", "local", "--workers", "2"]) == 0
    finally:
        ray.shutdown()
    _assert_same_pairs(out, serial)


def test_mining_that_keeps_no_pair_exits_2_with_the_outcomes(tmp_path, capsys):
    """A static camera: every frame pair has too little parallax. Nothing downstream can use the
    folder, so the command says so (exit 2) instead of "0 new pairs"."""
    world = tmp_path / "still"
    assert main(["synth", "--out", str(world), "--seconds", "1.5", "--fps", "2", "--width", "256", "--speed", "0",
                 "--yaw-drift", "0", "--roll-jitter", "0"]) == 0
    dataset = tmp_path / "dataset"
    assert main(["ingest", str(world / "video.mp4"), "--out", str(dataset), *INGEST]) == 0
    capsys.readouterr()
    assert main(["mine", str(dataset), *MINE]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("odin: error: ")
    assert "no frame pair kept" in err and "low_parallax" in err
    assert len(load_summaries(dataset / "pairs")) == 1  # the outcomes stay on disk
