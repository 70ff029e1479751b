"""Training and evaluation views of a scene, and the bank of rays the trainer samples from.

Sources: a synthetic-world folder (lossless renders at any size, with GT depth and object
ids), or any posed scene ``correspondence.nerfstudio.load_scene`` reads (transforms.json,
LLFF). Equirectangular frames are used whole: every pixel is a ray, sampled in proportion to
the solid angle it covers (cos latitude), so the poles are not over-weighted.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ingest import conventions as cv
from ingest.errors import OdinError
from nrc.config import SceneFrame


@dataclass
class Camera:
    c2w: np.ndarray  # (4, 4) camera-to-world, ingest.conventions
    height: int
    width: int
    intrinsics: cv.Intrinsics | None = None  # None: equirectangular

    @classmethod
    def equirect(cls, c2w, height: int) -> "Camera":
        return cls(np.asarray(c2w, np.float64), int(height), 2 * int(height), None)

    @classmethod
    def perspective(cls, c2w, K: cv.Intrinsics) -> "Camera":
        return cls(np.asarray(c2w, np.float64), K.height, K.width, K)


def camera_rays(camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """World-frame (origins, unit directions), each (H*W, 3) float64, row-major pixel order."""
    if camera.intrinsics is None:
        dirs = cv.equirect_directions(camera.height, camera.width)
    else:
        dirs = cv.perspective_directions(camera.intrinsics)
    origins, directions = cv.rays_world(camera.c2w, dirs.reshape(-1, 3))
    return origins, directions


def pixel_solid_angle_weights(camera: Camera) -> np.ndarray:
    """(H*W,) relative solid angle per pixel: cos(latitude) for equirect, 1 for pinhole."""
    if camera.intrinsics is not None:
        return np.ones(camera.height * camera.width)
    lat = (0.5 - (np.arange(camera.height) + 0.5) / camera.height) * np.pi
    return np.repeat(np.cos(lat), camera.width)


@dataclass
class View:
    name: str
    camera: Camera
    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray | None = None  # (H, W) range along unit rays (synthetic worlds)
    ids: np.ndarray | None = None  # (H, W) object ids, 0 = room (synthetic worlds)
    valid: np.ndarray | None = None  # (H, W) bool; False = do not train or score (moving objects)


@dataclass
class SceneData:
    source: Path
    views: list[View]
    aabb: tuple[np.ndarray, np.ndarray] | None = None
    near_far: tuple[float, float] | None = None
    synthetic_world: Path | None = None

    def split(self, holdout_every: int) -> tuple[list[View], list[View]]:
        """(train, held-out); with fewer than 2 frames everything trains and nothing is held out."""
        if holdout_every <= 0 or len(self.views) < 2:
            return list(self.views), []
        held = [v for i, v in enumerate(self.views) if i % holdout_every == 0]
        return [v for i, v in enumerate(self.views) if i % holdout_every != 0], held


def is_synthetic_world(path: Path) -> bool:
    return path.is_dir() and (path / "scene.json").exists() and (path / "cameras.json").exists()


def load_scene_data(path: str | Path, image_height: int | None = None) -> SceneData:
    """Views of the scene at ``path``; one-line OdinError for anything unusable."""
    path = Path(path)
    if not path.exists():
        raise OdinError("scene not found", path)
    if is_synthetic_world(path):
        return _load_synthetic(path, image_height)
    from correspondence.nerfstudio import load_scene

    scene = load_scene(path)
    views = []
    for i, frame in enumerate(scene.frames):
        rgb = _read_rgb(frame.image_path)
        h, w = rgb.shape[:2]
        if (w, h) != (frame.width, frame.height):
            raise OdinError(f"image is {w}x{h} but its camera says {frame.width}x{frame.height}", frame.image_path)
        camera = Camera.equirect(frame.c2w, h) if frame.is_equirect else Camera.perspective(frame.c2w, frame.intrinsics)
        if frame.is_equirect and w != 2 * h:
            raise OdinError(f"equirectangular image must be 2:1, got {w}x{h}", frame.image_path)
        if image_height and image_height != h:
            camera, rgb = _resized(camera, rgb, image_height)
        views.append(View(frame.image_path.stem, camera, rgb))
    aabb = None if scene.aabb is None else (np.asarray(scene.aabb[0], float), np.asarray(scene.aabb[1], float))
    return SceneData(path, views, aabb, scene.near_far)  # the path given, so eval can reload it


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise OdinError("image missing", path) from None
    except (UnidentifiedImageError, OSError) as e:
        raise OdinError(f"unreadable image ({e})", path) from None


def _resized(camera: Camera, rgb: np.ndarray, height: int) -> tuple[Camera, np.ndarray]:
    from PIL import Image

    s = height / camera.height
    width = 2 * height if camera.intrinsics is None else int(round(camera.width * s))
    rgb = np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))
    if camera.intrinsics is None:
        return Camera.equirect(camera.c2w, height), rgb
    return Camera.perspective(camera.c2w, camera.intrinsics.scaled(width / camera.width, height / camera.height)), rgb


def _load_synthetic(path: Path, image_height: int | None) -> SceneData:
    from ingest.synth import SyntheticWorld

    world = SyntheticWorld(path)
    if len(world) == 0:
        raise OdinError("synthetic world has no frames", path / "cameras.json")
    bad = [i for i, p in enumerate(world.poses) if not np.all(np.isfinite(p))]
    if bad:
        raise OdinError(f"pose of frame {bad[0]} contains NaN/inf", path / "cameras.json")
    h = image_height or world.config.height
    moving = np.array([o.id for o in world.scene.objects if o.moving], dtype=np.uint8)
    views = []
    for i in range(len(world)):
        r = world.render(i, h)
        # A camera integrates light over each pixel: average a 2x2 supersampled render rather
        # than point-sample the textures (which aliases into noise no field can predict).
        fine = world.render(i, 2 * h).rgb.astype(np.float32).reshape(h, 2, 2 * h, 2, 3).mean((1, 3))
        views.append(View(f"frame_{i:06d}", Camera.equirect(world.poses[i], h), np.round(fine).astype(np.uint8),
                          r.depth, r.ids, ~np.isin(r.ids, moving)))
    lo, hi = world.scene.bounds
    return SceneData(path, views, (np.asarray(lo, float), np.asarray(hi, float)), synthetic_world=path)


def auto_scene_frame(data: SceneData, radius: float | None = None) -> SceneFrame:
    """Normalisation of a scene: a known box if there is one, else the cameras' spread.

    Inside-out 360° capture moves the camera little compared to the room, so the foreground
    cube is set to several times the camera spread; farther content lands in the contraction.
    """
    centers = np.stack([v.camera.c2w[:3, 3] for v in data.views])
    if data.aabb is not None:
        lo, hi = data.aabb
        center = (lo + hi) / 2
        auto = 1.05 * float(np.max(hi - lo)) / 2
    else:
        center = centers.mean(0)
        auto = max(4.0 * float(np.abs(centers - center).max()), data.near_far[0] if data.near_far else 0.0, 1e-3)
    r = float(radius or auto)
    if not np.isfinite(r) or r <= 0:
        raise OdinError(f"scene radius must be positive, got {r}", data.source)
    return SceneFrame(str(data.source), [float(c) for c in center], r)


class RayBank:
    """All training pixels of one scene as tensors; sampled by solid angle, reproducibly."""

    def __init__(self, views: list[View], device: torch.device | str = "cpu"):
        if not views:
            raise ValueError("no training views")
        origins, dirs, rgbs, weights = [], [], [], []
        for v in views:
            o, d = camera_rays(v.camera)
            w = pixel_solid_angle_weights(v.camera)
            if v.valid is not None:
                w = w * v.valid.reshape(-1)
            origins.append(o), dirs.append(d), rgbs.append(v.rgb.reshape(-1, 3)), weights.append(w)
        self.origins = torch.as_tensor(np.concatenate(origins), dtype=torch.float32, device=device)
        self.directions = torch.as_tensor(np.concatenate(dirs), dtype=torch.float32, device=device)
        self.rgb = torch.as_tensor(np.concatenate(rgbs), device=device).float() / 255.0
        w = torch.as_tensor(np.concatenate(weights), dtype=torch.float64)
        if float(w.sum()) <= 0:
            raise ValueError("every training pixel is masked out")
        self._cdf = (w.cumsum(0) / w.sum()).to(device)

    def __len__(self) -> int:
        return len(self.rgb)

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=generator.device).to(self._cdf.device)
        idx = torch.searchsorted(self._cdf, u).clamp_max(len(self) - 1)
        return self.origins[idx], self.directions[idx], self.rgb[idx]
