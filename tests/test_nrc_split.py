"""Held-out views are whole capture moments (never a view of a training frame), and scenes are
framed from their sparse points or viewing rays."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ingest import conventions as cv
from ingest.errors import OdinError
from nrc.data import auto_scene_frame, load_scene_data
from nrc.framing import closest_point_to_axes, frame_scene


def _write_360_reconstruction(root, n_frames: int = 10, views_per_frame: int = 8, with_time: bool = True):
    """What `odin reconstruct` writes: 8 perspective views per 360° frame, sharing the frame's
    centre and time."""
    from PIL import Image

    (root / "views").mkdir(parents=True)
    K = cv.Intrinsics.from_fov(8, 8, 90.0)
    frames = []
    for f in range(n_frames):
        c2w_frame = cv.make_pose(cv.rotation_from_ypr(np.float64(0.1 * f), np.float64(0), np.float64(0)),
                                 np.array([0.2 * f, 0.0, 0.05 * f]))
        for v in range(views_per_frame):
            name = f"views/{f:06d}_v{v:02d}.png"
            Image.fromarray(np.full((8, 8, 3), 10 * f + v, np.uint8)).save(root / name)
            R = cv.rotation_from_ypr(np.float64(2 * np.pi * v / views_per_frame), np.float64(0), np.float64(0))
            c2w = c2w_frame @ cv.make_pose(R, np.zeros(3))
            entry = {"file_path": name, "transform_matrix": cv.opengl_from_opencv_c2w(c2w).tolist(),
                     "w": 8, "h": 8, "camera_model": "OPENCV", "fl_x": K.fx, "fl_y": K.fy, "cx": K.cx, "cy": K.cy}
            if with_time:
                entry["time"] = 0.5 * f
            frames.append(entry)
    (root / "transforms.json").write_text(json.dumps({"frames": frames}))
    return root


def _assert_disjoint(train, held):
    assert held and train
    assert {v.frame for v in train}.isdisjoint({v.frame for v in held})
    train_centres = np.stack([v.camera.c2w[:3, 3] for v in train])
    for v in held:
        gap = np.linalg.norm(train_centres - v.camera.c2w[:3, 3], axis=1).min()
        assert gap > 1e-6, f"held-out view {v.name} shares its camera centre with a training view"


@pytest.mark.parametrize("with_time", [True, False])
def test_360_reconstruction_holds_out_every_view_of_every_8th_frame(tmp_path, with_time):
    root = _write_360_reconstruction(tmp_path / "recon", with_time=with_time)
    data = load_scene_data(root)
    train_frames, held_frames = data.split_frames(8)
    assert held_frames == [0, 8] and train_frames == [1, 2, 3, 4, 5, 6, 7, 9]
    train, held = data.split(8)
    assert len(held) == 16 and len(train) == 64  # all 8 views of frames 0 and 8
    _assert_disjoint(train, held)
    if with_time:
        from correspondence.nerfstudio import load_scene

        times = {f.image_path.stem: f.time for f in load_scene(root).frames}
        assert {times[v.name] for v in held}.isdisjoint({times[v.name] for v in train})
    # Loading only one part reads only its images and agrees with the split of everything.
    part = load_scene_data(root, holdout_every=8, part="held_out")
    assert [v.name for v in part.views] == [v.name for v in held]
    assert part.split_frames(8) == (train_frames, held_frames)


def test_llff_holds_out_every_8th_image(shared_data):
    fern = shared_data / "posed" / "fern_llff"
    data = load_scene_data(fern, 32)
    train, held = data.split(8)
    assert [v.name for v in held] == ["image000", "image008", "image016"] and len(train) == 17
    _assert_disjoint(train, held)


def test_synthetic_world_holds_out_whole_frames(tiny_world):
    data = load_scene_data(tiny_world.root, 8, holdout_every=8, part="held_out")
    assert [v.frame for v in data.views] == [0, 8, 16] and data.split_frames(8)[1] == [0, 8, 16]
    train = load_scene_data(tiny_world.root, 8, holdout_every=8, part="train").views
    assert len(train) == len(tiny_world) - 3
    _assert_disjoint(train, data.views)


def test_closest_point_to_axes_finds_the_object_of_an_outside_in_capture():
    rng = np.random.default_rng(0)
    target = np.array([1.0, -2.0, 3.0])
    c2ws = []
    for a in np.linspace(0, 2 * np.pi, 12, endpoint=False):
        eye = target + 4 * np.array([np.cos(a), 0.3 * rng.standard_normal(), np.sin(a)])
        forward = cv.normalize(target - eye + 0.02 * rng.standard_normal(3))
        right = cv.normalize(np.cross(forward, [0.0, 1.0, 0.0]))
        c2ws.append(cv.make_pose(np.stack([right, np.cross(forward, right), forward], 1), eye))
    c2ws = np.stack(c2ws)
    point, smallest = closest_point_to_axes(c2ws[:, :3, 3], c2ws[:, :3, 2])
    assert np.linalg.norm(point - target) < 0.1 and smallest > 0.3
    framing = frame_scene(c2ws, perspective=True)
    assert framing.kind == "outside-in" and np.linalg.norm(framing.center - target) < 0.1
    assert 1.5 < framing.radius < 2.5  # half the camera distance without points
    cloud = target + rng.uniform(-0.5, 0.5, (500, 3))
    assert 0.4 < frame_scene(c2ws, True, points=cloud).radius <= 0.5  # the points' extent


def test_inside_out_takes_its_radius_from_the_sparse_points_and_forward_facing_from_bounds():
    # A 360° tripod: 8 views from one spot, a room of points 5 m around it.
    c2ws = np.stack([cv.make_pose(cv.rotation_from_ypr(np.float64(a), np.float64(0), np.float64(0)), np.zeros(3))
                     for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)])
    rng = np.random.default_rng(1)
    room = rng.uniform(-5, 5, (2000, 3))
    room[np.arange(2000), rng.integers(0, 3, 2000)] = rng.choice([-5.0, 5.0], 2000)  # on the walls
    framing = frame_scene(c2ws, True, points=room)
    assert framing.kind == "inside-out" and np.allclose(framing.center, 0) and framing.radius == pytest.approx(5.0)
    assert frame_scene(c2ws, True).radius == pytest.approx(1e-3)  # no points, no spread: only the floor
    # LLFF-like: parallel axes, depth bounds 2..8: centre at the geometric mean depth (4) ahead.
    row = np.stack([cv.make_pose(np.eye(3), np.array([x, 0.0, 0.0])) for x in np.linspace(-0.5, 0.5, 5)])
    framing = frame_scene(row, True, near_far=(2.0, 8.0))
    assert framing.kind == "forward-facing" and np.allclose(framing.center, [0, 0, 4])
    assert framing.radius == pytest.approx(4 - 0.9 * 2)


def test_scene_center_and_radius_flags_override_the_framing(tmp_path):
    root = _write_360_reconstruction(tmp_path / "recon", n_frames=3)
    data = load_scene_data(root)
    frame = auto_scene_frame(data, radius=2.5, center=(1.0, 2.0, 3.0))
    assert frame.center == [1.0, 2.0, 3.0] and frame.radius == 2.5
    with pytest.raises(OdinError, match="scene radius must be positive"):
        auto_scene_frame(data, radius=-1.0)
    from ingest.cli import main

    assert main(["nrc", "fit", str(root), "--out", str(tmp_path / "run"), "--scene-center", "1,2"]) == 2


def test_cells_no_training_camera_sees_are_never_occupied():
    import torch

    from nrc.data import Camera
    from nrc.sampling import OccupancyGrid, contract, visible_cells

    grid = OccupancyGrid(16)
    camera = Camera.perspective(cv.make_pose(np.eye(3), np.array([0.0, 0.0, -0.5])), cv.Intrinsics.from_fov(32, 32, 60.0))
    seen = visible_cells(grid, [camera], torch.zeros(3), 1.0)
    cells = grid.cell_index(contract(torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, -0.9], [0.9, 0.0, -0.2]])))
    assert seen[cells].tolist() == [True, False, False]  # ahead; behind; far outside the 60 degree frustum
    assert 0.05 < float(seen.float().mean()) < 0.9  # the outermost shell cells reach infinity: seen
    grid.restrict_to(seen)
    assert bool(grid.occupied[cells[0]]) and not bool(grid.occupied[cells[1]])
    grid.update(lambda x: torch.full((len(x),), 100.0), 0.01, 0.01, 0.0)  # dense everywhere: still only seen cells
    assert torch.equal(grid.occupied, seen)
    equirect = Camera.equirect(np.eye(4), 8)
    assert bool(visible_cells(grid, [equirect], torch.zeros(3), 1.0).all())
