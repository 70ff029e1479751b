"""Perspective views: fast remap vs the reference, and geometry against the synthetic world's ground truth."""
from __future__ import annotations

import numpy as np
import pytest

from ingest import conventions as cv
from ingest.errors import OdinError
from ingest.synth import render_equirect, render_perspective
from ingest.views import (ViewSpec, ViewsConfig, equirect_to_perspective_map, extract_view_reference,
                          extract_views)


def test_views_config_parse_and_grid():
    grid = ViewsConfig.parse("8@0,4@30,2@-45", fov_deg=70, size=64)
    specs = grid.specs()
    assert len(specs) == 14
    assert [s.yaw_deg for s in specs[:8]] == [0, 45, 90, 135, -180, -135, -90, -45]
    assert {s.pitch_deg for s in specs[8:12]} == {30.0} and specs[-1].pitch_deg == -45.0
    assert specs[0].intrinsics.fov_x_deg == pytest.approx(70)
    assert ViewsConfig.parse("0").specs() == []
    with pytest.raises(OdinError, match="cannot parse"):
        ViewsConfig.parse("eight")
    with pytest.raises(OdinError, match="pitch"):
        ViewsConfig.parse("4@120")


def test_default_is_the_papers_crops():
    specs = ViewsConfig().specs()
    assert len(specs) == 8 and all(s.size == 512 and s.fov_deg == 90 and s.pitch_deg == 0 for s in specs)


@pytest.mark.parametrize("spec", [ViewSpec(0, 0, 90, 48), ViewSpec(-180, 10, 90, 48), ViewSpec(135, -60, 75, 40),
                                  ViewSpec(30, 88, 100, 40)])
def test_fast_matches_reference(spec):
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (16, 32, 3), dtype=np.uint8)
    equirect = np.ascontiguousarray(np.repeat(np.repeat(base, 4, 0), 4, 1))  # 64x128, smooth enough to compare
    fast = extract_views(equirect, [spec])[0]
    ref = extract_view_reference(equirect, spec)
    diff = np.abs(fast.astype(int) - ref.astype(int))
    # OpenCV interpolates with 5-bit fixed-point weights: a few levels of difference at most.
    assert diff.max() <= 8 and diff.mean() < 1.0


def test_map_sends_a_gt_point_to_its_equirect_pixel(tiny_world):
    """A 3D point seen by a view lands, through the map, where the equirect frame sees it."""
    i = 7
    c2w = tiny_world.poses[i]
    depth, _ = tiny_world.ground_truth(i)
    h, w = depth.shape
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(h // 4, 3 * h // 4, 50), rng.integers(0, w, 50)
    dirs = cv.equirect_directions(h, w)[rows, cols]
    points_world = cv.transform_points(c2w, dirs * depth[rows, cols, None])
    for spec in ViewsConfig(rings=((8, 0.0), (4, 40.0)), size=64).specs():
        view_c2w = c2w @ cv.make_pose(spec.R_frame_from_view, np.zeros(3))
        u, v, z = cv.project_perspective(cv.transform_points(cv.invert_pose(view_c2w), points_world), spec.intrinsics)
        inside = (z > 0) & (u >= 0.5) & (u < 63.5) & (v >= 0.5) & (v < 63.5)
        for k in np.flatnonzero(inside):
            # Evaluate the map at the exact continuous pixel (it is a closed form, not a table lookup).
            K = spec.intrinsics
            K_at = cv.Intrinsics(K.fx, K.fy, K.cx - (u[k] - 0.5), K.cy - (v[k] - 0.5), 1, 1)
            mu, mv = equirect_to_perspective_map(h, w, K_at, spec.R_frame_from_view)
            du = (mu[0, 0] - (cols[k] + 0.5) + w / 2) % w - w / 2
            assert abs(du) < 1e-6 and abs(mv[0, 0] - (rows[k] + 0.5)) < 1e-6


def test_views_match_a_perspective_render(tiny_world):
    """extract_views of a lossless equirect render ~ a direct pinhole render of the same camera."""
    i = 4
    c2w, t = tiny_world.poses[i], float(tiny_world.times[i])
    equirect = render_equirect(tiny_world.scene, c2w, 256, 512, t).rgb
    specs = [ViewSpec(yaw, pitch, 90, 64) for yaw, pitch in [(0, 0), (-135, 0), (90, 30), (180, -30)]]
    for spec, view in zip(specs, extract_views(equirect, specs)):
        view_c2w = c2w @ cv.make_pose(spec.R_frame_from_view, np.zeros(3))
        gt = render_perspective(tiny_world.scene, view_c2w, spec.intrinsics, t).rgb
        err = np.abs(view.astype(int) - gt.astype(int)).mean()
        # The room's textures are fine-grained, so resampling alone leaves a few levels of error ...
        assert err < 8.0, (spec, err)

        def err_of(other):
            return np.abs(extract_views(equirect, [other])[0].astype(int) - gt.astype(int)).mean()

        # ... but a view turned by only 5 degrees, or with the pitch sign flipped, is clearly worse.
        assert err_of(ViewSpec(spec.yaw_deg + 5, spec.pitch_deg, 90, 64)) > 1.3 * err
        assert err_of(ViewSpec(spec.yaw_deg + 90, -spec.pitch_deg, 90, 64)) > 2 * err


def test_maps_are_cached():
    from ingest.views import _remap_tables

    spec = ViewSpec(10, 5, 90, 16)
    a = _remap_tables(32, 64, spec)
    assert _remap_tables(32, 64, spec) is a


def test_one_remap_for_many_views_equals_one_per_view():
    """The stacked single-call path gives exactly the per-view result, in order, sizes mixed."""
    rng = np.random.default_rng(2)
    equirect = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    specs = ViewsConfig(rings=((4, 0.0), (2, 45.0)), size=24).specs()
    specs.insert(2, ViewSpec(10, -20, 70, 16))  # a different size in the middle: its own call
    views = extract_views(equirect, specs)
    assert [v.shape for v in views] == [(s.size, s.size, 3) for s in specs]
    for spec, view in zip(specs, views):
        assert view.flags.c_contiguous
        np.testing.assert_array_equal(view, extract_views(equirect, [spec])[0])
    gray = extract_views(equirect[..., 0].copy(), specs)
    np.testing.assert_array_equal(gray[0], views[0][..., 0])
    assert extract_views(equirect, []) == []


def test_fixed_point_tables_agree_with_float_maps():
    """The fixed-point tables (5-bit weights) stay within a few levels of OpenCV's float-map remap."""
    import cv2

    rng = np.random.default_rng(3)
    equirect = cv2.GaussianBlur(rng.integers(0, 256, (128, 256, 3), dtype=np.uint8), (0, 0), 1.5)
    for spec in ViewsConfig(rings=((8, 0.0), (3, 60.0)), size=48).specs():
        u, v = equirect_to_perspective_map(128, 256, spec.intrinsics, spec.R_frame_from_view)
        ref = cv2.remap(equirect, (u - 0.5).astype(np.float32), np.clip(v - 0.5, 0, 127).astype(np.float32),
                        cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        diff = np.abs(extract_views(equirect, [spec])[0].astype(int) - ref.astype(int))
        assert diff.max() <= 4 and diff.mean() < 0.5, (spec, diff.max(), diff.mean())
