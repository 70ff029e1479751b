"""Two-view relative pose on 360° frames: solvers, matching, acceptance tests, scale, motion."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from correspondence import essential as es
from correspondence.features import CUBE_FACES, FeatureConfig, bearings_from_face_pixels, extract_features, face_specs, nearest_face
from correspondence.matching import mutual_ratio_matches, mutual_ratio_matches_reference
from correspondence.twoview import TwoViewConfig, two_view_from_features
from correspondence.views import choose_views, motion_mask
from ingest import conventions as cv
from ingest.synth import make_scene, render_equirect, render_perspective
from ingest.views import ViewsConfig

H = 256  # equirect height of the rendered test frames (512 x 256)


def direction_error_deg(a, b) -> float:
    return float(np.degrees(np.arccos(np.clip(cv.normalize(a) @ cv.normalize(b), -1, 1))))


def synthetic_bearings(n=600, outliers=0.3, noise_deg=0.03, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)) * 3  # points all around the camera, as in a 360° frame
    R = cv.rotation_from_ypr(np.float64(0.4), np.float64(-0.1), np.float64(0.05))
    t = np.array([0.3, -0.05, 0.2])
    b_src = cv.normalize(X)
    b_tgt = cv.normalize(cv.normalize(X @ R.T + t) + rng.normal(size=(n, 3)) * np.radians(noise_deg))
    k = int(outliers * n)
    b_tgt[:k] = cv.normalize(rng.normal(size=(k, 3)))
    return b_src, b_tgt, R, t


def test_eight_point_and_angular_error_exact():
    b_src, b_tgt, R, t = synthetic_bearings(n=50, outliers=0, noise_deg=0)
    E = es.eight_point(b_src, b_tgt)
    assert np.degrees(es.angular_errors(E, b_src, b_tgt)).max() < 1e-6
    R_est, t_est = es.decompose_essential(E, b_src, b_tgt)
    assert cv.rotation_angle_deg(R_est, R) < 1e-6 and direction_error_deg(t_est, t) < 1e-6
    s1, s2 = es.triangulate_depths(R, cv.normalize(t), b_src, b_tgt)
    assert np.all(s1 > 0) and np.all(s2 > 0)
    # A target bearing turned 1° off its epipolar plane: the error is at least that 1° (the
    # source side may be worse), and swapping the views with E^T gives the same error.
    n = cv.normalize(E @ b_src[0])
    off = cv.normalize(b_tgt[0] + np.tan(np.radians(1.0)) * n)
    err = np.degrees(es.angular_errors(E, b_src[:1], off[None]))[0]
    assert 1.0 - 1e-6 < err < 1.5
    assert np.isclose(err, np.degrees(es.angular_errors(E.T, off[None], b_src[:1]))[0])


@pytest.mark.parametrize("estimator", ["reference", "pycolmap"])
def test_robust_estimators_recover_pose_with_outliers(estimator):
    b_src, b_tgt, R, t = synthetic_bearings()
    pose = es.estimate_relative_pose(b_src, b_tgt, es.RansacConfig(threshold_deg=0.15), estimator=estimator)
    assert cv.rotation_angle_deg(pose.R, R) < 0.05
    assert direction_error_deg(pose.t, t) < 0.5
    truth = np.arange(len(b_src)) >= 180
    assert (pose.inliers == truth).mean() > 0.97


def test_reference_and_pycolmap_estimators_agree():
    b_src, b_tgt, _, _ = synthetic_bearings(seed=5)
    a = es.estimate_relative_pose(b_src, b_tgt, estimator="reference")
    b = es.estimate_relative_pose(b_src, b_tgt, estimator="pycolmap")
    assert cv.rotation_angle_deg(a.R, b.R) < 0.02 and direction_error_deg(a.t, b.t) < 0.2
    assert (a.inliers == b.inliers).mean() > 0.98


def test_fast_matcher_equals_reference():
    rng = np.random.default_rng(1)
    a = rng.random((300, 128)).astype(np.float32)
    b = np.concatenate([a[:150] + rng.normal(0, 0.02, (150, 128)), rng.random((200, 128))]).astype(np.float32)
    fast, ratio_fast = mutual_ratio_matches(a, b, 0.8)
    ref, ratio_ref = mutual_ratio_matches_reference(a, b, 0.8)
    assert np.array_equal(fast, ref) and np.allclose(ratio_fast, ratio_ref, atol=1e-4)
    assert len(fast) >= 140 and np.all(fast[:, 0] == fast[:, 1])


def test_face_keypoints_lift_to_the_conventions_bearing():
    specs = face_specs(512, FeatureConfig())
    for spec in specs:
        K, R = spec.intrinsics, spec.R_frame_from_view
        centre = bearings_from_face_pixels(np.array([[K.cx - 0.5, K.cy - 0.5]]), K, R)[0]
        assert np.allclose(centre, R[:, 2])
    assert np.array_equal(nearest_face(np.stack([s.R_frame_from_view[:, 2] for s in specs])), np.arange(len(CUBE_FACES)))
    # Pitch +90 looks up: -y in the OpenCV convention.
    assert np.allclose(specs[4].R_frame_from_view[:, 2], [0, -1, 0], atol=1e-12)


# --------------------------------------------------------------------------- rendered frames
@pytest.fixture(scope="module")
def frames():
    scene = make_scene(seed=1, n_objects=6, moving_object=True)
    # A large, textured sphere near the camera that moves between the two exposures.
    moving = dataclasses.replace(scene.objects[-1], center=(0.3, scene.floor_y - 1.0, -1.8), size=(1.0,),
                                 motion_amplitude=0.6, motion_period=4.0, texture="astronaut", texels_per_meter=200)
    scene.objects[-1] = moving
    c2w = {
        "src": cv.make_pose(cv.rotation_from_ypr(np.float64(0.2), np.float64(0.02), np.float64(0.01)), np.array([0.5, 0, 0.2])),
        "moved": cv.make_pose(cv.rotation_from_ypr(np.float64(0.6), np.float64(-0.03), np.float64(0.02)), np.array([0.8, 0.02, 0.5])),
        "turned": cv.make_pose(cv.rotation_from_ypr(np.float64(0.9), np.float64(-0.03), np.float64(0.02)), np.array([0.5, 0, 0.2])),
    }
    times = {"src": 0.0, "moved": 1.0, "turned": 0.0}
    renders = {k: render_equirect(scene, c2w[k], H, time=times[k]) for k in c2w}
    feats = {k: extract_features(r.rgb) for k, r in renders.items()}
    return dict(scene=scene, c2w=c2w, times=times, renders=renders, feats=feats, moving_id=moving.id)


def test_translated_pair_recovers_ground_truth(frames):
    result = two_view_from_features(frames["feats"]["src"], frames["feats"]["moved"])
    T = cv.relative_pose(frames["c2w"]["src"], frames["c2w"]["moved"])
    assert result.accepted, result.status
    assert cv.rotation_angle_deg(result.R, T[:3, :3]) < 0.5
    assert direction_error_deg(result.t_unit, T[:3, 3]) < 3.0
    # Scale: |t| * scale is the median depth of the inliers, which the renderer knows exactly.
    u, v = cv.equirect_pixel_from_direction(result.b_src[result.inliers], 2 * H, H)
    gt_depth = np.median(frames["renders"]["src"].depth[v.astype(int), u.astype(int)])
    assert abs(result.scale * np.linalg.norm(T[:3, 3]) / gt_depth - 1) < 0.05
    assert np.allclose(result.pose()[:3, 3] * result.scale, result.t_unit)


def test_reference_estimator_on_rendered_pair(frames):
    config = TwoViewConfig(estimator="reference")
    result = two_view_from_features(frames["feats"]["src"], frames["feats"]["moved"], config)
    T = cv.relative_pose(frames["c2w"]["src"], frames["c2w"]["moved"])
    assert result.accepted and cv.rotation_angle_deg(result.R, T[:3, :3]) < 0.5
    assert direction_error_deg(result.t_unit, T[:3, 3]) < 3.0


def test_pure_rotation_is_rejected_for_parallax(frames):
    result = two_view_from_features(frames["feats"]["src"], frames["feats"]["turned"])
    assert result.status == "low_parallax"
    assert result.n_inliers > 100  # plenty of matches: it is the geometry that is refused
    T = cv.relative_pose(frames["c2w"]["src"], frames["c2w"]["turned"])
    assert cv.rotation_angle_deg(result.R, T[:3, :3]) < 0.5  # the rotation itself is still right


def test_moving_object_is_masked(frames):
    result = two_view_from_features(frames["feats"]["src"], frames["feats"]["moved"])
    u, v = cv.equirect_pixel_from_direction(result.b_tgt[result.moving], 2 * H, H)
    ids = frames["renders"]["moved"].ids[v.astype(int), u.astype(int)]
    assert len(ids) >= 5 and np.mean(ids == frames["moving_id"]) > 0.9
    # Rasterised over the target view that looks at the object, the mask lies on the object.
    T = cv.relative_pose(frames["c2w"]["src"], frames["c2w"]["moved"])
    grid = ViewsConfig(size=96).specs()
    inl = result.inliers
    choice = choose_views(result.b_src[inl], result.b_tgt[inl], T, grid, grid)
    on_object = [s for s in grid if (s.R_frame_from_view[:, 2] @ result.b_tgt[result.moving].T).mean() > 0.8]
    spec = on_object[0]
    mask = motion_mask(result.b_tgt[result.moving], spec, TwoViewConfig().motion_radius_deg / 2)
    c2w_view = frames["c2w"]["moved"] @ cv.make_pose(spec.R_frame_from_view, np.zeros(3))
    gt_ids = render_perspective(frames["scene"], c2w_view, spec.intrinsics, frames["times"]["moved"]).ids
    on = gt_ids == frames["moving_id"]
    assert mask.sum() > 0 and (mask.astype(bool) & on).sum() / mask.sum() > 0.7
    assert choice is not None
    # A static pair (same time stamps) has no moving matches at all.
    still = two_view_from_features(frames["feats"]["src"], frames["feats"]["turned"])
    assert still.moving.sum() == 0


def test_view_choice_pose_matches_ground_truth(frames):
    result = two_view_from_features(frames["feats"]["src"], frames["feats"]["moved"])
    T = cv.relative_pose(frames["c2w"]["src"], frames["c2w"]["moved"])
    grid = ViewsConfig(size=64).specs()
    inl = result.inliers
    counts = []
    for refine in (False, True):
        choice = choose_views(result.b_src[inl], result.b_tgt[inl], result.pose(), grid, grid, refine=refine)
        c2w_s = frames["c2w"]["src"] @ cv.make_pose(choice.src.R_frame_from_view, np.zeros(3))
        c2w_t = frames["c2w"]["moved"] @ cv.make_pose(choice.tgt.R_frame_from_view, np.zeros(3))
        T_views = cv.relative_pose(c2w_s, c2w_t)
        assert cv.rotation_angle_deg(choice.T[:3, :3], T_views[:3, :3]) < 0.5
        assert direction_error_deg(choice.T[:3, 3], T_views[:3, 3]) < 3.0
        assert choice.covisible >= 10 and 0 < choice.overlap <= 1
        counts.append(choice.covisible)
    assert counts[1] >= counts[0]  # re-aiming never loses co-visible inliers
    # Grid choice is the best pair of grid views: no other pair sees more co-visible inliers.
    best = choose_views(result.b_src[inl], result.b_tgt[inl], T, grid, grid)
    from correspondence.views import in_view
    every = [(in_view(result.b_src[inl], a) & in_view(result.b_tgt[inl], b)).sum() for a in grid for b in grid]
    assert best.covisible == max(every)
