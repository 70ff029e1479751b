"""Posed-image scenes in the formats users already have: nerfstudio / instant-ngp
``transforms.json``, nerfstudio ``camera_path.json``, LLFF ``poses_bounds.npy``, IDR/NeuS/MonoSDF
``cameras.npz`` and COLMAP sparse models (``correspondence.imports``), and our synthetic worlds.

Everything is converted to ``ingest.conventions`` on the way in (OpenCV camera axes,
camera-to-world) and back to OpenGL axes on the way out; world axes are kept as they are.
OPENCV lens distortion (k1, k2, p1, p2, k3) is kept on the frame; ``load_scene`` undistorts
such frames to a pinhole with the same K (``correspondence.imports_undistort``).

nerfstudio's ``camera_path.json`` stores ``camera_to_world`` as 16 row-major numbers (OpenGL camera
axes) and ``fov`` as the VERTICAL field of view in degrees, in nerfstudio's dataparser frame
(``correspondence.imports_dataparser``): when a scene has a ``dataparser_transforms.json``, camera
paths are converted on read and on write, and the paths we write say which frame they are in.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from correspondence.imports_dataparser import DATAPARSER_NAME, Dataparser, find_dataparser  # noqa: F401 (API)
from ingest import conventions as cv
from ingest.atomic import atomic_path, atomic_write_json
from ingest.errors import OdinError
from ingest.errors import read_json_object as _read_json  # also used by imports_dataparser

log = logging.getLogger(__name__)


@dataclass
class PosedFrame:
    image_path: Path
    c2w: np.ndarray  # (4, 4), OpenCV axes
    width: int
    height: int
    intrinsics: cv.Intrinsics | None = None  # None for equirectangular frames
    camera_model: str = "PINHOLE"  # "PINHOLE" | "EQUIRECTANGULAR"
    time: float | None = None
    distortion: tuple[float, ...] | None = None  # OpenCV order (k1, k2, p1, p2, k3); None = none
    mask_path: Path | None = None  # nonzero = pixel to use (nerfstudio's mask_path convention)
    extra: dict = field(default_factory=dict)  # transforms.json keys we do not read, written back as they were

    @property
    def is_equirect(self) -> bool:
        return self.camera_model == "EQUIRECTANGULAR"


@dataclass
class PosedScene:
    frames: list[PosedFrame]
    source: Path
    near_far: tuple[float, float] | None = None
    aabb: tuple[list[float], list[float]] | None = None  # (min xyz, max xyz), when known
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.frames:
            raise OdinError("scene has no usable frames", self.source)
        for f in self.frames:
            if not np.all(np.isfinite(f.c2w)):
                raise OdinError(f"pose of {f.image_path.name} contains NaN/inf", self.source)
            if not cv.is_rotation(f.c2w[:3, :3], atol=1e-3):
                raise OdinError(f"pose of {f.image_path.name} is not a rotation", self.source)

    @property
    def centers(self) -> np.ndarray:
        return np.stack([f.c2w[:3, 3] for f in self.frames])


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


_DISTORTION_KEYS = ("k1", "k2", "p1", "p2", "k3")  # cv2's order
_READ_KEYS = {"file_path", "transform_matrix", "camera_model", "fl_x", "fl_y", "cx", "cy", "w", "h", "k4",
              "camera_angle_x", "camera_angle_y", "mask_path", "time", *_DISTORTION_KEYS}
_SCENE_KEYS = {"frames", "applied_transform", "applied_scale", "odin_aabb", "odin_convention"}
_PATH_KEYS = {"depth_file_path", "ply_file_path"}  # relative to the transforms.json: rewritten when it moves
_PATH_LIST_KEYS = {"train_filenames", "val_filenames", "test_filenames"}


def _passed_through(entries: dict, known: set, folder: Path) -> dict:
    """Keys we do not read, with file paths made absolute (``write_transforms`` makes them relative again)."""
    out = {}
    for k, v in entries.items():
        if k in known:
            continue
        if k in _PATH_KEYS and isinstance(v, str):
            v = str((folder / v).resolve())
        elif k in _PATH_LIST_KEYS and isinstance(v, list):
            v = [str((folder / x).resolve()) if isinstance(x, str) else x for x in v]
        out[k] = v
    return out


def _relocated(entries: dict, folder: Path) -> dict:
    return {k: _relative(Path(v), folder) if k in _PATH_KEYS and isinstance(v, str)
            else [_relative(Path(x), folder) for x in v] if k in _PATH_LIST_KEYS and isinstance(v, list) else v
            for k, v in entries.items()}
_PINHOLE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")  # k1.. keys hold distortion


def load_transforms(path: str | Path) -> PosedScene:
    """nerfstudio / instant-ngp transforms.json (missing images are skipped with a warning)."""
    path = Path(path)
    if path.is_dir():
        path = path / "transforms.json"
    meta = _read_json(path)
    if not isinstance(meta.get("frames"), list):
        raise OdinError("no 'frames' list: not a transforms.json", path)
    frames, missing = [], []
    for i, fr in enumerate(meta["frames"]):
        if not isinstance(fr, dict) or not isinstance(fr.get("file_path"), str):
            raise OdinError(f"frame {i} has no file_path", path)
        image = (path.parent / fr["file_path"]).resolve()
        if not image.suffix and not image.exists():  # instant-ngp often omits ".png"
            image = image.with_suffix(".png")
        if not image.exists():
            missing.append(image)
            continue
        try:
            frames.append(_transforms_frame(fr, meta, image, i, path))
        except (TypeError, ValueError) as e:  # a string or ragged list where numbers belong
            raise OdinError(f"frame {i}: malformed camera ({e})", path) from None
    if missing:  # one line however many are gone: a moved image folder loses them all
        if not frames:
            raise OdinError(f"none of its {len(missing)} images exist (first: {missing[0]})", path)
        log.warning("%s: %d of %d images are missing (first: %s); those frames are skipped", path, len(missing),
                    len(meta["frames"]), missing[0])
    aabb = meta.get("odin_aabb")
    extra = {k: meta[k] for k in ("applied_transform", "applied_scale") if k in meta}
    extra["nerfstudio"] = _passed_through(meta, _READ_KEYS | _SCENE_KEYS, path.parent)
    return PosedScene(frames, path, aabb=None if aabb is None else (aabb[0], aabb[1]), extra=extra)


def _transforms_frame(fr: dict, meta: dict, image: Path, i: int, path: Path) -> PosedFrame:
    get = lambda k, d=None: fr.get(k, meta.get(k, d))  # per-frame values override global ones
    model = str(get("camera_model", "OPENCV")).upper()
    w, h = get("w"), get("h")
    if w is None or h is None:
        w, h = _image_size(image)
    c2w_gl = np.asarray(fr.get("transform_matrix", []), np.float64)
    if c2w_gl.shape not in ((4, 4), (3, 4)):
        raise OdinError(f"frame {i}: transform_matrix must be 3x4 or 4x4, got shape {c2w_gl.shape}", path)
    c2w = cv.opencv_from_opengl_c2w(c2w_gl)
    mask = (path.parent / fr["mask_path"]).resolve() if fr.get("mask_path") else None
    time = fr.get("time")
    extra = _passed_through(fr, _READ_KEYS, path.parent)
    if model == "EQUIRECTANGULAR":
        return PosedFrame(image, c2w, int(w), int(h), None, "EQUIRECTANGULAR", time, mask_path=mask, extra=extra)
    if model not in _PINHOLE_MODELS:
        raise OdinError(f"frame {i}: camera_model {model} is not supported "
                        f"({', '.join(_PINHOLE_MODELS)}, EQUIRECTANGULAR)", path)
    fx = get("fl_x")
    if fx is None and get("camera_angle_x") is not None:
        fx = 0.5 * w / math.tan(0.5 * get("camera_angle_x"))
    if fx is None:
        raise OdinError(f"frame {i}: no focal length (fl_x or camera_angle_x)", path)
    fy = get("fl_y")
    if fy is None:
        fy = 0.5 * h / math.tan(0.5 * get("camera_angle_y")) if get("camera_angle_y") is not None else fx
    K = cv.Intrinsics(float(fx), float(fy), float(get("cx", w / 2)), float(get("cy", h / 2)), int(w), int(h))
    if not (K.fx > 0 and K.fy > 0 and math.isfinite(K.fx) and math.isfinite(K.fy)):
        raise OdinError(f"frame {i}: focal length must be positive, got {K.fx}, {K.fy}", path)
    if float(get("k4", 0.0)) != 0.0:
        raise OdinError(f"frame {i}: k4 is not supported for camera_model {model} (k1, k2, k3, p1, p2 are)", path)
    dist = tuple(float(get(k, 0.0)) for k in _DISTORTION_KEYS)
    if not all(map(math.isfinite, dist)):
        raise OdinError(f"frame {i}: distortion coefficients must be finite", path)
    return PosedFrame(image, c2w, int(w), int(h), K, "PINHOLE", time, dist if any(dist) else None, mask, extra)


def _relative(p: Path, root: Path) -> str:
    p, root = Path(p).resolve(), root.resolve()
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(p)


def write_transforms(scene: PosedScene, path: str | Path) -> Path:
    """Write a nerfstudio transforms.json (OpenGL axes, per-frame intrinsics, distortion and masks, relative
    paths). Frames with distortion are written with their original images and k1, k2, p1, p2, k3."""
    path = Path(path)
    frames = []
    for f in scene.frames:
        entry = _relocated(f.extra, path.parent)
        entry.update({"file_path": _relative(f.image_path, path.parent),
                      "transform_matrix": cv.opengl_from_opencv_c2w(f.c2w).tolist(), "w": f.width, "h": f.height})
        if f.is_equirect:
            entry["camera_model"] = "EQUIRECTANGULAR"
        else:
            K = f.intrinsics
            entry.update(camera_model="OPENCV", fl_x=K.fx, fl_y=K.fy, cx=K.cx, cy=K.cy)
            if f.distortion is not None:
                entry.update(zip(_DISTORTION_KEYS, map(float, f.distortion)))
        if f.mask_path is not None:
            entry["mask_path"] = _relative(f.mask_path, path.parent)
        if f.time is not None:
            entry["time"] = f.time
        frames.append(entry)
    meta = _relocated(scene.extra.get("nerfstudio", {}), path.parent)
    meta.update(frames=frames, odin_convention="transform_matrix: camera-to-world, OpenGL camera axes")
    meta.update({k: scene.extra[k] for k in ("applied_transform", "applied_scale") if k in scene.extra})
    if scene.aabb is not None:
        meta["odin_aabb"] = [list(map(float, scene.aabb[0])), list(map(float, scene.aabb[1]))]
    atomic_write_json(path, meta)
    return path


def load_llff(folder: str | Path, images_dir: str | None = None) -> PosedScene:
    """LLFF poses_bounds.npy (N x 17: 3x5 [R|t|hwf] with [down, right, back] columns, near, far)."""
    folder = Path(folder)
    pb_path = folder / "poses_bounds.npy"
    try:
        pb = np.load(pb_path)
    except FileNotFoundError:
        raise OdinError("file not found", pb_path) from None
    except ValueError as e:
        raise OdinError(f"unreadable ({e})", pb_path) from None
    if pb.ndim != 2 or pb.shape[1] != 17:
        raise OdinError(f"expected an N x 17 array, got {pb.shape}", pb_path)
    candidates = [images_dir] if images_dir else ["images_8", "images_4", "images_2", "images"]
    img_dir = next((folder / c for c in candidates if c and (folder / c).is_dir()), None)
    if img_dir is None:
        raise OdinError(f"no image folder ({', '.join(c for c in candidates if c)})", folder)
    images = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if len(images) != len(pb):
        raise OdinError(f"{len(images)} images in {img_dir.name} but {len(pb)} poses", pb_path)
    mats = pb[:, :15].reshape(-1, 3, 5)
    frames = []
    for m, image in zip(mats, images):
        down, right, back, t = m[:, 0], m[:, 1], m[:, 2], m[:, 3]
        c2w = cv.make_pose(np.stack([right, down, -back], axis=1), t)
        h0, w0, f0 = m[:, 4]
        w, h = _image_size(image)
        sx, sy = w / w0, h / h0  # the images may be a downscaled copy (images_8)
        frames.append(PosedFrame(image, c2w, w, h, cv.Intrinsics(float(f0 * sx), float(f0 * sy), w / 2, h / 2, w, h)))
    near_far = (float(pb[:, 15].min()), float(pb[:, 16].max()))
    return PosedScene(frames, pb_path, near_far=near_far)


def load_synthetic_world(folder: str | Path, height: int | None = None) -> PosedScene:
    """A synthetic world as a posed equirectangular scene (lossless renders cached as PNG)."""
    from ingest.shards import encode_image
    from ingest.synth import SyntheticWorld

    world = SyntheticWorld(folder)
    h = height or world.config.height
    out = world.root / f"renders_{h}"
    frames = []
    for i in range(len(world)):
        image = out / f"frame_{i:06d}.png"
        if not image.exists():
            with atomic_path(image) as tmp:
                tmp.write_bytes(encode_image(world.render(i, h).rgb, "png"))
        frames.append(PosedFrame(image, world.poses[i], 2 * h, h, None, "EQUIRECTANGULAR", float(world.times[i])))
    lo, hi = world.scene.bounds
    return PosedScene(frames, world.root, aabb=(lo, hi), extra={"synthetic_world": str(world.root)})


def load_scene(path: str | Path, undistort: bool = True) -> PosedScene:
    """Any supported posed scene, chosen by the folder's contents: transforms.json (file or folder), LLFF
    (poses_bounds.npy), IDR/NeuS/MonoSDF cameras.npz, a COLMAP sparse model (or a folder with sparse/0),
    a synthetic world. With ``undistort`` (what training wants) frames with lens distortion come back as
    undistorted pinhole images (cached beside the scene); without it they keep their images and coefficients."""
    from correspondence import imports

    path = Path(path)
    if not path.exists():
        raise OdinError("scene not found", path)
    scene = imports.load_any(path)
    if undistort and any(f.distortion is not None for f in scene.frames):
        from correspondence.imports_undistort import undistort_scene

        scene = undistort_scene(scene)
    return scene


# --------------------------------------------------------------------------- camera paths
@dataclass
class CameraPath:
    camera_type: str  # "perspective" | "equirectangular"
    width: int
    height: int
    fps: float
    c2ws: list[np.ndarray]  # OpenCV axes
    fov_y_deg: list[float]  # per camera (perspective only)

    def intrinsics(self, i: int) -> cv.Intrinsics:
        fy = 0.5 * self.height / math.tan(math.radians(self.fov_y_deg[i]) / 2)
        return cv.Intrinsics(fy, fy, self.width / 2, self.height / 2, self.width, self.height)


def load_camera_path(path: str | Path, scene: str | Path | None = None,
                     dataparser: Dataparser | None = None) -> CameraPath:
    """A camera path in the scene's world. Paths we wrote say their frame; any other path (nerfstudio's
    viewer saves in its dataparser frame) is converted with ``dataparser``, else the ``dataparser_transforms.json``
    of ``scene``, else one beside the path or in its parent folder (nerfstudio keeps paths in DATA/camera_paths/)."""
    path = Path(path)
    meta = _read_json(path)
    cams = meta.get("camera_path")
    if not cams or not isinstance(cams, list):
        raise OdinError("no 'camera_path' entries", path)
    kind = meta.get("camera_type", "perspective")
    if kind not in ("perspective", "equirectangular"):
        raise OdinError(f"camera_type {kind!r} not supported (perspective, equirectangular)", path)
    dp = _path_dataparser(meta, path, scene, dataparser)
    c2ws, fovs = [], []
    try:
        for i, cam in enumerate(cams):
            m = np.asarray(cam.get("camera_to_world", []) if isinstance(cam, dict) else [], np.float64)
            if m.size not in (12, 16) or not np.all(np.isfinite(m)):
                raise OdinError(f"camera {i}: camera_to_world must be 12 or 16 finite numbers", path)
            m = m.reshape(-1, 4)
            c2w = cv.opencv_from_opengl_c2w(m) if dp is None else dp.from_dataparser(m)
            if not cv.is_rotation(c2w[:3, :3], atol=1e-3):  # a scaled or sheared pose renders a distorted world
                raise OdinError(f"camera {i}: camera_to_world is not a rotation and a translation", path)
            fovs.append(float(cam.get("fov", 50.0)))
            if not 0 < fovs[-1] < 180:
                raise OdinError(f"camera {i}: fov must be in (0, 180) degrees, got {fovs[-1]}", path)
            c2ws.append(c2w)
        width, height = int(meta.get("render_width", 512)), int(meta.get("render_height", 512))
        fps = float(meta.get("fps", 24))
    except (TypeError, ValueError) as e:  # a string or ragged list where numbers belong
        raise OdinError(f"malformed camera path ({e})", path) from None
    if not (0 < width <= 16384 and 0 < height <= 16384):
        raise OdinError(f"render_width and render_height must be in [1, 16384], got {width}x{height}", path)
    if not (math.isfinite(fps) and fps > 0):
        raise OdinError(f"fps must be a positive number, got {fps}", path)
    return CameraPath(kind, width, height, fps, c2ws, fovs)


def _path_dataparser(meta: dict, path: Path, scene, dataparser: Dataparser | None) -> Dataparser | None:
    if "odin_dataparser" in meta:
        return Dataparser.from_dict(meta["odin_dataparser"], path)
    if meta.get("odin_frame") == "world":
        return None
    # nerfstudio's viewer saves paths in DATA/camera_paths/; look beside the path only in that layout
    near = path.parent.parent if path.parent.name == "camera_paths" else path.parent
    for dp in (dataparser, find_dataparser(scene), find_dataparser(near)):
        if dp is not None:
            return dp
    if "keyframes" in meta:
        log.warning("%s looks like a nerfstudio viewer path (its dataparser frame) but no %s was found beside the "
                    "scene or the path; using it as world coordinates", path, DATAPARSER_NAME)
    return None


def write_camera_path(path: str | Path, c2ws, width: int, height: int, fov_y_deg: float = 60.0, fps: float = 24.0,
                      camera_type: str = "perspective", scene: str | Path | None = None,
                      dataparser: Dataparser | None = None) -> Path:
    """Write OpenCV-axes world c2ws as a nerfstudio camera_path.json. When the scene has a dataparser
    transform (``dataparser`` or ``scene``'s file) the cameras are written in that frame, as ns-render expects."""
    path = Path(path)
    dp = dataparser or find_dataparser(scene)
    to_ns = cv.opengl_from_opencv_c2w if dp is None else dp.to_dataparser
    cams = [{"camera_to_world": np.asarray(to_ns(np.asarray(c, np.float64))).reshape(-1).tolist(),
             "fov": fov_y_deg, "aspect": width / height} for c in c2ws]
    meta = {"camera_type": camera_type, "render_width": width, "render_height": height,
            "fps": fps, "seconds": len(cams) / fps, "camera_path": cams}
    meta.update({"odin_frame": "world"} if dp is None else {"odin_dataparser": dp.to_dict()})
    atomic_write_json(path, meta)
    return path
