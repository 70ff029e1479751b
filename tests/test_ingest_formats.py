"""Layouts and containers seen on real files: 16:9 top-bottom stereo, `--layout`, refusal reasons
kept whole, HEVC and MPEG-TS input, and the rig masks of the real clips in ../shared/data."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ingest.cli import main
from ingest.dataset import Dataset
from ingest.layout import detect_layout, to_equirect
from ingest.media import write_mp4
from ingest.probe import VideoInfo

FAST = ["--views", "0", "--no-progress"]


def _info(w, h, projection=None, stereo=None):
    return VideoInfo("x.mp4", "video", "mp4", "h264", w, h, 30.0, 10.0, 300, 0, projection, stereo, 1)


@pytest.fixture(scope="module")
def tb_16_9(tiny_world, tmp_path_factory):
    """A 16:9 top-bottom stereo clip (each eye a 2:1 panorama squeezed to 32:9), written with PyAV."""
    eyes = [tiny_world.render(k).rgb for k in range(0, 8, 2)]  # 256x128 panoramas
    frames = [np.concatenate([cv2.resize(e, (256, 72), interpolation=cv2.INTER_AREA),
                              cv2.resize(np.roll(e, 2, axis=1), (256, 72), interpolation=cv2.INTER_AREA)])
              for e in eyes]
    path = tmp_path_factory.mktemp("tb") / "tb_16_9.mp4"
    write_mp4(path, frames, fps=5.0, crf=12)
    return path, eyes


def test_16_9_top_bottom_with_equirect_metadata_is_resampled_not_refused():
    layout = detect_layout(_info(1920, 1080, "equirectangular", "top-bottom"))
    assert (layout.name, layout.crop, layout.source) == ("top-bottom", (0, 0, 1920, 540), "metadata")
    eye = np.zeros((1080, 1920, 3), np.uint8)
    assert to_equirect(eye, layout, 1024).shape == (512, 1024, 3)


def test_16_9_top_bottom_clip_ingests_as_2_to_1_mono(tb_16_9, tmp_path):
    path, eyes = tb_16_9
    out = tmp_path / "ds"
    assert main(["ingest", str(path), "--out", str(out), "--fps", "0", *FAST]) == 0
    ds = Dataset(out)
    (vid,) = ds.video_ids()
    video = ds.video(vid)
    assert video.layout == "top-bottom" and (video.equirect_width, video.equirect_height) == (256, 128)
    frames = ds.frames(vid)
    assert len(frames) == 4
    got = ds.load_equirect(frames[1].frame_id).astype(int)
    # The top eye, back at 2:1: close to the panorama it was squeezed from (vertical detail was lost).
    err = np.abs(got - eyes[1].astype(int)).mean()
    assert err < 12
    assert err < 0.5 * np.abs(got - np.roll(eyes[1], 64, axis=1).astype(int)).mean()  # and not by chance


def test_layout_override(tb_16_9, tmp_path):
    path, _ = tb_16_9
    out = tmp_path / "ds"
    assert main(["ingest", str(path), "--out", str(out), "--fps", "0", "--layout", "squeezed", *FAST]) == 0
    video = Dataset(out).video(Dataset(out).video_ids()[0])
    assert video.layout == "squeezed" and video.row["layout_source"] == "override"
    assert detect_layout(_info(4000, 1000), None, "side-by-side").crop == (0, 0, 2000, 1000)
    assert detect_layout(_info(3000, 1000), None, "mono").note == "eye 3.00:1 resampled to 2:1"


def test_bad_layout_flag_is_one_line(tb_16_9, tmp_path, capsys):
    assert main(["ingest", str(tb_16_9[0]), "--out", str(tmp_path / "ds"), "--layout", "cubemap"]) == 2
    err = capsys.readouterr().err
    assert "--layout" in err and len(err.splitlines()) == 1


def test_refusal_reason_is_stored_whole(tmp_path):
    rgb = np.zeros((64, 192, 3), np.uint8)
    rgb[:, ::8] = 255
    write_mp4(tmp_path / "wide.mp4", [rgb] * 3, fps=5.0)
    out = tmp_path / "ds"
    assert main(["ingest", str(tmp_path / "wide.mp4"), "--out", str(out), *FAST]) == 2  # nothing ingested
    summary = json.loads((out / "summary.json").read_text())
    reason = summary["failures"][str(tmp_path / "wide.mp4")]
    assert reason.startswith("aspect 192x64 (3.000:1) is not 2:1") and reason.endswith("16:9 squeezed equirectangular")


def _ingest_real(shared_data, name, tmp_path, *extra):
    path = shared_data / "video360" / name
    if not path.exists():
        pytest.skip(f"{path} not found")
    out = tmp_path / "ds"
    assert main(["ingest", str(path), "--out", str(out), "--equirect-width", "512", *FAST, *extra]) == 0
    ds = Dataset(out)
    assert ds.video_ids(), json.loads((out / "summary.json").read_text())["failures"]
    return ds, ds.video_ids()[0]


def test_hevc_static_tripod(shared_data, tmp_path):
    """HEVC decodes; a static camera is recognised and not masked wholesale."""
    ds, vid = _ingest_real(shared_data, "cave_waterfall_static-equirectangular-hevc.mp4", tmp_path, "--fps", "1")
    video = ds.video(vid)
    assert video.row["codec"] == "hevc" and video.n_kept >= 1
    assert video.row["rig_mask_static_camera"] is True
    mask = ds.rig_mask(vid)
    assert mask is None or mask.mean() < 0.05
    assert len(ds.shots(vid)) == 1


def test_mpeg_ts_top_bottom_stereo(shared_data, tmp_path):
    ds, vid = _ingest_real(shared_data, "iceland_geyser_stereo-top-bottom.ts", tmp_path, "--fps", "2")
    video = ds.video(vid)
    assert video.row["container"] == "mpegts" and video.layout == "top-bottom"
    assert (video.equirect_width, video.equirect_height) == (512, 256)
    assert len(ds.shots(vid)) == 1 and ds.cuts(vid) == []
    mask = ds.rig_mask(vid)
    assert mask is None or mask.mean() < 0.05


def _coverage(mask: np.ndarray, rows: slice, cols: slice = slice(None)) -> float:
    return float(mask[rows, cols].mean())


def test_car_body_and_nadir_band_are_masked(shared_data, tmp_path):
    ds, vid = _ingest_real(shared_data, "car_overpass-clip.mp4", tmp_path, "--fps", "4")
    mask = ds.rig_mask(vid)
    h, w = mask.shape
    assert _coverage(mask, slice(h - h // 20, h)) > 0.95  # the black nadir band
    assert _coverage(mask, slice(int(0.6 * h), int(0.8 * h)), slice(int(0.35 * w), int(0.65 * w))) > 0.8  # passengers
    assert _coverage(mask, slice(0, int(0.3 * h))) < 0.05  # the overpasses and the sky pass overhead
    assert 0.2 < mask.mean() < 0.6


def test_dragster_car_is_masked(shared_data, tmp_path):
    ds, vid = _ingest_real(shared_data, "dragster_onboard_vr-equirectangular.mp4", tmp_path, "--fps", "2")
    mask = ds.rig_mask(vid)
    h, w = mask.shape
    assert _coverage(mask, slice(int(0.75 * h), h)) > 0.55  # the car around and below the camera (65% measured)
    assert _coverage(mask, slice(0, int(0.3 * h))) < 0.1  # sky


@pytest.mark.slow
def test_drone_arms_are_masked(shared_data, tmp_path):
    ds, vid = _ingest_real(shared_data, "ayutthaya_drone-equirectangular-hevc.mp4", tmp_path, "--fps", "1")
    mask = ds.rig_mask(vid)
    h, w = mask.shape
    assert _coverage(mask, slice(0, int(0.1 * h))) > 0.7  # the drone's body, arms and propellers
    assert _coverage(mask, slice(h // 2, h)) < 0.02  # the ground it flies over
