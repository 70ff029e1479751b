"""Imports of other tools' posed formats against known synthetic poses: IDR/NeuS cameras.npz,
COLMAP models (binary written by pycolmap, text written by hand), OPENCV distortion kept and
undistorted, bad input as one line, and import-poses never rewriting its source."""
from __future__ import annotations

import json
from pathlib import Path

import cv2  # before pycolmap (see correspondence/reconstruct.py)
import numpy as np
import pytest
from PIL import Image

from correspondence.imports import load_any, load_cameras_npz, load_colmap
from correspondence.nerfstudio import load_scene, load_transforms
from ingest import conventions as cv
from ingest.cli import main as odin_main

W, H = 64, 48


def _poses(n: int, seed: int = 0) -> list[np.ndarray]:
    """Cameras on a ring looking roughly at the origin, with random roll/jitter (OpenCV c2w)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        a = 2 * np.pi * k / n
        R = cv.rotation_from_ypr(a + np.pi + rng.normal(0, 0.1), rng.normal(0, 0.2), rng.normal(0, 0.3))
        out.append(cv.make_pose(R, np.array([3 * np.sin(a), rng.normal(0, 0.3), 3 * np.cos(a)])))
    return out


def _write_images(folder: Path, n: int, name="{:03d}.png", size=(W, H)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for k in range(n):
        p = folder / name.format(k)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def _assert_same_pose(a: np.ndarray, b: np.ndarray, tol=1e-8):
    np.testing.assert_allclose(cv.as_4x4(a), cv.as_4x4(b), atol=tol)


# --------------------------------------------------------------------------- cameras.npz
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_cameras_npz_round_trip(tmp_path, sign):
    poses = _poses(5)
    K = np.array([[70.0, 0, 31.2], [0, 72.0, 23.7], [0, 0, 1]])  # IDR pixel grid: centres on integers
    scale = np.diag([2.5, 2.5, 2.5, 1.0])
    scale[:3, 3] = [0.3, -0.2, 1.1]  # unit sphere -> world
    mats = {}
    for i, c2w in enumerate(poses):
        world = np.eye(4)
        world[:3] = K @ cv.invert_pose(c2w)[:3]
        mats[f"world_mat_{i}"] = sign * world  # a projection matrix is defined up to scale, sign included
        mats[f"scale_mat_{i}"] = scale
    np.savez(tmp_path / "cameras.npz", **mats)
    _write_images(tmp_path / "image", 5)
    _write_images(tmp_path / "mask", 5)

    scene = load_scene(tmp_path)
    assert len(scene.frames) == 5 and scene.aabb == ([-1.0] * 3, [1.0] * 3)
    inv_scale = np.linalg.inv(scale)
    for f, c2w in zip(scene.frames, poses):
        # the normalised frame: same rotation, centre mapped through inv(scale_mat)
        expected = cv.make_pose(c2w[:3, :3], inv_scale[:3, :3] @ c2w[:3, 3] + inv_scale[:3, 3])
        _assert_same_pose(f.c2w, expected)
        assert (f.intrinsics.fx, f.intrinsics.fy) == pytest.approx((70.0, 72.0), rel=1e-9)
        assert (f.intrinsics.cx, f.intrinsics.cy) == pytest.approx((31.7, 24.2), abs=1e-9)
        assert f.mask_path is not None and f.mask_path.parent.name == "mask"


def test_cameras_npz_bad_inputs(tmp_path):
    from ingest.errors import OdinError

    (tmp_path / "cameras.npz").write_bytes(b"not a zip at all")
    with pytest.raises(OdinError, match="unreadable .npz"):
        load_cameras_npz(tmp_path / "cameras.npz")
    np.savez(tmp_path / "cameras.npz", world_mat_0=np.eye(4), world_mat_1=np.eye(4))
    _write_images(tmp_path / "image", 3)
    with pytest.raises(OdinError, match="2 cameras but 3 images"):
        load_cameras_npz(tmp_path / "cameras.npz")


# --------------------------------------------------------------------------- COLMAP
MODELS = {  # name -> (params, (fx, fy, cx, cy), OpenCV distortion (k1, k2, p1, p2, k3) or None)
    "SIMPLE_PINHOLE": ([60.0, 32.5, 24.5], (60, 60, 32.5, 24.5), None),
    "PINHOLE": ([60.0, 62.0, 31.0, 23.0], (60, 62, 31, 23), None),
    "SIMPLE_RADIAL": ([61.0, 32.0, 24.0, -0.05], (61, 61, 32, 24), (-0.05, 0, 0, 0, 0)),
    "RADIAL": ([59.0, 32.0, 24.0, -0.04, 0.01], (59, 59, 32, 24), (-0.04, 0.01, 0, 0, 0)),
    "OPENCV": ([58.0, 57.0, 33.0, 22.0, -0.1, 0.02, 0.001, -0.002], (58, 57, 33, 22), (-0.1, 0.02, 0.001, -0.002, 0)),
}


def _check_colmap_scene(scene, poses, names):
    assert [f.image_path.name for f in scene.frames] == names
    for f, c2w, name in zip(scene.frames, poses, MODELS):
        params, (fx, fy, cx, cy), dist = MODELS[name]
        _assert_same_pose(f.c2w, c2w)
        K = f.intrinsics
        assert (K.fx, K.fy, K.cx, K.cy, K.width, K.height) == pytest.approx((fx, fy, cx, cy, W, H))
        assert f.distortion == (None if dist is None else pytest.approx(dist))


def test_colmap_binary_model_round_trip(tmp_path):
    import pycolmap

    poses = _poses(len(MODELS), seed=2)
    names = _write_images(tmp_path / "images", len(MODELS), "img_{:02d}.jpg")
    rec = pycolmap.Reconstruction()
    for k, (model, (params, _, _)) in enumerate(MODELS.items(), start=1):
        cam = pycolmap.Camera.create_from_model_name(k, model, 50.0, W, H)
        cam.params = params
        rec.add_camera_with_trivial_rig(cam)
        image = pycolmap.Image(name=names[k - 1].name, camera_id=k, image_id=k)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(cv.invert_pose(poses[k - 1])[:3]))
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    rec.write_binary(str(tmp_path / "sparse" / "0"))
    assert (tmp_path / "sparse" / "0" / "images.bin").exists()

    scene = load_scene(tmp_path, undistort=False)  # dispatch: the folder holds sparse/0 and images/
    _check_colmap_scene(scene, poses, [p.name for p in names])
    # the model file itself works too
    _check_colmap_scene(load_any(tmp_path / "sparse" / "0" / "cameras.bin"), poses, [p.name for p in names])


def test_colmap_text_model_written_by_hand(tmp_path):
    poses = _poses(len(MODELS), seed=3)
    names = _write_images(tmp_path / "imgs", len(MODELS), "{:04d}.png")
    model = tmp_path / "model"
    model.mkdir()
    cams, images = [], []
    for k, (name, (params, _, _)) in enumerate(MODELS.items(), start=1):
        cams.append(f"{k} {name} {W} {H} " + " ".join(repr(float(p)) for p in params))
        w2c = cv.invert_pose(poses[k - 1])
        q = cv.quaternion_from_rotation(w2c[:3, :3])  # COLMAP: Hamilton (w, x, y, z), world-to-camera
        images.append(f"{k} {' '.join(map(repr, q.tolist()))} {' '.join(map(repr, w2c[:3, 3].tolist()))} {k} "
                      f"{names[k - 1].name}\n\n")  # 2nd line: no 2D points
    (model / "cameras.txt").write_text("# CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n" + "\n".join(cams) + "\n")
    (model / "images.txt").write_text("# IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n" + "".join(images))
    (model / "points3D.txt").write_text("")

    scene = load_colmap(model, images_dir=tmp_path / "imgs")
    _check_colmap_scene(scene, poses, [p.name for p in names])
    # import-poses writes it as transforms.json, which reads back the same (distortion included)
    out = tmp_path / "ns"
    assert odin_main(["import-poses", str(model), "--images", str(tmp_path / "imgs"), "--out", str(out)]) == 0
    _check_colmap_scene(load_transforms(tmp_path / "ns" / "transforms.json"), poses, [p.name for p in names])


def test_colmap_images_not_found_is_one_line(tmp_path, capsys):
    import pycolmap

    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera.create_from_model_name(1, "PINHOLE", 50.0, W, H))
    rec.add_image_with_trivial_frame(pycolmap.Image(name="nowhere.png", camera_id=1, image_id=1), pycolmap.Rigid3d())
    rec.write_text(str(tmp_path))
    assert odin_main(["import-poses", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nowhere.png not found" in err and "--images" in err


# --------------------------------------------------------------------------- OPENCV distortion
def _checker(x, y, square=0.25):
    return ((np.floor(x / square) + np.floor(y / square)) % 2 * 255).astype(np.uint8)


def _distort(x, y, k1, k2, p1, p2, k3):
    """OpenCV's radial-tangential model on normalised coordinates, written out (independent of cv2)."""
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    return (x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
            y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y)


def _undistort(xd, yd, dist):
    x, y = xd.copy(), yd.copy()
    for _ in range(200):  # fixed point of x = xd - (distort(x) - x)
        fx, fy = _distort(x, y, *dist)
        x, y = x - (fx - xd), y - (fy - yd)
    fx, fy = _distort(x, y, *dist)
    assert max(np.abs(fx - xd).max(), np.abs(fy - yd).max()) < 1e-10
    return x, y


def _smooth(x, y):
    return 127.5 + 127.5 * np.sin(2 * np.pi * x / 0.3) * np.cos(2 * np.pi * y / 0.3)


@pytest.mark.parametrize("dist", [(-0.28, 0.09, 0.0015, -0.001, 0.0), (0.2, 0.05, -0.002, 0.001, 0.01)],
                         ids=["barrel", "pincushion"])
def test_opencv_distortion_kept_and_undistorted(tmp_path, dist):
    w, h = 160, 120
    K = cv.Intrinsics(90.0, 92.0, 81.3, 58.6, w, h)
    # distorted images: each pixel (centre at +0.5, our convention) shows the pattern at its pinhole ray
    v, u = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    xd, yd = _undistort((u - K.cx) / K.fx, (v - K.cy) / K.fy, dist)
    xs, ys = (np.arange(w) + 0.5 - K.cx)[None, :] / K.fx, (np.arange(h) + 0.5 - K.cy)[:, None] / K.fy
    patterns = {"checker": _checker, "smooth": _smooth}
    c2w = cv.make_pose(cv.rotation_from_ypr(0.3, -0.1, 0.05), np.array([0.5, 0.2, -1.0]))
    frames = []
    for name, pattern in patterns.items():
        gray = np.round(pattern(xd, yd)).astype(np.uint8)
        Image.fromarray(np.repeat(gray[..., None], 3, -1)).save(tmp_path / f"{name}.png")
        frames.append({"file_path": f"{name}.png", "transform_matrix": cv.opengl_from_opencv_c2w(c2w).tolist()})
    meta = {"camera_model": "OPENCV", "fl_x": K.fx, "fl_y": K.fy, "cx": K.cx, "cy": K.cy, "w": w, "h": h,
            "k1": dist[0], "k2": dist[1], "p1": dist[2], "p2": dist[3], "k3": dist[4], "frames": frames}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))

    kept = load_scene(tmp_path, undistort=False).frames[0]
    assert kept.distortion == pytest.approx(dist) and kept.image_path.name == "checker.png"
    scene = load_scene(tmp_path)
    for frame, (name, pattern) in zip(scene.frames, patterns.items()):
        assert frame.distortion is None and frame.intrinsics == K and frame.mask_path is not None
        _assert_same_pose(frame.c2w, c2w)
        got = np.asarray(Image.open(frame.image_path).convert("L")).astype(float)
        raw = np.asarray(Image.open(tmp_path / f"{name}.png").convert("L")).astype(float)
        covered = np.asarray(Image.open(frame.mask_path)) > 0
        truth = pattern(xs, ys).astype(float)  # the pinhole image at our pixel centres
        # barrel distortion squeezes a wider view into the frame; pincushion leaves the pinhole's corners unseen
        assert covered.all() if dist[0] < 0 else (0.6 < covered.mean() < 0.9)
        if name == "checker":  # point-sampled squares: resampling may only blur their edges
            edge = np.zeros_like(covered)
            for axis in (0, 1):
                step = np.diff(truth, axis=axis) != 0
                edge |= np.pad(step, [(0, 1) if a == axis else (0, 0) for a in (0, 1)])
                edge |= np.pad(step, [(1, 0) if a == axis else (0, 0) for a in (0, 1)])
            wrong = (np.abs(got - truth) > 127) & covered
            assert not (wrong & ~edge).any() and wrong.mean() < 0.04
            assert ((np.abs(raw - truth) > 127) & ~edge).mean() > 0.1  # the input really is distorted
        else:  # smooth: within a few grey levels; half a pixel off (the other pixel-centre convention) is 2x worse
            err = np.abs(got - truth)[covered]
            assert err.mean() < 1.0 and err.max() < 6, (err.mean(), err.max())
            assert np.abs(raw - truth).mean() > 30
    assert load_scene(tmp_path).frames[0].image_path == scene.frames[0].image_path  # cached


def test_import_poses_keeps_fields_and_refuses_its_source(tmp_path, capsys):
    _write_images(tmp_path / "src" / "images", 2)
    _write_images(tmp_path / "src" / "masks", 2)
    frames = [{"file_path": f"images/{k:03d}.png", "mask_path": f"masks/{k:03d}.png", "k1": -0.1, "p2": 0.001,
               "depth_file_path": f"depths/{k:03d}.png", "sharpness": 10.0 + k,
               "transform_matrix": cv.opengl_from_opencv_c2w(c).tolist()} for k, c in enumerate(_poses(2))]
    src = tmp_path / "src" / "transforms.json"
    src.write_text(json.dumps({"camera_model": "OPENCV", "fl_x": 50, "fl_y": 50, "cx": 32, "cy": 24, "w": W, "h": H,
                               "aabb_scale": 16, "ply_file_path": "sparse_pc.ply",
                               "train_filenames": ["images/000.png"], "val_filenames": ["images/001.png"],
                               "frames": frames}))
    before = src.read_bytes()
    for out in (tmp_path / "src", tmp_path / "src" / "."):
        assert odin_main(["import-poses", str(src), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "--out is the source's folder" in err
    assert src.read_bytes() == before
    assert odin_main(["import-poses", str(tmp_path / "src"), "--out", str(tmp_path / "out")]) == 0
    meta = json.loads((tmp_path / "out" / "transforms.json").read_text())
    out = tmp_path / "out"
    for k, f in enumerate(meta["frames"]):
        assert f["camera_model"] == "OPENCV" and f["k1"] == -0.1 and f["p2"] == 0.001 and f["k2"] == 0.0
        assert (out / f["mask_path"]).resolve() == (tmp_path / "src" / "masks" / f"{k:03d}.png").resolve()
        assert (out / f["depth_file_path"]).resolve() == (tmp_path / "src" / "depths" / f"{k:03d}.png").resolve()
        assert f["sharpness"] == 10.0 + k
    # what we do not read is carried over, paths moved with the file (nerfstudio matches splits to file_path)
    assert meta["aabb_scale"] == 16
    assert (out / meta["ply_file_path"]).resolve() == (tmp_path / "src" / "sparse_pc.ply").resolve()
    assert meta["train_filenames"] == [meta["frames"][0]["file_path"]]
    assert meta["val_filenames"] == [meta["frames"][1]["file_path"]]


def test_binary_file_as_json_is_one_line(tmp_path, capsys):
    from correspondence.nerfstudio import load_camera_path
    from ingest.errors import OdinError

    binary = tmp_path / "transforms.json"
    binary.write_bytes(bytes(range(256)) * 4)
    assert odin_main(["import-poses", str(binary), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"odin: error: {binary}: not a JSON file (binary content)"
    with pytest.raises(OdinError, match="binary content"):
        load_camera_path(binary)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(OdinError, match="expected a JSON object"):
        load_transforms(tmp_path / "list.json")


# --------------------------------------------------------------------------- nerfstudio's dataparser frame
def _ns_train_poses(c2ws_gl: np.ndarray, transform: np.ndarray, scale: float) -> np.ndarray:
    """What nerfstudio's dataparser does to transforms.json poses: ``transform_matrix @ poses`` (3x4 @ 4x4),
    then ``poses[:, :3, 3] *= scale_factor``; its viewer and ns-render use that frame as is."""
    poses = transform[None] @ c2ws_gl
    poses[:, :3, 3] *= scale
    return poses


def _dataparser_scene(tmp_path: Path, applied: np.ndarray | None = None, applied_scale: float | None = None):
    folder = tmp_path / "scene"
    _write_images(folder / "images", 3)
    poses = _poses(3, seed=7)
    meta = {"camera_model": "OPENCV", "fl_x": 50, "fl_y": 50, "cx": 32, "cy": 24, "w": W, "h": H,
            "frames": [{"file_path": f"images/{k:03d}.png", "transform_matrix": cv.opengl_from_opencv_c2w(c).tolist()}
                       for k, c in enumerate(poses)]}
    if applied is not None:
        meta["applied_transform"] = applied[:3].tolist()
    if applied_scale is not None:
        meta["applied_scale"] = applied_scale
    (folder / "transforms.json").write_text(json.dumps(meta))
    # the orientation nerfstudio found (any rigid map) and its auto scale
    T = cv.make_pose(cv.rotation_from_ypr(0.4, -0.2, 0.1), np.array([0.3, -1.2, 0.5]))[:3]
    s = 0.37
    # nerfstudio saves the transform with applied_transform folded in, and scale times applied_scale
    saved_T = (cv.as_4x4(T) @ (np.eye(4) if applied is None else applied))[:3]
    saved_s = s * (applied_scale or 1.0)
    (folder / "dataparser_transforms.json").write_text(json.dumps({"transform": saved_T.tolist(), "scale": saved_s}))
    gl = np.stack([cv.opengl_from_opencv_c2w(c) for c in poses])
    return folder, poses, _ns_train_poses(gl, T, s)


@pytest.mark.parametrize("applied", [False, True], ids=["plain", "applied_transform"])
def test_camera_paths_in_nerfstudio_dataparser_frame(tmp_path, applied, caplog):
    from correspondence.nerfstudio import find_dataparser, load_camera_path, write_camera_path

    A = cv.make_pose(np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]), np.array([0.2, 0.0, -0.4])) if applied else None
    folder, poses, ns_poses = _dataparser_scene(tmp_path, A, 1.7 if applied else None)
    assert find_dataparser(folder) is not None and find_dataparser(tmp_path / "elsewhere") is None

    # ours -> nerfstudio: a path through the training cameras lands exactly on nerfstudio's training cameras
    ours = write_camera_path(tmp_path / "ours.json", poses, W, H, scene=folder)
    written = json.loads(ours.read_text())
    got = np.stack([np.reshape(c["camera_to_world"], (4, 4)) for c in written["camera_path"]])
    np.testing.assert_allclose(got[:, :3], ns_poses, atol=1e-9)
    for c2w, back in zip(poses, load_camera_path(ours).c2ws):  # and back, wherever the file is
        _assert_same_pose(back, c2w)

    # nerfstudio -> ours: a path saved by nerfstudio's viewer (DATA/camera_paths/NAME.json)
    ns_path = {"keyframes": [], "camera_type": "perspective", "render_height": H, "render_width": W, "fps": 24,
               "seconds": 1.0, "camera_path": [{"camera_to_world": np.vstack([p, [0, 0, 0, 1]]).reshape(-1).tolist(),
                                                "fov": 50.0, "aspect": W / H} for p in ns_poses]}
    (folder / "camera_paths").mkdir()
    (folder / "camera_paths" / "ns.json").write_text(json.dumps(ns_path))
    (tmp_path / "ns_elsewhere.json").write_text(json.dumps(ns_path))
    for loaded in (load_camera_path(folder / "camera_paths" / "ns.json"),
                   load_camera_path(tmp_path / "ns_elsewhere.json", scene=folder / "transforms.json")):
        for c2w, back in zip(poses, loaded.c2ws):
            _assert_same_pose(back, c2w)
    # without the scene there is nothing to convert with: used as is, and said so
    raw = load_camera_path(tmp_path / "ns_elsewhere.json")
    assert not np.allclose(raw.c2ws[0], poses[0], atol=1e-3) and "dataparser" in caplog.text

    # a scene without the file: paths are written in world coordinates and say so
    plain = write_camera_path(tmp_path / "plain.json", poses, W, H, scene=tmp_path / "elsewhere")
    assert json.loads(plain.read_text())["odin_frame"] == "world"
    _assert_same_pose(load_camera_path(plain, scene=folder).c2ws[0], poses[0])


def test_import_poses_keeps_the_dataparser_frame(tmp_path):
    from correspondence.nerfstudio import find_dataparser

    A = cv.make_pose(np.array([[0.0, 1, 0], [1, 0, 0], [0, 0, -1]]), np.zeros(3))
    folder, poses, ns_poses = _dataparser_scene(tmp_path, A, 2.0)
    assert odin_main(["import-poses", str(folder), "--out", str(tmp_path / "out")]) == 0
    a, b = find_dataparser(folder), find_dataparser(tmp_path / "out")
    np.testing.assert_allclose(a.transform, b.transform)
    assert a.scale == pytest.approx(b.scale) == 0.37  # applied_scale unfolded from both
    for f, ns in zip(load_transforms(tmp_path / "out").frames, ns_poses):
        np.testing.assert_allclose(b.to_dataparser(f.c2w)[:3], ns, atol=1e-9)


def test_nrc_render_reads_nerfstudio_paths_in_the_runs_scene(tmp_path, monkeypatch):
    """`odin nrc render RUN --camera-path P`: P from nerfstudio's viewer is converted with the run's scene."""
    import nrc.checkpoint
    import nrc.video
    from nrc.checkpoint import write_config
    from nrc.config import NRCConfig, SceneFrame

    folder, poses, ns_poses = _dataparser_scene(tmp_path)
    run = tmp_path / "run"
    write_config(run, NRCConfig(scenes=[SceneFrame(str(folder.resolve()), [0.0, 0.0, 0.0], 1.0)]))
    seen = []
    monkeypatch.setattr(nrc.checkpoint, "load_run", lambda run_dir, device: (None, None))
    monkeypatch.setattr(nrc.video, "render_view", lambda model, c2w, camera, kind, scene: (
        seen.append(np.asarray(c2w)), {"rgb": np.zeros((H, W, 3), np.float32)})[1])
    cams = [{"camera_to_world": np.vstack([p, [0, 0, 0, 1]]).reshape(-1).tolist(), "fov": 50.0, "aspect": W / H}
            for p in ns_poses]
    (tmp_path / "path.json").write_text(json.dumps({"camera_type": "perspective", "render_height": H,
                                                    "render_width": W, "fps": 4, "camera_path": cams}))
    nrc.video.render_camera_path(run, tmp_path / "path.json", tmp_path / "out.mp4", progress=False)
    assert len(seen) == len(poses)
    for c2w, got in zip(poses, seen):
        _assert_same_pose(got, c2w)


def test_nrc_loads_imported_scenes(tmp_path):
    """`odin nrc fit SCENE` reads scenes through correspondence.nerfstudio.load_scene: COLMAP (undistorted)
    and cameras.npz folders load as pinhole views."""
    import pycolmap

    from nrc.data import load_scene_data

    colmap = tmp_path / "colmap"
    names = _write_images(colmap / "images", 3)
    rec = pycolmap.Reconstruction()
    cam = pycolmap.Camera.create_from_model_name(1, "OPENCV", 50.0, W, H)
    cam.params = MODELS["OPENCV"][0]
    rec.add_camera_with_trivial_rig(cam)
    for k, c2w in enumerate(_poses(3), start=1):
        rec.add_image_with_trivial_frame(pycolmap.Image(name=names[k - 1].name, camera_id=1, image_id=k),
                                         pycolmap.Rigid3d(cv.invert_pose(c2w)[:3]))
    (colmap / "sparse" / "0").mkdir(parents=True)
    rec.write_binary(str(colmap / "sparse" / "0"))
    data = load_scene_data(colmap, 24)
    assert len(data.views) == 3 and all(v.rgb.shape == (24, 32, 3) and v.camera.intrinsics for v in data.views)
    assert all(".odin_undistorted" in str(f.image_path) for f in load_scene(colmap).frames)

    npz = tmp_path / "dtu"
    _write_images(npz / "image", 2)
    K = np.array([[50.0, 0, 31.5], [0, 50, 23.5], [0, 0, 1]])
    mats = {f"world_mat_{i}": np.vstack([K @ cv.invert_pose(c)[:3], [0, 0, 0, 1]]) for i, c in enumerate(_poses(2))}
    np.savez(npz / "cameras.npz", **mats, **{f"scale_mat_{i}": np.diag([3.0, 3, 3, 1]) for i in range(2)})
    data = load_scene_data(npz)
    assert len(data.views) == 2 and np.allclose(data.aabb[0], -1) and np.allclose(data.aabb[1], 1)


@pytest.mark.parametrize("up_is_minus_z", [False, True])
def test_predicted_nerfstudio_frame_has_its_documented_properties(up_is_minus_z):
    """nerfstudio's defaults: centres' mean at the origin, mean camera up on +z by the smallest rotation,
    largest |centre coordinate| = 1."""
    from correspondence.imports_dataparser import nerfstudio_default_dataparser

    poses = _poses(6, seed=11)
    if up_is_minus_z:  # every camera's OpenGL up exactly -z: the half-turn branch
        poses = []
        for k, a in enumerate(np.linspace(0, 2 * np.pi, 6, endpoint=False)):
            x, y = np.array([np.cos(a), np.sin(a), 0.0]), np.array([0.0, 0, -1])
            R_gl = np.stack([x, y, np.cross(x, y)], 1)
            poses.append(cv.make_pose(R_gl @ np.diag([1.0, -1, -1]), np.array([np.cos(a), np.sin(a), 0.1 * k])))
    dp = nerfstudio_default_dataparser(poses)
    ns = np.stack([dp.to_dataparser(c) for c in poses])
    np.testing.assert_allclose(ns[:, :3, 3].mean(0), 0, atol=1e-12)
    up = ns[:, :3, 1].mean(0)
    np.testing.assert_allclose(up / np.linalg.norm(up), [0, 0, 1], atol=1e-12)
    assert np.abs(ns[:, :3, 3]).max() == pytest.approx(1.0)
    gl_up = np.mean([cv.opengl_from_opencv_c2w(p)[:3, 1] for p in poses], 0)
    axis = np.cross(gl_up, [0, 0, 1])
    if np.linalg.norm(axis) > 1e-6:  # the smallest rotation keeps the axis normal to both
        np.testing.assert_allclose(dp.transform[:, :3] @ axis, axis, atol=1e-12)
    assert nerfstudio_default_dataparser(poses[:1]) is None  # one camera: no scale


def test_import_poses_writes_the_predicted_frame(tmp_path, capsys):
    from correspondence.imports_dataparser import nerfstudio_default_dataparser
    from correspondence.nerfstudio import find_dataparser

    A = cv.make_pose(np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]]), np.array([0.5, 0, 0]))
    folder, poses, _ = _dataparser_scene(tmp_path, A, 3.0)
    (folder / "dataparser_transforms.json").unlink()
    assert odin_main(["import-poses", str(folder), "--out", str(tmp_path / "out")]) == 0
    assert "default dataparser frame predicted" in capsys.readouterr().out
    got, want = find_dataparser(tmp_path / "out"), nerfstudio_default_dataparser(poses)
    np.testing.assert_allclose(got.transform, want.transform, atol=1e-12)
    assert got.scale == pytest.approx(want.scale)
    saved = json.loads((tmp_path / "out" / "dataparser_transforms.json").read_text())
    # saved as nerfstudio saves it: applied_transform folded in, scale times applied_scale
    np.testing.assert_allclose(saved["transform"], (cv.as_4x4(want.transform) @ A)[:3], atol=1e-12)
    assert saved["scale"] == pytest.approx(want.scale * 3.0) and "predicted" in saved["odin"]
    # a file nerfstudio wrote into OUT is never replaced by a prediction
    theirs = json.dumps({"transform": np.eye(4)[:3].tolist(), "scale": 0.5})
    (tmp_path / "out" / "dataparser_transforms.json").write_text(theirs)
    assert odin_main(["import-poses", str(folder), "--out", str(tmp_path / "out")]) == 0
    assert "(from nerfstudio) kept" in capsys.readouterr().out
    assert (tmp_path / "out" / "dataparser_transforms.json").read_text() == theirs
