"""Round trips and axis facts of ingest.conventions (numpy and torch)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest import conventions as cv

angles = st.floats(-math.pi, math.pi, allow_nan=False)
unit = st.floats(-1, 1, allow_nan=False)
vec3 = st.tuples(unit, unit, unit).filter(lambda v: np.linalg.norm(v) > 1e-3)


def random_rotation(seed):
    q = np.random.default_rng(seed).normal(size=4)
    return cv.rotation_from_quaternion(q)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31))
def test_quaternion_round_trip(seed):
    R = random_rotation(seed)
    assert cv.is_rotation(R)
    np.testing.assert_allclose(cv.rotation_from_quaternion(cv.quaternion_from_rotation(R)), R, atol=1e-10)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31))
def test_axis_angle_and_6d_round_trip(seed):
    R = random_rotation(seed)
    np.testing.assert_allclose(cv.rotation_from_axis_angle(cv.axis_angle_from_rotation(R)), R, atol=1e-9)
    np.testing.assert_allclose(cv.rotation_from_6d(cv.rotation_6d_from_rotation(R)), R, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(angles, st.floats(-1.5, 1.5), angles)
def test_ypr_round_trip(yaw, pitch, roll):
    R = cv.rotation_from_ypr(np.float64(yaw), np.float64(pitch), np.float64(roll))
    y2, p2, r2 = cv.ypr_from_rotation(R)
    np.testing.assert_allclose(cv.rotation_from_ypr(y2, p2, r2), R, atol=1e-9)
    assert abs(p2 - pitch) < 1e-9


def test_ypr_directions():
    fwd = np.array([0.0, 0, 1])
    right = cv.rotation_from_ypr(np.float64(math.pi / 2), np.float64(0), np.float64(0)) @ fwd
    up = cv.rotation_from_ypr(np.float64(0), np.float64(math.pi / 2), np.float64(0)) @ fwd
    np.testing.assert_allclose(right, [1, 0, 0], atol=1e-12)  # positive yaw turns right (+x)
    np.testing.assert_allclose(up, [0, -1, 0], atol=1e-12)  # positive pitch looks up (-y)


@settings(max_examples=60, deadline=None)
@given(vec3)
def test_lonlat_direction_round_trip(v):
    d = cv.normalize(np.asarray(v, np.float64))
    lon, lat = cv.lonlat_from_direction(d)
    np.testing.assert_allclose(cv.direction_from_lonlat(lon, lat), d, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.floats(0, 255.999), st.floats(0.001, 127.999))
def test_equirect_pixel_round_trip(u, v):
    lon, lat = cv.lonlat_from_equirect_pixel(np.float64(u), np.float64(v), 256, 128)
    u2, v2 = cv.equirect_pixel_from_direction(cv.direction_from_lonlat(lon, lat), 256, 128)
    assert abs((u2 - u + 128) % 256 - 128) < 1e-7 and abs(v2 - v) < 1e-7


def test_equirect_layout():
    d = cv.equirect_directions(4, 8)
    assert d.shape == (4, 8, 3)
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1)
    # The image centre looks forward, the top row up (-y), u grows to the right (+x).
    u, v = cv.equirect_pixel_from_direction(np.array([0.0, 0, 1]), 8, 4)
    assert (u, v) == (4.0, 2.0)
    assert d[0, :, 1].max() < 0 and d[-1, :, 1].min() > 0
    u_right, _ = cv.equirect_pixel_from_direction(np.array([1.0, 0, 0]), 8, 4)
    assert u_right == 6.0


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31))
def test_pose_inverse_and_relative(seed):
    rng = np.random.default_rng(seed)
    a = cv.make_pose(random_rotation(seed), rng.normal(size=3))
    b = cv.make_pose(random_rotation(seed + 1), rng.normal(size=3))
    np.testing.assert_allclose(cv.invert_pose(a) @ a, np.eye(4), atol=1e-12)
    T = cv.relative_pose(a, b)
    X_a = rng.normal(size=(5, 3))  # points in camera a
    X_w = cv.transform_points(a, X_a)
    np.testing.assert_allclose(cv.transform_points(T, X_a), cv.transform_points(cv.invert_pose(b), X_w), atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31))
def test_opengl_round_trip_and_axes(seed):
    c2w = cv.make_pose(random_rotation(seed), np.arange(3.0))
    gl = cv.opengl_from_opencv_c2w(c2w)
    np.testing.assert_allclose(cv.opencv_from_opengl_c2w(gl), c2w, atol=1e-15)
    # OpenGL cameras look down their -z: the same world direction as our +z.
    np.testing.assert_allclose(-gl[:3, 2], c2w[:3, 2], atol=1e-15)


def test_perspective_projection_round_trip():
    K = cv.Intrinsics.from_fov(64, 48, 90.0)
    assert abs(K.fov_x_deg - 90) < 1e-9 and K.cx == 32 and K.cy == 24
    dirs = cv.perspective_directions(K)
    u, v, z = cv.project_perspective(dirs * 3.0, K)
    vv, uu = np.meshgrid(np.arange(48) + 0.5, np.arange(64) + 0.5, indexing="ij")
    np.testing.assert_allclose(u, uu, atol=1e-12)
    np.testing.assert_allclose(v, vv, atol=1e-12)
    assert np.all(z == 3.0)


def test_torch_matches_numpy():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(10, 4))
    R_np = cv.rotation_from_quaternion(q)
    R_t = cv.rotation_from_quaternion(torch.tensor(q))
    assert isinstance(R_t, torch.Tensor)
    np.testing.assert_allclose(R_t.numpy(), R_np, atol=1e-12)
    np.testing.assert_allclose(cv.quaternion_from_rotation(R_t).numpy(), cv.quaternion_from_rotation(R_np), atol=1e-12)
    np.testing.assert_allclose(cv.axis_angle_from_rotation(R_t).numpy(), cv.axis_angle_from_rotation(R_np), atol=1e-9)
    d = torch.tensor(rng.normal(size=(7, 3)))
    lon, lat = cv.lonlat_from_direction(d)
    np.testing.assert_allclose(lon.numpy(), cv.lonlat_from_direction(d.numpy())[0])
    np.testing.assert_allclose(cv.equirect_directions(4, 8, like=d).numpy(), cv.equirect_directions(4, 8), atol=1e-12)
    T = torch.tensor(cv.make_pose(R_np[0], np.ones(3)))
    np.testing.assert_allclose(cv.invert_pose(T).numpy(), cv.invert_pose(T.numpy()), atol=1e-12)
    o, dd = cv.rays_world(T, d)
    np.testing.assert_allclose(cv.plucker_rays(o, dd).numpy(), cv.plucker_rays(o.numpy(), dd.numpy()), atol=1e-12)


def test_rotation_angle_and_validation():
    R = cv.rotation_from_axis_angle(np.array([0, 0, math.radians(30)]))
    assert abs(cv.rotation_angle_deg(R, np.eye(3)) - 30) < 1e-9
    assert not cv.is_rotation(np.diag([1.0, 1, -1]))
    assert not cv.is_rotation(np.full((3, 3), np.nan))
    noisy = R + 1e-3 * np.random.default_rng(1).normal(size=(3, 3))
    assert cv.is_rotation(cv.project_to_rotation(noisy), atol=1e-9)


@pytest.mark.parametrize("bad", [np.zeros((3, 3)), np.eye(4)])
def test_is_rotation_rejects_non_rotations(bad):
    assert not cv.is_rotation(bad)
