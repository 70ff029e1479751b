"""`odin reconstruct` (pycolmap SfM on 360° frames) and `odin import-poses` (LLFF, transforms.json)."""
from __future__ import annotations

import itertools
import json

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
from ingest.errors import OdinError
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


@pytest.fixture(scope="module")
def walking_world(tmp_path_factory):
    """A camera that faces where it walks: every candidate initial pair is pure forward motion."""
    from ingest.synth import CameraPathConfig, SynthConfig, generate

    root = tmp_path_factory.mktemp("walk") / "world"
    return generate(root, SynthConfig(seconds=5.0, fps=2.0, width=512, seed=4, path=CameraPathConfig(heading="motion")),
                    progress=False)


def test_forward_walk_is_forward_motion(walking_world):
    """The fixture is the case the fix is for: the camera moves along its own optical axis."""
    c2w = walking_world.poses
    for a, b in zip(c2w[:-1], c2w[1:]):
        step = cv.normalize(b[:3, 3] - a[:3, 3])
        assert step @ a[:3, 2] > 0.95


@pytest.mark.parametrize("route", ["rig", "equirect"])
def test_forward_walking_clip_registers_every_frame(walking_world, tmp_path, route):
    from correspondence.sfm import SfmConfig

    source = SyntheticFrameSource(walking_world, height=256)
    config = ReconstructConfig(views=ViewsConfig(rings=((2, 0.0),), size=48), sfm=SfmConfig(route=route))
    result = reconstruct_video(source, source.video_id, tmp_path, config, log=lambda *a: None)
    assert result.registered == result.frames == len(walking_world)
    from correspondence.evaluate import trajectory_errors

    rot, centre = trajectory_errors(result.c2w, {f: source.c2w(f) for f in result.c2w})
    assert rot < 1.0 and centre < 0.02
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["registered"] == result.frames and report["route"] == route
    assert all(r["registered"] and r["reprojection_px"] < 2.0 for r in report["frames_report"])
    assert (tmp_path / "trajectory.png").stat().st_size > 0


@pytest.mark.parametrize("route", ["equirect", "rig"])
def test_the_same_frames_give_the_same_poses_on_every_run(walking_world, tmp_path, route):
    """The defaults: threaded extraction and matching (images numbered in frame order, seeded RANSAC),
    one mapper thread."""
    from correspondence.sfm import SfmConfig

    source = SyntheticFrameSource(walking_world, height=256)
    config = ReconstructConfig(views=ViewsConfig(rings=((2, 0.0),), size=48), sfm=SfmConfig(route=route))
    runs = [reconstruct_video(source, source.video_id, tmp_path / str(k), config, log=lambda *a: None).c2w
            for k in range(2)]
    assert runs[0] and runs[0].keys() == runs[1].keys()
    for frame_id, pose in runs[0].items():
        np.testing.assert_array_equal(pose, runs[1][frame_id])


def test_unregistered_frames_are_reported_with_a_reason(walking_world, tmp_path):
    """A black frame in the middle of the clip cannot register; the report and the PNG say which."""
    class WithBlackFrame(SyntheticFrameSource):
        def load_equirect(self, frame_id):
            image = super().load_equirect(frame_id)
            return image * 0 if frame_id.endswith("000004") else image

    source = WithBlackFrame(walking_world, height=256)
    config = ReconstructConfig(views=ViewsConfig(rings=((2, 0.0),), size=48))
    result = reconstruct_video(source, source.video_id, tmp_path, config, log=lambda *a: None)
    report = {r["frame_id"]: r for r in json.loads((tmp_path / "report.json").read_text())["frames_report"]}
    black = f"{source.video_id}/000004"
    assert not report[black]["registered"] and "too few features" in report[black]["reason"]
    assert result.registered == len(walking_world) - 1


def test_failed_reconstruction_names_the_frames_and_what_to_try(tiny_world, tmp_path, capsys):
    class Black(SyntheticFrameSource):
        def load_equirect(self, frame_id):
            return super().load_equirect(frame_id) * 0

    source = Black(tiny_world, height=64, frame_indices=range(4))
    with pytest.raises(OdinError) as e:
        reconstruct_video(source, source.video_id, tmp_path, ReconstructConfig(), log=lambda *a: None)
    message = str(e.value)
    assert "0 of 4" in message and "too few features" in message and "--fps" in message and "--mask" in message
    assert json.loads((tmp_path / "report.json").read_text())["registered"] == 0
    assert not (tmp_path / "transforms.json").exists()


def test_frame_pairs_keep_neighbours_and_seeds():
    from correspondence.sfm import frame_pairs

    pairs = frame_pairs(6, 1, {(5, 0), (2, 2), (1, 9)})
    assert pairs == [(0, 1), (0, 5), (1, 2), (2, 3), (3, 4), (4, 5)]


def test_rig_pairs_follow_the_relative_rotation():
    """A frame turned by 180° sees with its back camera what the other saw with its front camera."""
    from correspondence.sfm import SfmConfig, image_pairs, rig_specs

    config = SfmConfig(rig_pair_max_angle_deg=30.0)
    specs = rig_specs(512, config)
    images = [[f"cam{k:02d}/a" for k in range(len(specs))], [f"cam{k:02d}/b" for k in range(len(specs))]]
    straight = image_pairs("rig", [(0, 1)], images, specs, {}, config)
    assert ("cam01/a", "cam01/b") in straight and len(straight) == len(specs)
    turned = image_pairs("rig", [(0, 1)], images, specs, {(0, 1): cv.rotation_from_ypr(np.pi, 0.0, 0.0)}, config)
    back_of = {0: 2, 2: 0, 1: 3, 3: 1}  # horizon ring: 4 yaws 90° apart
    assert (f"cam{4 + 0:02d}/a", f"cam{4 + back_of[0]:02d}/b") in turned and len(turned) == len(specs)


def test_flythrough_follows_the_recorded_cameras():
    from correspondence.flythrough import trajectory_camera_path

    # A corridor walk along +z that slopes a little, the camera rolled by a few degrees.
    cameras = [cv.make_pose(cv.rotation_from_ypr(0.05 * np.sin(k), 0.0, 0.03), np.array([0.0, -0.02 * k, 0.5 * k]))
               for k in range(20)]
    path = trajectory_camera_path(cameras, 30, lateral=0.05, yaw_deg=10.0, scene_depth=1.0)
    centres = np.stack([T[:3, 3] for T in path])
    assert np.all(np.abs(centres[:, 0]) <= 0.05 + 1e-9)  # lateral sway only, never an orbit outside the walls
    assert centres[0, 2] < 1.5 and centres[-1, 2] > 8.0  # it travels the walk
    for T in path:
        assert cv.is_rotation(T[:3, :3], atol=1e-6)
        assert T[:3, 2] @ np.array([0.0, 0.0, 1.0]) > np.cos(np.radians(12))  # looks ahead, ±10° of yaw
        up = -np.mean([C[:3, 1] for C in cameras], axis=0)
        assert abs(T[:3, 0] @ up) < 1e-6  # level: no roll in the scene's up


def test_flythrough_of_a_static_camera_looks_around():
    from correspondence.flythrough import trajectory_camera_path

    cameras = [cv.make_pose(np.eye(3), np.zeros(3)) for _ in range(5)]
    path = trajectory_camera_path(cameras, 9, scene_depth=2.0)
    assert all(np.allclose(T[:3, 3], 0) for T in path)
    headings = [np.degrees(np.arctan2(T[0, 2], T[2, 2])) for T in path]
    assert np.ptp(np.unwrap(np.radians(headings))) > np.radians(300)


@pytest.mark.parametrize("features", [[], ["--mask-features"]])
def test_camera_attached_rig_is_masked_and_the_walk_registers(tmp_path, features):
    """synth (a box fixed to the camera) -> ingest (detects the rig) -> reconstruct (drops its stationary
    matches, or with --mask-features its features); the output views carry the mask either way."""
    from correspondence.synthetic_source import SyntheticFrameSource
    from ingest.dataset import Dataset
    from ingest.synth import CameraPathConfig, SynthConfig, generate

    world = generate(tmp_path / "world", SynthConfig(seconds=5.0, fps=2.0, width=512, seed=4, rig_box=True,
                                                     path=CameraPathConfig(heading="motion")), progress=False)
    assert main(["ingest", str(world.video_path), "--out", str(tmp_path / "ds"), "--fps", "2",
                 "--equirect-width", "512", "--view-size", "64"]) == 0
    dataset = Dataset(tmp_path / "ds")
    video = dataset.video_ids()[0]
    detected, exact = dataset.rig_mask(video), SyntheticFrameSource(world, height=256).rig_mask(video)
    assert detected is not None and (detected & exact).sum() / (detected | exact).sum() > 0.6
    assert main(["reconstruct", str(tmp_path / "ds"), "--video", video, "--out", str(tmp_path / "rec"), *features]) == 0
    report = json.loads((tmp_path / "rec" / "report.json").read_text())
    assert report["rig_mask_fraction"] > 0.02
    assert all(frame["mask_path"] for frame in json.loads((tmp_path / "rec" / "transforms.json").read_text())["frames"])
    assert report["registered"] == report["frames"] == len(dataset.frames(video))


def test_reconstruct_poses_one_shot_never_across_a_cut(tmp_path):
    from correspondence.reconstruct import select_shot
    from ingest.synth import SynthConfig, generate

    world = generate(tmp_path / "world", SynthConfig(seconds=6.0, fps=2.0, width=512, seed=2, cut_at=4.0), progress=False)
    source = SyntheticFrameSource(world, height=256)
    shots = source.shots(source.video_id)
    assert [len(s) for s in shots] == [8, 4]
    assert [f.frame_id for f in select_shot(source, source.video_id, 1)[1]] == shots[1]
    with pytest.raises(OdinError, match="2 shot"):
        select_shot(source, source.video_id, 2)
    config = ReconstructConfig(views=ViewsConfig(rings=((2, 0.0),), size=48))
    result = reconstruct_video(source, source.video_id, tmp_path / "rec", config, log=lambda *a: None)
    assert result.shot == 0 and result.frames == 8 and set(result.c2w) <= set(shots[0])
    assert result.registered >= 7


def test_a_pose_off_the_path_is_flagged():
    from types import SimpleNamespace

    from correspondence.sfm_report import off_path

    frames = [SimpleNamespace(frame_id=str(k), time=0.25 * k) for k in range(10)]
    c2w = {k: cv.make_pose(np.eye(3), np.array([float(k), 0.0, 0.0])) for k in range(10)}
    assert off_path(frames, c2w) == set()
    c2w[6] = cv.make_pose(np.eye(3), np.array([50.0, 0.0, 0.0]))
    assert 6 in off_path(frames, c2w) and not off_path(frames, c2w) & {1, 2, 3, 4, 5}


def test_a_camera_that_only_turns_registers_nothing(walking_world, tmp_path):
    """A static camera: every frame is the first one turned about the vertical. The global mapper poses
    such frames from rotations alone; with no triangulated points behind them they must not count."""
    class TurningOnTheSpot(SyntheticFrameSource):
        def load_equirect(self, frame_id):
            first = super().load_equirect(f"{self.video_id}/000000")
            return np.roll(first, self.frame_index(frame_id) * first.shape[1] // 24, axis=1)

    source = TurningOnTheSpot(walking_world, height=256)
    with pytest.raises(OdinError) as e:
        reconstruct_video(source, source.video_id, tmp_path, ReconstructConfig(), log=lambda *a: None)
    assert "did the camera move?" in str(e.value)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["registered"] == 0


def test_a_static_shot_is_refused_by_mining_evidence(tmp_path):
    """Mining's verdicts on the real clips (4 fps): static waterfall and geyser refused; the dragster,
    stationary only at its start, and the moving car and drone are posed."""
    from correspondence.reconstruct import refuse_static_shot

    for still in ({"low_parallax": 228}, {"low_parallax": 60}):
        with pytest.raises(OdinError, match="barely moves"):
            refuse_static_shot(still, "v", 0, tmp_path)
    for moving in ({"low_parallax": 184, "accepted": 26}, {"low_parallax": 1, "accepted": 15},
                   {"low_parallax": 65, "accepted": 280}, {}, {"low_parallax": 3}):
        refuse_static_shot(moving, "v", 0, tmp_path)
