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
    frame: int = 0  # capture moment: views of one 360° frame share it (and their camera centre)


@dataclass
class SceneData:
    source: Path
    views: list[View]
    aabb: tuple[np.ndarray, np.ndarray] | None = None
    near_far: tuple[float, float] | None = None
    synthetic_world: Path | None = None
    points: np.ndarray | None = None  # (N, 3) sparse SfM points (points.ply beside transforms.json)
    all_frames: list[int] | None = None  # every capture moment of the scene, when only some views are loaded
    cameras: list[np.ndarray] | None = None  # (4, 4) c2w of every view, loaded or not
    perspective: bool = True

    def frames(self) -> list[int]:
        return list(self.all_frames) if self.all_frames is not None else sorted({v.frame for v in self.views})

    def split_frames(self, holdout_every: int) -> tuple[list[int], list[int]]:
        """(train frame ids, held-out frame ids): every ``holdout_every``-th capture moment is held
        out whole (LLFF/nerfstudio: k = 8, frames 0, 8, 16, ...), so no held-out pixel's ray was
        seen from the same place at the same time; fewer than 2 frames: nothing is held out."""
        frames = self.frames()
        if holdout_every <= 0 or len(frames) < 2:
            return frames, []
        return ([f for i, f in enumerate(frames) if i % holdout_every],
                [f for i, f in enumerate(frames) if i % holdout_every == 0])

    def split(self, holdout_every: int) -> tuple[list[View], list[View]]:
        """(train views, held-out views) of :meth:`split_frames`."""
        _, held = self.split_frames(holdout_every)
        held = set(held)
        return [v for v in self.views if v.frame not in held], [v for v in self.views if v.frame in held]


def is_synthetic_world(path: Path) -> bool:
    return path.is_dir() and (path / "scene.json").exists() and (path / "cameras.json").exists()


PARTS = ("all", "train", "held_out")


def wanted_frames(frames: list[int], holdout_every: int | None, part: str) -> set[int]:
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}, got {part!r}")
    if part == "all" or holdout_every is None:
        return set(frames)
    train, held = SceneData(Path(), [], all_frames=frames).split_frames(holdout_every)
    return set(train if part == "train" else held)


def load_scene_data(path: str | Path, image_height: int | None = None, holdout_every: int | None = None,
                    part: str = "all") -> SceneData:
    """Views of the scene at ``path`` (with ``part`` "train" or "held_out": only those of the
    split by ``holdout_every``, the others' images are never read); one-line OdinError for
    anything unusable."""
    path = Path(path)
    if not path.exists():
        raise OdinError("scene not found", path)
    if is_synthetic_world(path):
        return _load_synthetic(path, image_height, holdout_every, part)
    from correspondence.nerfstudio import load_scene

    scene = load_scene(path)
    moments = capture_moments(scene.frames)
    wanted = wanted_frames(sorted(set(moments)), holdout_every, part)
    views = []
    for i, frame in enumerate(scene.frames):
        if moments[i] not in wanted:
            continue
        rgb = _read_rgb(frame.image_path)
        h, w = rgb.shape[:2]
        if (w, h) != (frame.width, frame.height):
            raise OdinError(f"image is {w}x{h} but its camera says {frame.width}x{frame.height}", frame.image_path)
        camera = Camera.equirect(frame.c2w, h) if frame.is_equirect else Camera.perspective(frame.c2w, frame.intrinsics)
        if frame.is_equirect and w != 2 * h:
            raise OdinError(f"equirectangular image must be 2:1, got {w}x{h}", frame.image_path)
        if image_height and image_height != h:
            camera, rgb = _resized(camera, rgb, image_height)
        valid = None if frame.mask_path is None else _read_mask(frame.mask_path, rgb.shape[1], rgb.shape[0])
        views.append(View(frame.image_path.stem, camera, rgb, frame=moments[i], valid=valid))
    aabb = None if scene.aabb is None else (np.asarray(scene.aabb[0], float), np.asarray(scene.aabb[1], float))
    from nrc.framing import read_points

    points = read_points(scene.source.parent / "points.ply") if scene.source.is_file() else None
    # The path given (so eval can reload it) and every camera: framing looks at all of them.
    return SceneData(path, views, aabb, scene.near_far, points=points, all_frames=sorted(set(moments)),
                     cameras=[f.c2w for f in scene.frames], perspective=not any(f.is_equirect for f in scene.frames))


def capture_moments(frames) -> list[int]:
    """Capture-moment id per posed frame, numbered in capture order: frames with the same
    ``time`` (the 8 views ``odin reconstruct`` cuts from one 360° frame) share one; without
    times, views from the same camera centre do (a rig's views of one instant); else each
    image is its own moment."""
    if all(f.time is not None for f in frames):
        keys = [float(f.time) for f in frames]
    else:
        centers = np.stack([f.c2w[:3, 3] for f in frames])
        scale = max(float(np.abs(centers - centers.mean(0)).max()), 1e-9)
        keys = [tuple(np.round(c / (1e-6 * scale)).astype(np.int64)) for c in centers]
    order = sorted(set(keys)) if isinstance(keys[0], float) else list(dict.fromkeys(keys))
    rank = {k: i for i, k in enumerate(order)}
    return [rank[k] for k in keys]


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise OdinError("image missing", path) from None
    except (UnidentifiedImageError, OSError) as e:
        raise OdinError(f"unreadable image ({e})", path) from None


def _read_mask(path: Path, width: int, height: int) -> np.ndarray:
    """nerfstudio's ``mask_path`` (non-zero = use the pixel: the rig and uncovered lens corners are not)
    at the view's size."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mask = np.asarray(im.convert("L").resize((width, height), Image.NEAREST))
    except (OSError, UnidentifiedImageError) as e:
        raise OdinError(f"cannot read the mask ({e.__class__.__name__})", path) from None
    return mask > 0


def _resized(camera: Camera, rgb: np.ndarray, height: int) -> tuple[Camera, np.ndarray]:
    from PIL import Image

    s = height / camera.height
    width = 2 * height if camera.intrinsics is None else int(round(camera.width * s))
    rgb = np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))
    if camera.intrinsics is None:
        return Camera.equirect(camera.c2w, height), rgb
    return Camera.perspective(camera.c2w, camera.intrinsics.scaled(width / camera.width, height / camera.height)), rgb


def _load_synthetic(path: Path, image_height: int | None, holdout_every: int | None = None,
                    part: str = "all") -> SceneData:
    from ingest.synth import SyntheticWorld

    world = SyntheticWorld(path)
    if len(world) == 0:
        raise OdinError("synthetic world has no frames", path / "cameras.json")
    bad = [i for i, p in enumerate(world.poses) if not np.all(np.isfinite(p))]
    if bad:
        raise OdinError(f"pose of frame {bad[0]} contains NaN/inf", path / "cameras.json")
    h = image_height or world.config.height
    moving = np.array([o.id for o in world.scene.objects if o.moving], dtype=np.uint8)
    wanted = wanted_frames(list(range(len(world))), holdout_every, part)
    views = []
    for i in sorted(wanted):
        r = world.render(i, h)
        # A camera integrates light over each pixel: average a 2x2 supersampled render rather
        # than point-sample the textures (which aliases into noise no field can predict).
        fine = world.render(i, 2 * h).rgb.astype(np.float32).reshape(h, 2, 2 * h, 2, 3).mean((1, 3))
        views.append(View(f"frame_{i:06d}", Camera.equirect(world.poses[i], h), np.round(fine).astype(np.uint8),
                          r.depth, r.ids, ~np.isin(r.ids, moving), frame=i))
    lo, hi = world.scene.bounds
    return SceneData(path, views, (np.asarray(lo, float), np.asarray(hi, float)), synthetic_world=path,
                     all_frames=list(range(len(world))), cameras=list(world.poses), perspective=False)


def auto_scene_frame(data: SceneData, radius: float | None = None,
                     center: tuple[float, float, float] | None = None) -> SceneFrame:
    """Normalisation of a scene (see ``nrc.framing``); ``center``/``radius`` override it."""
    from nrc.framing import frame_scene

    if data.cameras is not None:
        c2ws, perspective = np.stack(data.cameras), data.perspective
    else:
        c2ws = np.stack([v.camera.c2w for v in data.views])
        perspective = all(v.camera.intrinsics is not None for v in data.views)
    framing = frame_scene(c2ws, perspective, data.points, data.near_far, data.aabb)
    c = np.asarray(center if center is not None else framing.center, np.float64)
    r = float(radius or framing.radius)
    if not np.isfinite(r) or r <= 0:
        raise OdinError(f"scene radius must be positive, got {r}", data.source)
    if c.shape != (3,) or not np.all(np.isfinite(c)):
        raise OdinError(f"scene centre must be 3 finite numbers, got {c.tolist()}", data.source)
    # Cameras outside the foreground cube see it through the contracted shell: sample uniformly
    # in distance until the far side of the cube, not only one radius deep.
    reach = float(np.median(np.linalg.norm(c2ws[:, :3, 3] - c, axis=1))) / r
    linear_until = 1.0 if framing.kind in ("box", "inside-out") else max(1.0, reach + 1.0)
    far = None if framing.far is None else 1.2 * framing.far
    near = None if framing.near is None else 0.9 * framing.near
    return SceneFrame(str(data.source), [float(x) for x in c], r, near, far, linear_until)


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


def scene_batches(banks: list[RayBank], n_rays: int, generator: torch.Generator) -> list[tuple]:
    """A ray batch per scene, ``n_rays`` split evenly (scene-balanced, whatever the scenes' sizes)."""
    share = max(1, n_rays // len(banks))
    return [bank.sample(share, generator) for bank in banks]
