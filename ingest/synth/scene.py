"""Procedural scene of the synthetic 360° world: a textured room plus primitive objects.

Axes follow ``ingest.conventions`` (y points down): the floor is the plane ``y = floor_y``
(> 0), the ceiling ``y = ceiling_y`` (< 0); the camera moves near ``y = 0``.
Object id 0 is the room (walls, floor, ceiling); objects are numbered 1..n.
Every object stands on the floor; the optional moving object slides back and forth along x.
The optional rig (``Scene.rig``) is a box in the *camera* frame: it rides along with the camera,
like a car body or a drone's arms, and covers the same equirect pixels in every frame.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

# Photographs that ship inside scikit-image (no download); grayscale ones get a colour tint.
TEXTURES = ("astronaut", "coffee", "chelsea", "rocket", "brick", "grass", "gravel",
            "camera", "moon", "immunohistochemistry", "hubble_deep_field", "coins", "page", "clock", "cat")
RIG_ID = 255  # object id of the camera-attached rig in the id maps
ROOM_TEXTURES = {"floor": "gravel", "ceiling": "moon", "wall_x+": "brick", "wall_x-": "grass",
                 "wall_z+": "hubble_deep_field", "wall_z-": "immunohistochemistry"}


@dataclass
class Primitive:
    """One object. ``size`` means: box half extents (x, y, z); sphere (r,); cylinder (r, half height)."""

    id: int
    kind: str  # "box" | "sphere" | "cylinder"
    center: tuple[float, float, float]
    size: tuple[float, ...]
    yaw: float = 0.0  # radians about +y (boxes only)
    texture: str = "astronaut"
    texels_per_meter: float = 256.0
    motion_amplitude: float = 0.0  # metres along +x, sinusoidal
    motion_period: float = 4.0  # seconds
    tint: tuple[float, float, float] | None = None  # albedo = the photograph's brightness x this colour

    def center_at(self, time: float) -> np.ndarray:
        c = np.array(self.center, dtype=np.float64)
        if self.motion_amplitude:
            c[0] += self.motion_amplitude * math.sin(2 * math.pi * time / self.motion_period)
        return c

    @property
    def moving(self) -> bool:
        return self.motion_amplitude != 0.0


@dataclass
class Scene:
    half_x: float
    half_z: float
    floor_y: float
    ceiling_y: float
    objects: list[Primitive] = field(default_factory=list)
    room_textures: dict = field(default_factory=lambda: dict(ROOM_TEXTURES))
    room_texels_per_meter: float = 128.0
    light_direction: tuple[float, float, float] = (0.35, 1.0, 0.25)  # direction light travels (downwards)
    rig: Primitive | None = None  # a box fixed in the camera frame (centre and size in camera axes)
    room_tint: tuple[float, float, float] | None = None  # as Primitive.tint, for every face of the room

    @property
    def extent(self) -> float:
        """Diagonal of the room: the length that scene-relative tolerances refer to."""
        return float(np.linalg.norm([2 * self.half_x, self.floor_y - self.ceiling_y, 2 * self.half_z]))

    @property
    def bounds(self) -> tuple[list[float], list[float]]:
        return [-self.half_x, self.ceiling_y, -self.half_z], [self.half_x, self.floor_y, self.half_z]

    def to_json(self) -> dict:
        d = asdict(self)
        d["extent"] = self.extent
        d["bounds"] = {"min": self.bounds[0], "max": self.bounds[1]}
        d["id_names"] = {0: "room", **{o.id: f"{o.kind}_{o.id}" for o in self.objects},
                         **({self.rig.id: "rig"} if self.rig else {})}
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Scene":
        d = {k: v for k, v in d.items() if k not in ("extent", "bounds", "id_names")}
        def colour(c):  # JSON lists back to the tuples the texture cache keys on
            return tuple(c) if c is not None else None

        def prim(o):
            return Primitive(**{**o, "center": tuple(o["center"]), "size": tuple(o["size"]), "tint": colour(o.get("tint"))})

        objects = [prim(o) for o in d.pop("objects")]
        rig = d.pop("rig", None)
        return cls(objects=objects, rig=prim(rig) if rig else None,
                   **{**d, "light_direction": tuple(d["light_direction"]), "room_tint": colour(d.get("room_tint"))})

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2)


def rig_box() -> Primitive:
    """A textured box below and in front of the camera (camera axes: y down, z forward), as a car's
    bonnet or a drone's landing gear would be: about 60° wide, centred 50° below the horizon."""
    return Primitive(id=RIG_ID, kind="box", center=(0.0, 0.36, 0.3), size=(0.26, 0.05, 0.16), texture="coffee",
                     texels_per_meter=700.0)


def rotated_room_textures(k: int) -> dict:
    """The room's textures moved round its six faces by ``k``: another room, same photographs."""
    names, textures = list(ROOM_TEXTURES), list(ROOM_TEXTURES.values())
    return {n: textures[(i + k) % len(textures)] for i, n in enumerate(names)}


def make_scene(seed: int = 0, n_objects: int = 6, moving_object: bool = False,
               half_x: float = 6.0, half_z: float = 5.0, floor_y: float = 1.5, ceiling_y: float = -2.0,
               keep_out_radius: float = 2.0) -> Scene:
    """A deterministic room with ``n_objects`` objects placed outside the camera's keep-out disc."""
    if n_objects < 0 or n_objects > 12:
        raise ValueError(f"n_objects must be in [0, 12], got {n_objects}")
    rng = np.random.default_rng(seed)
    kinds = ["box", "sphere", "cylinder"]
    textures = [t for t in TEXTURES if t not in ROOM_TEXTURES.values()]
    rng.shuffle(textures)
    placed: list[tuple[float, float, float]] = []  # (x, z, footprint radius)
    objects: list[Primitive] = []
    for i in range(n_objects):
        kind = kinds[i % 3]
        for _ in range(200):
            if kind == "box":
                size = tuple(rng.uniform([0.35, 0.3, 0.35], [0.8, 0.9, 0.8]))
                radius = math.hypot(size[0], size[2])
            elif kind == "sphere":
                size = (float(rng.uniform(0.35, 0.7)),)
                radius = size[0]
            else:
                size = (float(rng.uniform(0.25, 0.5)), float(rng.uniform(0.4, 1.0)))
                radius = size[0]
            x = rng.uniform(-half_x + radius + 0.2, half_x - radius - 0.2)
            z = rng.uniform(-half_z + radius + 0.2, half_z - radius - 0.2)
            if math.hypot(x, z) < keep_out_radius + radius:
                continue
            if all(math.hypot(x - px, z - pz) > radius + pr + 0.3 for px, pz, pr in placed):
                break
        else:
            raise ValueError(f"could not place {n_objects} objects in a {2*half_x}x{2*half_z} m room")
        placed.append((x, z, radius))
        half_height = size[1] if kind in ("box", "cylinder") else size[0]
        center = (float(x), float(floor_y - half_height), float(z))  # resting on the floor (y down)
        objects.append(Primitive(id=i + 1, kind=kind, center=center, size=tuple(float(s) for s in size),
                                 yaw=float(rng.uniform(0, math.pi)) if kind == "box" else 0.0,
                                 texture=textures[i % len(textures)]))
    if moving_object:
        # A sphere crossing the far side of the room: it breaks the static-scene epipolar geometry.
        r = 0.45
        objects.append(Primitive(id=len(objects) + 1, kind="sphere", center=(0.0, floor_y - r, -half_z + 1.2),
                                 size=(r,), texture="cat", motion_amplitude=min(2.5, half_x - 1.0), motion_period=3.0))
    return Scene(half_x=half_x, half_z=half_z, floor_y=floor_y, ceiling_y=ceiling_y, objects=objects)
