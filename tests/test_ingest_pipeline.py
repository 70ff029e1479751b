"""End to end: `odin ingest` into a dataset, the reader API, resume after a kill, bad inputs, Ray."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ingest import conventions as cv
from ingest.cli import main
from ingest.dataset import Dataset
from ingest.decode import SamplingConfig
from ingest.errors import OdinError
from ingest.inputs import plan_from_list, resolve_inputs
from ingest.manifest import part_dir
from ingest.pipeline import IngestConfig
from ingest.run import run_ingest
from ingest.views import ViewsConfig, extract_views

TINY = ["--fps", "2", "--equirect-width", "128", "--views", "4", "--view-size", "32", "--no-progress"]


def _tiny_config(**kw):
    return IngestConfig(sampling=SamplingConfig(fps=2.0), views=ViewsConfig(rings=((4, 0.0),), size=32),
                        equirect_width=128, **kw)


def _faststart_copy(src: Path, dst: Path) -> Path:
    """Remux with the index at the front, so a cut-off download still opens (and must be caught)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "faststart"}) as out:
        s_in = inp.streams.video[0]
        s_out = out.add_stream_from_template(s_in)
        for packet in inp.demux(s_in):
            if packet.dts is not None:
                packet.stream = s_out
                out.mux(packet)
    return dst


@pytest.fixture(scope="module")
def inputs(tiny_world, tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    good = [shutil.copy(tiny_world.video_path, d / f"walk_{k}.mp4") for k in range(2)]
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("not a video\n" * 10)
    fast = _faststart_copy(Path(tiny_world.video_path), d / "faststart.mp4")
    data = fast.read_bytes()
    (d / "truncated.mp4").write_bytes(data[: int(len(data) * 0.55)])
    fast.unlink()
    return d, [Path(p) for p in good]


@pytest.fixture(scope="module")
def dataset(inputs, tmp_path_factory):
    d, _ = inputs
    out = tmp_path_factory.mktemp("ds") / "dataset"
    assert main(["ingest", str(d), "--out", str(out), *TINY]) == 0
    return out


def test_summary_and_failures(dataset):
    summary = json.loads((dataset / "summary.json").read_text())
    assert summary["videos_done"] == 2 and summary["videos_failed"] == 3
    failures = {Path(p).name: e for p, e in summary["failures"].items()}
    assert failures["empty.mp4"] == "empty file (0 bytes)"
    assert failures["notes.mp4"].startswith("not a video or image")
    assert failures["truncated.mp4"].startswith("truncated: frames stop at")
    assert summary["frames_sampled"] == 2 * 8 and summary["views_written"] == 4 * summary["frames_kept"]


def test_manifest_tables(dataset):
    videos = pq.read_table(dataset / "videos.parquet").to_pylist()
    assert sorted(v["status"] for v in videos) == ["done", "done", "failed", "failed", "failed"]
    frames = pq.read_table(dataset / "frames.parquet").to_pylist()
    assert len({f["frame_id"] for f in frames}) == len(frames) == 16
    assert all(f["kept"] or f["drop_reason"] for f in frames)
    views = pq.read_table(dataset / "views.parquet").to_pylist()
    assert len({v["view_id"] for v in views}) == len(views)


def test_reader_api(dataset, tiny_world):
    ds = Dataset(dataset)
    vids = ds.video_ids()
    assert len(vids) == 2 and all(ds.video(v).status == "done" for v in vids)
    frames = ds.frames(vids[0])
    assert [f.time for f in frames] == sorted(f.time for f in frames) and frames[0].frame_id == f"{vids[0]}/000000"
    fr = frames[1]
    assert fr.source_index == tiny_world.frame_index_at(fr.time) and (fr.width, fr.height) == (128, 64)
    eq = ds.load_equirect(fr.frame_id)
    assert eq.shape == (64, 128, 3) and eq.dtype == np.uint8
    views = ds.views(fr.frame_id)
    assert [v.view_id for v in views] == [f"{fr.frame_id}/v{k:02d}" for k in range(4)]
    v = views[1]
    assert v.yaw_deg == 90 and v.intrinsics.fov_x_deg == pytest.approx(90)
    np.testing.assert_allclose(v.R_frame_from_view, cv.rotation_from_ypr(np.pi / 2, 0.0, 0.0), atol=1e-12)
    # The stored view is the crop of the stored frame (up to JPEG).
    again = extract_views(eq, ViewsConfig(rings=((4, 0.0),), size=32))[1]
    assert np.abs(ds.load_view(v.view_id).astype(int) - again.astype(int)).mean() < 6
    samples = list(ds.iter_samples())
    assert len(samples) == sum(len(ds.frames(v)) for v in vids)
    assert all(len(s["views"]) == 4 for s in samples)
    with pytest.raises(OdinError, match="no kept frame"):
        ds.load_equirect("nope/000000")


def test_rerun_is_a_noop(dataset, inputs):
    d, _ = inputs
    before = {p: p.stat().st_mtime_ns for p in (dataset / "parts").rglob("*.tar")}
    assert main(["ingest", str(d), "--out", str(dataset), *TINY]) == 0
    summary = json.loads((dataset / "summary.json").read_text())
    assert summary["videos_processed"] == 0 and summary["videos_already_done"] == 5
    assert {p: p.stat().st_mtime_ns for p in (dataset / "parts").rglob("*.tar")} == before


def test_resume_after_interrupt(inputs, tmp_path, monkeypatch):
    """Interrupted mid-video, then re-run: nothing lost, nothing duplicated, nothing half-written."""
    import ingest.pipeline as pipeline

    _, good = inputs
    items = resolve_inputs([str(p) for p in good])
    out = tmp_path / "ds"
    original, calls = pipeline._write_frame, {"n": 0}

    def dies_on_the_11th_frame(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 11:  # the 3rd frame of the second video
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_write_frame", dies_on_the_11th_frame)
    with pytest.raises(KeyboardInterrupt):
        run_ingest(items, out, _tiny_config(), progress=False)
    assert part_dir(out, items[0].video_id).is_dir() and not part_dir(out, items[1].video_id).exists()
    # What a SIGKILL leaves: a hidden temporary part with a half-written shard.
    stale = part_dir(out, items[1].video_id).parent / f".{items[1].video_id}.tmp-killed"
    stale.mkdir()
    (stale / ".views-00000.tar.tmp").write_bytes(b"half a tar")
    monkeypatch.setattr(pipeline, "_write_frame", original)
    summary = run_ingest(items, out, _tiny_config(), progress=False)
    assert summary["videos_processed"] == 1 and summary["videos_already_done"] == 1
    assert not stale.exists()
    frames = pq.read_table(out / "frames.parquet").to_pylist()
    assert len(frames) == len({f["frame_id"] for f in frames}) == 16
    ds = Dataset(out)
    assert all(len(ds.frames(v)) == 8 for v in ds.video_ids())
    assert not list(out.rglob(".*.tmp*"))


def test_sigkill_then_resume(inputs, tmp_path):
    """A real kill -9 of the CLI mid-run, then a re-run, gives the same dataset as an uninterrupted run."""
    _, good = inputs
    many = tmp_path / "videos"
    many.mkdir()
    for k in range(6):
        shutil.copy(good[0], many / f"clip_{k}.mp4")
    out = tmp_path / "ds"
    args = [str(many), "--out", str(out), "--fps", "0", "--equirect-width", "128", "--views", "4",
            "--view-size", "32", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from ingest.cli import main; sys.exit(main())",
                             "ingest", *args], cwd=Path(__file__).resolve().parents[1],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.glob("parts/*/*/record.json")):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert 1 <= len(list(out.glob("parts/*/*/record.json"))) < 6
    assert main(["ingest", *args]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["videos_done"] + summary["videos_already_done"] == 6
    frames = pq.read_table(out / "frames.parquet").to_pylist()
    assert len(frames) == len({f["frame_id"] for f in frames}) == 6 * 20
    assert not list(out.rglob(".*.tmp*"))


def test_settings_must_match_to_resume(dataset, inputs):
    d, _ = inputs
    other = [("64" if a == "32" else a) for a in TINY]
    assert main(["ingest", str(d), "--out", str(dataset), *other]) == 2


@pytest.mark.parametrize("argv, message", [
    (["--fps", "nan"], "--fps"),
    (["--views", "eight"], "--views"),
    (["--equirect-width", "7"], "--equirect-width"),
    (["--workers", "0"], "--workers"),
])
def test_bad_flags_are_one_line_errors(argv, message, tmp_path, capsys, tiny_world):
    assert main(["ingest", str(tiny_world.video_path), "--out", str(tmp_path / "ds"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_from_list_plans_and_skips(tmp_path, inputs):
    import pyarrow as pa

    _, good = inputs
    vdir = tmp_path / "vids"
    vdir.mkdir()
    shutil.copy(good[0], vdir / "abc123.mp4")
    table = pa.table({"id": ["abc123", "cube01", "flat02", "gone03"], "width": [256, 3072, 1280, 3840],
                      "height": [128, 2048, 1024, 1920], "fps": [5.0, 30, 30, 30], "duration": [4.0, 10, 10, 10],
                      "format": ["equirectangular", "cubemap", "mono", "equirectangular"]})
    meta = tmp_path / "360-1M.parquet"
    pq.write_table(table, meta)
    items = plan_from_list(meta, vdir)
    assert [it.skip_reason is None for it in items] == [True, False, False, True]
    out = tmp_path / "ds"
    assert main(["ingest", "--from-list", str(meta), "--video-dir", str(vdir), "--out", str(out), *TINY]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["videos_done"], summary["videos_skipped"], summary["videos_failed"]) == (1, 2, 1)
    assert list(summary["failures"].values()) == ["no such file"]


def test_worker_processes_give_the_same_dataset(inputs, dataset, tmp_path):
    _, good = inputs
    out = tmp_path / "ds"
    assert main(["ingest", *map(str, good), "--out", str(out), "--workers", "2", *TINY]) == 0
    serial = {r["frame_id"]: r for r in pq.read_table(dataset / "frames.parquet").to_pylist()}
    parallel = pq.read_table(out / "frames.parquet").to_pylist()
    assert len(parallel) == 16
    assert all(serial[r["frame_id"]]["kept"] == r["kept"] for r in parallel)


@pytest.mark.slow
def test_ray_path(inputs, tmp_path):
    ray = pytest.importorskip("ray")
    _, good = inputs
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ds"
        summary = run_ingest(resolve_inputs([str(p) for p in good] + [str(tmp_path / "missing.mp4")]), out,
                             _tiny_config(), ray_address="auto", progress=False)
    finally:
        ray.shutdown()
    assert (summary["videos_done"], summary["videos_failed"]) == (2, 1)
    ds = Dataset(out)
    assert sum(len(ds.frames(v)) for v in ds.video_ids()) == summary["frames_kept"] > 0


def _decode_rgb(path, index: int = 0) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        for k, frame in enumerate(c.decode(video=0)):
            if k == index:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"{path} has no frame {index}")


def test_stored_frames_keep_their_colours(dataset, inputs):
    """The pipeline works in BGR internally: what is stored must still be the source's RGB."""
    import cv2

    ds = Dataset(dataset)
    fr = ds.frames(ds.video_ids()[0])[0]
    assert fr.source_index == 0
    expected = cv2.resize(_decode_rgb(inputs[1][0]), (128, 64), interpolation=cv2.INTER_AREA)
    stored = ds.load_equirect(fr.frame_id)
    assert np.abs(stored.astype(int) - expected).mean() < 3
    assert np.abs(stored[..., ::-1].astype(int) - expected).mean() > 3 * np.abs(stored.astype(int) - expected).mean()


def test_a_contact_sheet_per_done_video(dataset):
    from ingest.contact import CONTACT_SHEET
    from ingest.shards import decode_image

    ds = Dataset(dataset)
    for vid in ds.video_ids():
        n_kept = len(ds.frames(vid))
        sheet = decode_image((part_dir(dataset, vid) / CONTACT_SHEET).read_bytes())
        rows = -(-n_kept // 6)
        assert sheet.shape == (rows * (128 + 2) + 2, min(n_kept, 6) * (256 + 2) + 2, 3)


def _rotated_copy(src: Path, dst: Path) -> int:
    """``src`` re-encoded turned 90° clockwise, tagged so players turn it back; returns the tag's angle."""
    import av

    from ingest.media import write_mp4
    from ingest.probe import probe

    coded = dst.with_name("coded.mp4")
    with av.open(str(src)) as c:
        write_mp4(coded, (np.rot90(f.to_ndarray(format="rgb24"), -1) for f in c.decode(video=0)), fps=5.0)
    # FFmpeg >= 6 sets the display matrix with -display_rotation (counter-clockwise degrees); older
    # versions through the 'rotate' tag. Either way the player must undo our clockwise turn.
    for opts in (["-display_rotation", "90", "-i", str(coded)], ["-i", str(coded), "-metadata:s:v:0", "rotate=90"]):
        run = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *opts, "-c", "copy", str(dst)],
                             capture_output=True)
        if run.returncode == 0 and probe(dst).rotation:
            return probe(dst).rotation
    pytest.skip("this ffmpeg cannot tag a display rotation")


def test_rotation_metadata_is_probed_and_honoured(tiny_world, tmp_path):
    """A portrait-coded video with a display matrix is stored as the player shows it (upright 2:1)."""
    import cv2

    if not shutil.which("ffmpeg"):
        pytest.skip("ffmpeg CLI needed to tag a rotation")
    rotated = _rotated_copy(Path(tiny_world.video_path), tmp_path / "rotated.mp4")
    assert rotated == 90
    # What an autorotating player shows (FFmpeg applies the display matrix by default).
    shown = tmp_path / "shown.png"
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", "-i", str(tmp_path / "rotated.mp4"),
                    "-frames:v", "1", str(shown)], check=True)
    player = cv2.cvtColor(cv2.imread(str(shown)), cv2.COLOR_BGR2RGB)
    original = _decode_rgb(tiny_world.video_path)
    assert player.shape == original.shape and np.abs(player.astype(int) - original).mean() < 4

    out = tmp_path / "ds"
    assert main(["ingest", str(tmp_path / "rotated.mp4"), "--out", str(out), *TINY]) == 0
    ds = Dataset(out)
    (vid,) = ds.video_ids()
    video = ds.video(vid)
    assert video.status == "done"
    row = pq.read_table(out / "videos.parquet").to_pylist()[0]
    assert row["rotation"] == 90 and (row["width"], row["height"]) == (128, 256)  # as coded: portrait
    stored = ds.load_equirect(ds.frames(vid)[0].frame_id)
    expected = cv2.resize(player, (128, 64), interpolation=cv2.INTER_AREA)
    assert stored.shape == (64, 128, 3)
    err = np.abs(stored.astype(int) - expected).mean()
    assert err < 4
    # Not honouring it (or turning the wrong way) would be far off.
    assert np.abs(np.rot90(stored, 2).astype(int) - expected).mean() > 3 * err


def test_bgr_fast_paths_match_the_rgb_ones(tiny_world):
    import av

    from ingest.decode import to_bgr, to_rgb
    from ingest.shards import encode_bgr_image, encode_image

    with av.open(str(tiny_world.video_path)) as c:
        frame = next(c.decode(video=0))
        rgb, bgr = to_rgb(frame), to_bgr(frame)
    np.testing.assert_array_equal(bgr, rgb[..., ::-1])
    for ext in ("jpg", "png"):
        assert encode_bgr_image(bgr, ext, 90) == encode_image(rgb, ext, 90)
