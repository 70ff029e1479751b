"""`odin reconstruct` (pycolmap SfM on 360° frames) and `odin import-poses` (LLFF, transforms.json)."""
from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from correspondence.essential import angular_errors, essential_from_pose
from correspondence.evaluate import direction_error_deg
from correspondence.matching import mutual_ratio_matches
from correspondence.nerfstudio import load_llff, load_transforms
from correspondence.reconstruct import ReconstructConfig, reconstruct_video
from correspondence.synthetic_source import SyntheticFrameSource
from ingest import conventions as cv
from ingest.cli import main
from ingest.views import ViewsConfig


def test_pycolmap_equirectangular_camera_is_our_convention():
    import pycolmap

    cam = pycolmap.Camera.create_from_model_name(0, "EQUIRECTANGULAR", 1.0, 512, 256)
    d = cv.normalize(np.random.default_rng(0).normal(size=(50, 3)))
    u, v = cv.equirect_pixel_from_direction(d, 512, 256)
    assert np.allclose(cam.img_from_cam(d), np.stack([u, v], -1), atol=1e-6)


def test_reconstruct_synthetic_video_matches_ground_truth(tiny_world, tmp_path):
    source = SyntheticFrameSource(tiny_world, height=256, frame_indices=range(0, 16, 2))
    config = ReconstructConfig(views=ViewsConfig(rings=((4, 0.0),), size=64))
    result = reconstruct_video(source, source.video_id, tmp_path, config)
    assert result.registered >= 6
    rot, trans = [], []
    for a, b in itertools.combinations(sorted(result.c2w), 2):
        T = cv.relative_pose(result.c2w[a], result.c2w[b])
        T_gt = cv.relative_pose(source.c2w(a), source.c2w(b))
        rot.append(cv.rotation_angle_deg(T[:3, :3], T_gt[:3, :3]))
        trans.append(direction_error_deg(T[:3, 3], T_gt[:3, 3]))
    assert np.median(rot) < 0.5 and np.median(trans) < 3.0
    scene = load_transforms(tmp_path / "transforms.json")
    assert len(scene.frames) == 4 * result.registered
    assert all(f.image_path.exists() and f.intrinsics.width == 64 for f in scene.frames)
    assert (tmp_path / "points.ply").stat().st_size > 0
    # A view's pose is its frame's pose turned by the view rotation (OpenCV axes after the round trip).
    first = sorted(result.c2w)[0]
    expected = result.c2w[first] @ cv.make_pose(config.views.specs()[1].R_frame_from_view, np.zeros(3))
    assert np.allclose(scene.frames[1].c2w, expected, atol=1e-6)


def _bearings(points_cv2: np.ndarray, K: cv.Intrinsics) -> np.ndarray:
    u, v = points_cv2[:, 0] + 0.5, points_cv2[:, 1] + 0.5
    return cv.normalize(np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u)], -1))


def _epipolar_error_deg(frame_a, frame_b, T_b_from_a) -> float:
    sift = cv2.SIFT_create(nfeatures=2000)
    feats = []
    for f in (frame_a, frame_b):
        kp, desc = sift.detectAndCompute(cv2.imread(str(f.image_path), cv2.IMREAD_GRAYSCALE), None)
        feats.append((np.array([k.pt for k in kp]), desc))
    matches, _ = mutual_ratio_matches(feats[0][1], feats[1][1], 0.7)
    b_a = _bearings(feats[0][0][matches[:, 0]], frame_a.intrinsics)
    b_b = _bearings(feats[1][0][matches[:, 1]], frame_b.intrinsics)
    E = essential_from_pose(T_b_from_a[:3, :3], cv.normalize(T_b_from_a[:3, 3]))
    return float(np.degrees(np.median(angular_errors(E, b_a, b_b))))


def test_imported_fern_poses_give_consistent_rays(shared_data, tmp_path, capsys):
    fern = shared_data / "posed" / "fern_llff"
    assert main(["import-poses", str(fern), "--out", str(tmp_path)]) == 0
    assert "imported 20 posed frames" in capsys.readouterr().out
    scene = load_transforms(tmp_path / "transforms.json")
    direct = load_llff(fern)
    assert len(scene.frames) == 20
    for a, b in zip(scene.frames, direct.frames):
        assert np.allclose(a.c2w, b.c2w, atol=1e-9) and a.intrinsics == b.intrinsics
    # Matched pixels of two photos lie on each other's epipolar lines under the imported poses:
    # far below the error of a slightly wrong pose (turned 0.6° about x: epipolar lines run
    # along x in this sideways-moving sequence, so a tilt moves points off them).
    fa, fb = scene.frames[0], scene.frames[3]
    T = cv.relative_pose(fa.c2w, fb.c2w)
    good = _epipolar_error_deg(fa, fb, T)
    wrong = T.copy()
    wrong[:3, :3] = cv.rotation_from_axis_angle(np.array([0.01, 0.0, 0.0])) @ T[:3, :3]
    assert good < 0.15 and _epipolar_error_deg(fa, fb, wrong) > 3 * good


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    assert main(["import-poses", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing" in err
    assert main(["mine", str(tmp_path / "nothing"), "--window", "0"]) == 2
    assert "--window" in capsys.readouterr().err


def test_transforms_import_skips_missing_images(tmp_path, capsys):
    import json

    (tmp_path / "a.png").write_bytes(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    frame = {"transform_matrix": np.eye(4).tolist(), "fl_x": 10.0, "w": 8, "h": 8}
    meta = {"frames": [{**frame, "file_path": "a.png"}, {**frame, "file_path": "gone.png"}]}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    out = tmp_path / "out"
    assert main(["import-poses", str(tmp_path / "transforms.json"), "--out", str(out)]) == 0
    assert len(load_transforms(out / "transforms.json").frames) == 1
