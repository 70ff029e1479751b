"""Generate and load a synthetic 360° world: video + exact per-frame ground truth.

Folder layout written by :func:`generate` (``odin synth --out DIR``):

    video.mp4            H.264 equirectangular video (yuv420p), frame k at time k / fps
    scene.json           the scene (room, objects, textures) and the generation config
    cameras.json         per frame: index, time, shot, 4x4 camera-to-world pose (``ingest.conventions``)
    gt/frame_%06d.npz    per frame: ``depth`` (H, W) float32 range, ``ids`` (H, W) uint8 (0 = room)
    meshes/*.ply         the room and each object as triangle meshes at time 0 (trimesh)

With ``cut_at`` the clip jumps at that time to a second room (``scene_after_cut`` in
scene.json: other objects, the room's textures on other faces, another camera path): frames
from then on are shot 1 and their poses live in that room's own world frame. With ``rig_box``
a box rides along with the camera (``Scene.rig``, id ``RIG_ID`` in the id maps); it is not in
``meshes/`` since it is not part of the world.

The folder is built under a temporary name and renamed into place at the end, so a killed
run leaves no half-written world; re-running with the same config is a no-op.
"""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ingest.atomic import atomic_write_json, temp_dir
from ingest.errors import OdinError
from ingest.media import write_mp4
from ingest.synth.camera_path import CameraPathConfig, camera_to_world
from ingest.synth.family import TYPE_COLOURS, family_room
from ingest.synth.render import Render, render_equirect
from ingest.synth.scene import Primitive, Scene, make_scene, rig_box, rotated_room_textures


@dataclass
class SynthConfig:
    seconds: float = 8.0
    fps: float = 10.0
    width: int = 1024  # equirectangular width; height = width / 2
    seed: int = 0
    n_objects: int = 6
    moving_object: bool = False
    rig_box: bool = False  # a textured box fixed below/in front of the camera (a rig to mask)
    cut_at: float | None = None  # seconds: jump to another room here (a shot cut)
    crf: int = 16
    keyframe_seconds: float = 2.0  # GOP length, like typical uploaded 360° video
    path: CameraPathConfig = field(default_factory=CameraPathConfig)
    # A room of a family that reuses object types (see ingest.synth.family): object ids are type ids.
    n_types: int | None = None
    room: int = 0
    coloured_types: bool = False  # each type in its own colour, in grey rooms (ingest.synth.family.TYPE_COLOURS)

    def __post_init__(self):
        if self.width < 16 or self.width % 4:
            raise OdinError(f"must be a multiple of 4 and >= 16, got {self.width}", "--width")
        for flag, value in (("--seconds", self.seconds), ("--fps", self.fps)):
            if not value > 0 or not math.isfinite(value):
                raise OdinError(f"must be a positive number, got {value}", flag)
        if self.cut_at is not None and not (0 < self.cut_at < self.seconds):
            raise OdinError(f"must lie inside the clip (0, {self.seconds}) s, got {self.cut_at}", "--cut-at")
        if self.n_types is not None and (self.cut_at is not None or self.moving_object):
            # Ids are type ids in a family: a second room or an extra moving object would break that.
            raise OdinError("a family room takes neither --cut-at nor --moving-object", "--types")
        if self.coloured_types and not (self.n_types is not None and self.n_types <= len(TYPE_COLOURS)):
            raise OdinError(f"needs a family of at most {len(TYPE_COLOURS)} types (--types M), got {self.n_types}",
                            "--coloured-types")

    @property
    def height(self) -> int:
        return self.width // 2

    @property
    def n_frames(self) -> int:
        return max(1, int(round(self.seconds * self.fps)))

    def shot_at(self, time: float) -> int:
        return int(self.cut_at is not None and time >= self.cut_at - 1e-9)

    def scenes(self) -> list[Scene]:
        """The room of each shot (one, or two with a cut)."""
        if self.n_types is not None:
            # Objects stay clear of the camera's loop.
            keep_out = max(self.path.radius_x, self.path.radius_z) + 0.4
            first = family_room(self.seed, self.room, self.n_types, self.n_objects, keep_out, coloured=self.coloured_types)
        else:
            first = make_scene(self.seed, self.n_objects, self.moving_object)
        scenes = [first]
        if self.cut_at is not None:
            second = make_scene(self.seed + 1, self.n_objects, self.moving_object)
            second.room_textures = rotated_room_textures(3)
            scenes.append(second)
        for scene in scenes:
            scene.rig = rig_box() if self.rig_box else None
        return scenes

    def pose(self, time: float) -> np.ndarray:
        """Camera-to-world at ``time``: each shot follows its own path (seed + shot) in its own room."""
        return camera_to_world(time, self.path, self.seed + self.shot_at(time) + 1009 * self.room)

    @classmethod
    def from_dict(cls, d: dict) -> "SynthConfig":
        return cls(**{**d, "path": CameraPathConfig(**d.get("path", {}))})


class SyntheticWorld:
    """A generated world on disk, with exact ground truth for any frame or camera."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        try:
            meta = json.loads((self.root / "scene.json").read_text())
            cams = json.loads((self.root / "cameras.json").read_text())
        except FileNotFoundError as e:
            raise OdinError("not a synthetic world folder (missing scene.json or cameras.json)", root) from e
        self.config = SynthConfig.from_dict(meta["config"])
        self.scene = Scene.from_json(meta["scene"])  # the first shot's room
        self.scenes = [self.scene] + ([Scene.from_json(meta["scene_after_cut"])] if "scene_after_cut" in meta else [])
        self.times = np.array([f["time"] for f in cams["frames"]], dtype=np.float64)
        self.shots = np.array([f.get("shot", 0) for f in cams["frames"]], dtype=np.int64)
        self.poses = np.array([f["c2w"] for f in cams["frames"]], dtype=np.float64)

    @property
    def video_path(self) -> Path:
        return self.root / "video.mp4"

    def __len__(self) -> int:
        return len(self.times)

    def pose_at(self, time: float) -> np.ndarray:
        """Exact camera-to-world pose at any time (the path is analytic, not interpolated)."""
        return self.config.pose(time)

    def render(self, index: int, height: int | None = None) -> Render:
        """Re-render frame ``index`` losslessly (at the video's size unless ``height`` is given)."""
        h = height or self.config.height
        return render_equirect(self.scenes[self.shots[index]], self.poses[index], h, 2 * h, float(self.times[index]))

    def rig_mask(self, height: int | None = None) -> np.ndarray | None:
        """(H, W) bool: the pixels the camera-attached rig covers (the same in every frame), or None."""
        if self.scene.rig is None:
            return None
        h = height or self.config.height
        return render_equirect(self.scene, np.eye(4), h, 2 * h).ids == self.scene.rig.id

    def shot_frames(self) -> list[list[int]]:
        """Frame indices per shot."""
        return [np.flatnonzero(self.shots == k).tolist() for k in range(len(self.scenes))]

    def ground_truth(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(depth range, object ids) of frame ``index`` as stored on disk."""
        with np.load(self.root / "gt" / f"frame_{index:06d}.npz") as z:
            return z["depth"], z["ids"]

    def frame_index_at(self, time: float) -> int:
        return int(np.argmin(np.abs(self.times - time)))


def object_mesh(prim: Primitive, time: float = 0.0):
    """trimesh.Trimesh of one primitive at ``time``, in world coordinates."""
    import trimesh

    from ingest import conventions as cv

    center = prim.center_at(time)
    if prim.kind == "box":
        T = cv.make_pose(cv.rotation_from_ypr(np.float64(prim.yaw), np.float64(0), np.float64(0)), center)
        return trimesh.creation.box(extents=2 * np.asarray(prim.size), transform=T)
    if prim.kind == "sphere":
        return trimesh.creation.icosphere(subdivisions=4, radius=prim.size[0]).apply_translation(center)
    r, hh = prim.size
    # trimesh's cylinder runs along z; ours stands along y.
    T = cv.make_pose(cv.rotation_from_ypr(np.float64(0), np.float64(math.pi / 2), np.float64(0)), center)
    return trimesh.creation.cylinder(radius=r, height=2 * hh, sections=96, transform=T)


def room_mesh(scene: Scene):
    import trimesh

    lo, hi = map(np.asarray, scene.bounds)
    room = trimesh.creation.box(extents=hi - lo).apply_translation((hi + lo) / 2)
    room.invert()  # normals face the inside, where the camera is
    return room


def generate(out_dir: str | Path, config: SynthConfig | None = None, progress: bool = True,
             overwrite: bool = False) -> SyntheticWorld:
    """Render the world described by ``config`` into ``out_dir`` (atomically; see module doc)."""
    from tqdm import tqdm

    config = config or SynthConfig()
    out_dir = Path(out_dir)
    meta_config = json.loads(json.dumps(asdict(config)))
    if (out_dir / "scene.json").exists() and (out_dir / "cameras.json").exists():
        existing = json.loads((out_dir / "scene.json").read_text()).get("config")
        if existing == meta_config and not overwrite:
            return SyntheticWorld(out_dir)
        if not overwrite:
            raise OdinError("already holds a different synthetic world (pass --overwrite to replace it)", out_dir)
    elif out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise OdinError("exists and is not empty; choose a new --out or pass --overwrite", out_dir)

    scenes = config.scenes()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir(out_dir.parent, f".{out_dir.name}.")  # the umask's mode, not mkdtemp's 0700
    try:
        (tmp / "gt").mkdir()
        (tmp / "meshes").mkdir()
        frames_meta = []

        def rendered_frames():
            for k in tqdm(range(config.n_frames), desc="synth", unit="frame", disable=not progress):
                t = k / config.fps
                c2w = config.pose(t)
                r = render_equirect(scenes[config.shot_at(t)], c2w, config.height, config.width, t)
                np.savez_compressed(tmp / "gt" / f"frame_{k:06d}.npz", depth=r.depth, ids=r.ids)
                frames_meta.append({"index": k, "time": t, "shot": config.shot_at(t), "c2w": c2w.tolist()})
                yield r.rgb

        write_mp4(tmp / "video.mp4", rendered_frames(), config.fps, config.crf,
                  keyframe_interval=max(1, int(round(config.keyframe_seconds * config.fps))))
        atomic_write_json(tmp / "cameras.json", {
            "convention": "camera-to-world, OpenCV axes (x right, y down, z forward); see ingest.conventions",
            "fps": config.fps, "width": config.width, "height": config.height, "frames": frames_meta})
        room_mesh(scenes[0]).export(tmp / "meshes" / "room.ply")
        for prim in scenes[0].objects:
            object_mesh(prim).export(tmp / "meshes" / f"object_{prim.id:02d}.ply")
        meta = {"config": meta_config, "scene": scenes[0].to_json()}
        if len(scenes) > 1:
            meta["scene_after_cut"] = scenes[1].to_json()
        atomic_write_json(tmp / "scene.json", meta)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.chmod(0o755)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return SyntheticWorld(out_dir)


def generate_family(out_dir: str | Path, config: SynthConfig, n_rooms: int, progress: bool = True,
                    overwrite: bool = False) -> list[SyntheticWorld]:
    """``n_rooms`` rooms of the family ``config.seed`` with ``config.n_types`` object types, one
    world each in ``out_dir/room_<k>`` (each generated atomically, as :func:`generate`)."""
    from dataclasses import replace

    if config.n_types is None:
        raise OdinError("a family needs a number of object types", "--types")
    if n_rooms < 1:
        raise OdinError(f"must be >= 1, got {n_rooms}", "--rooms")
    return [generate(Path(out_dir) / f"room_{k}", replace(config, room=k), progress, overwrite) for k in range(n_rooms)]
