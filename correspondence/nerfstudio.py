"""Posed-image scenes in the formats users already have: nerfstudio / instant-ngp
``transforms.json``, nerfstudio ``camera_path.json``, LLFF ``poses_bounds.npy``, and our
synthetic worlds.

Everything is converted to ``ingest.conventions`` on the way in (OpenCV camera axes,
camera-to-world) and back to OpenGL axes on the way out; world axes are kept as they are.
nerfstudio's ``camera_path.json`` stores ``fov`` as the VERTICAL field of view in degrees
and ``camera_to_world`` as 16 row-major numbers.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ingest import conventions as cv
from ingest.atomic import atomic_path, atomic_write_json
from ingest.errors import OdinError

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


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise OdinError("file not found", path) from None
    except json.JSONDecodeError as e:
        raise OdinError(f"invalid JSON ({e.msg} at line {e.lineno})", path) from None


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def load_transforms(path: str | Path) -> PosedScene:
    """nerfstudio / instant-ngp transforms.json (missing images are skipped with a warning)."""
    path = Path(path)
    if path.is_dir():
        path = path / "transforms.json"
    meta = _read_json(path)
    if "frames" not in meta:
        raise OdinError("no 'frames' list: not a transforms.json", path)
    frames = []
    for i, fr in enumerate(meta["frames"]):
        image = (path.parent / fr["file_path"]).resolve()
        if not image.suffix and not image.exists():  # instant-ngp often omits ".png"
            image = image.with_suffix(".png")
        if not image.exists():
            log.warning("%s: frame %d image %s is missing; skipped", path, i, image)
            continue
        get = lambda k, d=None: fr.get(k, meta.get(k, d))  # per-frame values override global ones
        model = get("camera_model", "OPENCV").upper()
        w, h = get("w"), get("h")
        if w is None or h is None:
            w, h = _image_size(image)
        try:
            c2w_gl = np.asarray(fr["transform_matrix"], np.float64)
        except (KeyError, ValueError):
            raise OdinError(f"frame {i} has no valid transform_matrix", path) from None
        c2w = cv.opencv_from_opengl_c2w(c2w_gl)
        if model == "EQUIRECTANGULAR":
            frames.append(PosedFrame(image, c2w, int(w), int(h), None, "EQUIRECTANGULAR", fr.get("time")))
            continue
        fx = get("fl_x")
        if fx is None and get("camera_angle_x") is not None:
            fx = 0.5 * w / math.tan(0.5 * get("camera_angle_x"))
        if fx is None:
            raise OdinError(f"frame {i}: no focal length (fl_x or camera_angle_x)", path)
        fy = get("fl_y")
        if fy is None:
            fy = 0.5 * h / math.tan(0.5 * get("camera_angle_y")) if get("camera_angle_y") is not None else fx
        K = cv.Intrinsics(float(fx), float(fy), float(get("cx", w / 2)), float(get("cy", h / 2)), int(w), int(h))
        frames.append(PosedFrame(image, c2w, int(w), int(h), K, "PINHOLE", fr.get("time")))
    aabb = meta.get("odin_aabb")
    return PosedScene(frames, path, aabb=None if aabb is None else (aabb[0], aabb[1]))


def write_transforms(scene: PosedScene, path: str | Path) -> Path:
    """Write a nerfstudio transforms.json (OpenGL axes, per-frame intrinsics, relative paths)."""
    path = Path(path)
    frames = []
    for f in scene.frames:
        entry = {"file_path": str(Path(f.image_path).resolve().relative_to(path.parent.resolve()))
                 if Path(f.image_path).resolve().is_relative_to(path.parent.resolve()) else str(f.image_path),
                 "transform_matrix": cv.opengl_from_opencv_c2w(f.c2w).tolist(), "w": f.width, "h": f.height}
        if f.is_equirect:
            entry["camera_model"] = "EQUIRECTANGULAR"
        else:
            K = f.intrinsics
            entry.update(camera_model="OPENCV", fl_x=K.fx, fl_y=K.fy, cx=K.cx, cy=K.cy)
        if f.time is not None:
            entry["time"] = f.time
        frames.append(entry)
    meta = {"frames": frames, "odin_convention": "transform_matrix: camera-to-world, OpenGL camera axes"}
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


def load_scene(path: str | Path) -> PosedScene:
    """Any supported posed scene: transforms.json (file or folder), LLFF folder, synthetic world."""
    path = Path(path)
    if not path.exists():
        raise OdinError("scene not found", path)
    if path.is_file():
        return load_transforms(path)
    if (path / "transforms.json").exists():
        return load_transforms(path / "transforms.json")
    if (path / "poses_bounds.npy").exists():
        return load_llff(path)
    if (path / "scene.json").exists() and (path / "cameras.json").exists():
        return load_synthetic_world(path)
    raise OdinError("not a scene: expected transforms.json, poses_bounds.npy or a synthetic world", path)


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


def load_camera_path(path: str | Path) -> CameraPath:
    path = Path(path)
    meta = _read_json(path)
    cams = meta.get("camera_path")
    if not cams:
        raise OdinError("no 'camera_path' entries", path)
    kind = meta.get("camera_type", "perspective")
    if kind not in ("perspective", "equirectangular"):
        raise OdinError(f"camera_type {kind!r} not supported (perspective, equirectangular)", path)
    c2ws, fovs = [], []
    for i, cam in enumerate(cams):
        m = np.asarray(cam.get("camera_to_world", []), np.float64)
        if m.size not in (12, 16) or not np.all(np.isfinite(m)):
            raise OdinError(f"camera {i}: camera_to_world must be 12 or 16 finite numbers", path)
        c2ws.append(cv.opencv_from_opengl_c2w(m.reshape(-1, 4)))
        fovs.append(float(cam.get("fov", 50.0)))
    return CameraPath(kind, int(meta.get("render_width", 512)), int(meta.get("render_height", 512)),
                      float(meta.get("fps", 24)), c2ws, fovs)


def write_camera_path(path: str | Path, c2ws, width: int, height: int, fov_y_deg: float = 60.0, fps: float = 24.0,
                      camera_type: str = "perspective") -> Path:
    path = Path(path)
    cams = [{"camera_to_world": cv.opengl_from_opencv_c2w(np.asarray(c, np.float64)).reshape(-1).tolist(),
             "fov": fov_y_deg, "aspect": width / height} for c in c2ws]
    atomic_write_json(path, {"camera_type": camera_type, "render_width": width, "render_height": height,
                             "fps": fps, "seconds": len(cams) / fps, "camera_path": cams})
    return path
