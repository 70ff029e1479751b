"""The synthetic world's ground truth is exact, its video plays, and `odin synth` behaves."""
import json
import math

import numpy as np
import pytest

from ingest import conventions as cv
from ingest.cli import main
from ingest.synth import (CameraPathConfig, SynthConfig, SyntheticWorld, camera_to_world, cast_rays, generate,
                          make_scene, object_mesh, render_equirect, render_perspective)


def surface_distance(scene, prim_id, points, time):
    """Analytic distance of points to the surface of object ``prim_id`` (0 = room)."""
    if prim_id == 0:
        lo, hi = map(np.asarray, scene.bounds)
        return np.minimum(points - lo, hi - points).min(axis=1)
    prim = next(o for o in scene.objects if o.id == prim_id)
    q = points - prim.center_at(time)
    if prim.kind == "sphere":
        return np.abs(np.linalg.norm(q, axis=1) - prim.size[0])
    if prim.kind == "box":
        R = cv.rotation_from_ypr(np.float64(prim.yaw), np.float64(0), np.float64(0))
        ql = np.abs(q @ R) - np.asarray(prim.size)
        outside = np.linalg.norm(np.maximum(ql, 0), axis=1)
        return np.abs(outside + np.minimum(ql.max(axis=1), 0))
    r, hh = prim.size
    dr, dy = np.hypot(q[:, 0], q[:, 2]) - r, np.abs(q[:, 1]) - hh
    outside = np.hypot(np.maximum(dr, 0), np.maximum(dy, 0))
    return np.abs(outside + np.minimum(np.maximum(dr, dy), 0))


def test_depth_back_projects_onto_analytic_surfaces(tiny_world):
    scene = tiny_world.scene
    for index in (0, 7, len(tiny_world) - 1):
        depth, ids = tiny_world.ground_truth(index)
        t = float(tiny_world.times[index])
        dirs = cv.equirect_directions(*depth.shape)
        origins, world_dirs = cv.rays_world(tiny_world.poses[index], dirs.reshape(-1, 3))
        points = origins + world_dirs * depth.reshape(-1, 1).astype(np.float64)
        err = np.zeros(len(points))
        for k in np.unique(ids):
            sel = ids.reshape(-1) == k
            err[sel] = surface_distance(scene, int(k), points[sel], t)
        assert err.max() < 1e-3 * scene.extent, f"frame {index}: max surface error {err.max()}"
        assert set(np.unique(ids)) > {0}  # objects are visible, not only the room


def test_a_point_seen_in_two_frames_has_the_same_colour(tiny_world):
    scene = tiny_world.scene
    static = [o.id for o in scene.objects if not o.moving] + [0]
    a, b = 2, 6
    ra = tiny_world.render(a)
    depth_b, _ = tiny_world.ground_truth(b)
    dirs = cv.equirect_directions(*ra.depth.shape).reshape(-1, 3)
    origins, world_dirs = cv.rays_world(tiny_world.poses[a], dirs)
    points = origins + world_dirs * ra.depth.reshape(-1, 1).astype(np.float64)
    keep = np.isin(ra.ids.reshape(-1), static)
    center_b = tiny_world.poses[b][:3, 3]
    to_point = points - center_b
    hits_b = cast_rays(scene, center_b, to_point, float(tiny_world.times[b]))
    visible = keep & (np.abs(hits_b.depth - np.linalg.norm(to_point, axis=1)) < 1e-6 * scene.extent)
    assert visible.mean() > 0.5
    colour_a = ra.rgb.reshape(-1, 3)[visible].astype(float)
    colour_b = np.round(hits_b.rgb[visible] * 255)
    assert np.abs(colour_a - colour_b).max() <= 1.0  # same surface point, same colour (up to rounding)
    # And through frame b's actual pixels: the projected position's colour agrees on average.
    u, v = cv.equirect_pixel_from_direction(to_point[visible] @ tiny_world.poses[b][:3, :3], 256, 128)
    rb = tiny_world.render(b).rgb
    sampled = rb[np.clip(v.astype(int), 0, 127), u.astype(int) % 256].astype(float)
    assert np.median(np.abs(sampled - colour_a)) < 12


def test_video_plays_with_expected_frames(tiny_world):
    import av

    with av.open(str(tiny_world.video_path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == len(tiny_world) == 20
    assert frames[0].shape == (128, 256, 3)
    lossless = tiny_world.render(5).rgb.astype(float)
    assert np.abs(frames[5].astype(float) - lossless).mean() < 8  # the video shows the GT frames


def test_outputs_and_meshes(tiny_world):
    import trimesh

    meta = json.loads((tiny_world.root / "scene.json").read_text())
    assert len(meta["scene"]["objects"]) >= 6 and meta["scene"]["extent"] > 0
    assert any(o["motion_amplitude"] for o in meta["scene"]["objects"])
    for prim in tiny_world.scene.objects:
        mesh = trimesh.load(tiny_world.root / "meshes" / f"object_{prim.id:02d}.ply")
        assert mesh.is_watertight
        # Mesh vertices lie on the analytic surface (spheres/cylinders are tessellated: chords are inside).
        err = surface_distance(tiny_world.scene, prim.id, np.asarray(mesh.vertices), 0.0)
        assert err.max() < 1e-6
    np.testing.assert_allclose(tiny_world.pose_at(float(tiny_world.times[3])), tiny_world.poses[3], atol=1e-12)


def test_moving_object_moves(tiny_world):
    mover = next(o for o in tiny_world.scene.objects if o.moving)
    assert np.linalg.norm(mover.center_at(0.0) - mover.center_at(0.75)) > 0.5


def test_camera_path_translates_and_rotates():
    cfg = CameraPathConfig()
    a, b = camera_to_world(0.0, cfg, 1), camera_to_world(2.0, cfg, 1)
    assert np.linalg.norm(a[:3, 3] - b[:3, 3]) > 0.5
    assert cv.rotation_angle_deg(a[:3, :3], b[:3, :3]) > 10
    assert cv.is_rotation(b[:3, :3], atol=1e-12)


def test_generation_is_deterministic_and_resumable(tmp_path):
    cfg = SynthConfig(seconds=0.4, fps=5, width=64, seed=11)
    w1 = generate(tmp_path / "a", cfg, progress=False)
    w2 = generate(tmp_path / "b", cfg, progress=False)
    np.testing.assert_array_equal(w1.poses, w2.poses)
    np.testing.assert_array_equal(w1.ground_truth(1)[0], w2.ground_truth(1)[0])
    assert (tmp_path / "a" / "cameras.json").read_bytes() == (tmp_path / "b" / "cameras.json").read_bytes()
    mtime = (tmp_path / "a" / "video.mp4").stat().st_mtime_ns
    generate(tmp_path / "a", cfg, progress=False)  # same config again: nothing is redone
    assert (tmp_path / "a" / "video.mp4").stat().st_mtime_ns == mtime
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_perspective_render_matches_equirect():
    scene = make_scene(5, 6)
    c2w = camera_to_world(1.0, CameraPathConfig(), 5)
    K = cv.Intrinsics.from_fov(32, 32, 60.0)
    persp = render_perspective(scene, c2w, K)
    eq = render_equirect(scene, c2w, 512)
    # The centre pixel of the view looks along the camera's +z: the equirect image centre.
    np.testing.assert_allclose(persp.depth[16, 16] / np.linalg.norm([0.5 / K.fx, 0.5 / K.fy, 1]),
                               eq.depth[255:257, 511:513].mean(), rtol=0.02)


def test_cli_synth_and_bad_flags(tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["synth", "--out", str(out), "--seconds", "0.4", "--fps", "5", "--width", "64"]) == 0
    assert SyntheticWorld(out).poses.shape == (2, 4, 4)
    assert main(["synth", "--out", str(out), "--width", "66"]) == 2
    assert "--width: must be a multiple of 4" in capsys.readouterr().err
    assert main(["synth", "--out", str(out), "--seconds", "1", "--fps", "5", "--width", "64"]) == 2
    assert "different synthetic world" in capsys.readouterr().err
    with pytest.raises(Exception, match="not a synthetic world"):
        SyntheticWorld(tmp_path)


def test_too_many_objects_is_a_clear_error():
    with pytest.raises(ValueError, match="n_objects"):
        make_scene(0, 50)
    assert math.isfinite(make_scene(0, 0).extent)


def test_coloured_types_are_their_colour_in_grey_rooms(tmp_path, capsys):
    """`odin synth --types M --coloured-types`: every pixel of a type has its own colour's hue (the
    largest channel of the type's colour is the largest of its pixels') and the room is grey, in
    the saved world as rendered again; the plain family keeps the photographs' colours."""
    from ingest.synth.family import TYPE_COLOURS

    out = tmp_path / "fam"
    assert main(["synth", "--out", str(out), "--types", "3", "--objects", "3", "--rooms", "1", "--coloured-types",
                 "--seconds", "0.2", "--fps", "5", "--width", "256"]) == 0
    world = SyntheticWorld(out / "room_0")
    assert [o.tint for o in world.scene.objects] == [TYPE_COLOURS[o.id - 1] for o in world.scene.objects]
    frame = world.render(0)
    rgb = frame.rgb.astype(np.float64)
    room = rgb[frame.ids == 0]
    assert np.percentile(room.max(1) - room.min(1), 95) <= 3  # grey: channels within rounding
    for obj in world.scene.objects:
        pixels = rgb[frame.ids == obj.id]
        assert len(pixels) > 20
        assert np.mean(pixels.argmax(1) == int(np.argmax(obj.tint))) > 0.9, obj
    assert main(["synth", "--out", str(tmp_path / "bad"), "--types", "7", "--objects", "2", "--coloured-types"]) == 2
    assert "--coloured-types: needs a family of at most 6 types" in capsys.readouterr().err
    plain = SynthConfig(seconds=0.2, fps=5, width=64, n_types=3, n_objects=2).scenes()[0]
    assert plain.room_tint is None and all(o.tint is None for o in plain.objects)
