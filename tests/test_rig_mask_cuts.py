"""Rig masks and shot cuts: a synthetic clip with a camera-attached box and a cut, end to end
through `odin ingest` and mining; the mask rules on their own; `--mask` files."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from correspondence.features import extract_features, on_mask
from correspondence.mine import MineConfig, mine_video, window_pairs
from correspondence.pairs_io import consolidate, read_pairs_table
from correspondence.synthetic_source import SyntheticFrameSource
from ingest.cli import main
from ingest.dataset import Dataset
from ingest.rigmask import RigMaskAccumulator, fill_from_poles, load_mask_file
from ingest.shots import CutConfig, detect_cuts, shot_indices
from ingest.views import ViewsConfig

QUICK = MineConfig(window=1, long_range=False, fallback_views=ViewsConfig(size=64))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def rig_world(tmp_path_factory):
    """512x256 (mining needs the detail), 4 s at 5 fps: a box rides below the camera; at 2 s the
    clip jumps to another room."""
    from ingest.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("rigworld") / "world"
    return generate(root, SynthConfig(seconds=4.0, fps=5.0, width=512, seed=3, rig_box=True, cut_at=2.0),
                    progress=False)


@pytest.fixture(scope="module")
def rig_dataset(rig_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("rigds") / "ds"
    assert main(["ingest", str(rig_world.video_path), "--out", str(out), "--fps", "0", "--views", "0",
                 "--no-progress"]) == 0
    return Dataset(out)


def test_synthetic_rig_box_is_where_the_renderer_put_it(rig_world):
    truth = rig_world.rig_mask()
    assert 0.03 < truth.mean() < 0.1
    _, ids = rig_world.ground_truth(7)
    assert np.array_equal(ids == 255, truth)  # the same pixels in every frame, whatever the pose
    assert rig_world.shots.tolist() == [0] * 10 + [1] * 10


def test_rig_box_is_masked_at_ingest(rig_dataset, rig_world):
    vid = rig_dataset.video_ids()[0]
    mask = rig_dataset.rig_mask(vid)
    assert mask.shape == (256, 512) and mask.dtype == bool
    assert _iou(mask, rig_world.rig_mask()) >= 0.8
    row = rig_dataset.video(vid).row
    assert row["rig_mask_source"] == "auto" and not row["rig_mask_static_camera"]
    # The contact sheet shows it: tiles are red-tinted where the mask is.
    sheet = cv2.imread(str(next(rig_dataset.root.rglob("contact_sheet.png"))))[..., ::-1].astype(int)
    tile = sheet[2:2 + 128, 2:2 + 256]
    m = cv2.resize(mask.astype(np.uint8), (256, 128), interpolation=cv2.INTER_NEAREST) > 0
    assert (tile[m, 0] - tile[m, 1]).mean() > (tile[~m, 0] - tile[~m, 1]).mean() + 40


def test_cut_splits_the_clip_into_two_shots(rig_dataset):
    vid = rig_dataset.video_ids()[0]
    shots = rig_dataset.shots(vid)
    assert [len(s) for s in shots] == [10, 10]
    assert shots[1][0] == f"{vid}/000010"
    (cut,) = rig_dataset.cuts(vid)
    assert cut["index"] == 10 and cut["time"] == pytest.approx(2.0, abs=0.01) and cut["score"] > 3


def test_mining_the_ingested_clip_drops_rig_keypoints_and_never_pairs_across_the_cut(rig_dataset, tmp_path):
    vid = rig_dataset.video_ids()[0]
    frame = rig_dataset.frames(vid)[3]
    mask = rig_dataset.rig_mask(vid)
    eq = rig_dataset.load_equirect(frame.frame_id)
    assert on_mask(extract_features(eq).bearings, mask).sum() >= 5  # the rig has features to lose ...
    assert not on_mask(extract_features(eq, rig_mask=mask).bearings, mask).any()  # ... and loses them
    summary = mine_video(rig_dataset, vid, tmp_path, QUICK, progress=False)
    assert summary.shots == 2 and summary.pairs > 0
    shot_of = {fid: k for k, ids in enumerate(rig_dataset.shots(vid)) for fid in ids}
    consolidate(tmp_path)
    pairs = read_pairs_table(tmp_path)
    assert len(pairs) == summary.pairs
    assert all(shot_of[p.src_frame_id] == shot_of[p.tgt_frame_id] for p in pairs)
    # Without the cut the window would have tried pairs across it.
    attempted = {(a, b) for a, b, *_ in summary.attempts}
    assert (9, 10) not in attempted and (8, 9) in attempted and (10, 11) in attempted


def test_synthetic_source_gives_the_exact_mask_and_shots(rig_world):
    source = SyntheticFrameSource(rig_world, height=64, frame_indices=[0, 4, 9, 10, 15])
    vid = source.video_ids()[0]
    assert source.rig_mask(vid).shape == (64, 128)
    assert [len(s) for s in source.shots(vid)] == [3, 2]


def test_window_pairs_respect_shots():
    assert window_pairs(4, 2, [0, 0, 1, 1]) == [(0, 1), (2, 3)]


def _blobs(rng, w: int, h: int) -> np.ndarray:
    """Textured like a real scene: contrasty blobs a few pixels across."""
    return cv2.resize(rng.integers(0, 255, (h // 4, w // 4, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)


def test_static_camera_masks_only_what_has_no_picture():
    """A camera that never moves cannot tell its rig from the scene: nothing is masked but a black
    constant band (a nadir patch) — never the whole frame."""
    rng = np.random.default_rng(0)
    scene = _blobs(rng, 512, 256)
    acc = RigMaskAccumulator()
    for _ in range(6):
        acc.add(np.clip(scene.astype(int) + rng.integers(-2, 3, scene.shape), 0, 255).astype(np.uint8))
    assert acc.result().static and acc.result().mask is None
    banded = scene.copy()
    banded[-20:] = 0
    acc = RigMaskAccumulator()
    for _ in range(6):
        acc.add(banded)
    result = acc.result()
    assert result.static and result.mask[-15:].mean() > 0.95 and result.mask[:-30].mean() == 0


def test_moving_scene_with_a_fixed_patch():
    """Texture that slides past (a turning camera) vs. a textured patch that stays: only the patch."""
    rng = np.random.default_rng(1)
    world, patch = _blobs(rng, 512, 256), _blobs(rng, 120, 40)
    acc = RigMaskAccumulator()
    for k in range(12):
        frame = np.roll(world, 37 * k, axis=1)
        frame[180:220, 200:320] = patch
        acc.add(frame)
    result = acc.result()
    truth = np.zeros((256, 512), bool)
    truth[180:220, 200:320] = True
    assert not result.static and _iou(result.mask, truth) >= 0.7


def test_pole_fill_reaches_the_pole_only_when_the_rig_does():
    m = np.zeros((64, 128), np.uint8)
    m[-2:] = 1  # the nadir patch
    m[-20:-10, 30:60] = 1  # the rig's outline, with a textureless gap below it
    filled = fill_from_poles(m, 0.6)
    assert filled[-20:, 30:60].all() and not filled[:-20].any()
    hovering = np.zeros_like(m)
    hovering[-20:-10, 30:60] = 1
    assert np.array_equal(fill_from_poles(hovering, 0.6), hovering)


def test_cut_rule_needs_a_jump_above_the_local_level():
    cfg = CutConfig()
    steady = np.array([0.1, 0.12, 0.09, 0.8, 0.11, 0.1])
    assert [k for k, _ in detect_cuts(steady, cfg)] == [4]
    shaky = np.array([0.5, 0.55, 0.6, 0.58, 0.52])  # fast motion: large everywhere, no jump
    assert detect_cuts(shaky, cfg) == []
    assert shot_indices(6, [4]) == [0, 0, 0, 0, 1, 1]
    assert detect_cuts(np.array([0.5]), cfg) == [] and len(detect_cuts(np.array([0.8]), cfg)) == 1  # 2 frames


def test_user_mask_file(rig_world, tmp_path, capsys):
    mask = np.zeros((50, 100), np.uint8)
    mask[35:, :] = 255
    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    out = tmp_path / "ds"
    assert main(["ingest", str(rig_world.video_path), "--out", str(out), "--fps", "1", "--views", "0",
                 "--mask", str(tmp_path / "mask.png"), "--no-progress"]) == 0
    ds = Dataset(out)
    vid = ds.video_ids()[0]
    got = ds.rig_mask(vid)
    assert got.shape == (256, 512) and 0.28 < got.mean() < 0.32 and got[-1].all() and not got[0].any()
    assert ds.video(vid).row["rig_mask_source"] == "file"
    assert load_mask_file(tmp_path / "mask.png").shape == (50, 100)


@pytest.mark.parametrize("content, message", [
    (b"not an image", "not an image"),
    (None, "no such file"),
])
def test_bad_mask_file_is_one_line(content, message, rig_world, tmp_path, capsys):
    path = tmp_path / "m.png"
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / "ds"
    assert main(["ingest", str(rig_world.video_path), "--out", str(out), "--mask", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--mask" in err and message in err and str(path) in err
    assert not out.exists()


def test_wrong_aspect_mask_is_refused(tmp_path, capsys, rig_world):
    cv2.imwrite(str(tmp_path / "sq.png"), np.full((64, 64), 255, np.uint8))
    assert main(["ingest", str(rig_world.video_path), "--out", str(tmp_path / "ds"), "--mask",
                 str(tmp_path / "sq.png")]) == 2
    assert "expected an equirectangular 2:1" in capsys.readouterr().err


def test_no_rig_mask_and_no_cuts_flags(rig_world, tmp_path):
    out = tmp_path / "ds"
    assert main(["ingest", str(rig_world.video_path), "--out", str(out), "--fps", "0", "--views", "0",
                 "--no-rig-mask", "--no-cuts", "--no-progress"]) == 0
    ds = Dataset(out)
    vid = ds.video_ids()[0]
    assert ds.rig_mask(vid) is None and len(ds.shots(vid)) == 1 and ds.cuts(vid) == []
    assert json.loads((out / "ingest_config.json").read_text())["cuts"]["enabled"] is False
