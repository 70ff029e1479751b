"""A family of rooms that reuse object types: the benchmark of "codes recur across scenes".

An object *type* is a shape (kind and size) with a texture; every room of a family draws its
objects from the family's types (each type at most once per room), in its own layout, with its
own lighting, room textures and camera path. An object's id in the id maps is its type id
(1..n_types; 0 = the room), so the GT ids of different rooms mean the same thing and one
object type can be followed across rooms.
"""
from __future__ import annotations

import math

import numpy as np

from ingest.synth.scene import ROOM_TEXTURES, TEXTURES, Primitive, Scene, rotated_room_textures

# Textures for object types: each type has its own photograph and none is a room texture. Pixel
# colours alone still do not tell the types apart: photographs share colours with each other and
# with the room (k-means of the true held-out pixel colours of bench/nrc_objects.py's family
# scores FG-ARI 0.14: its "RGB k-means" row).
TYPE_TEXTURES = tuple(t for t in TEXTURES if t not in ROOM_TEXTURES.values())
MAX_TYPES = len(TYPE_TEXTURES)
# Coloured types (``coloured=True``): each type's photograph in its own saturated colour, in grey
# rooms, so colour tells the types apart (k-means of the true held-out pixel colours: FG-ARI 0.46 on
# bench/nrc_objects.py --coloured, 0.14 without): where codes that follow appearance could find them.
TYPE_COLOURS = ((0.95, 0.25, 0.2), (0.25, 0.85, 0.3), (0.25, 0.4, 0.95), (0.95, 0.85, 0.2), (0.85, 0.3, 0.85),
                (0.2, 0.85, 0.85))
ROOM_GREY = (0.85, 0.85, 0.85)


def object_types(seed: int, n_types: int, coloured: bool = False) -> list[Primitive]:
    """The family's types as primitives at the origin (id = type id 1..n_types); ``coloured``:
    each in its own colour of ``TYPE_COLOURS``."""
    limit = len(TYPE_COLOURS) if coloured else MAX_TYPES
    if not 1 <= n_types <= limit:
        raise ValueError(f"n_types must be in [1, {limit}]{' with coloured types' if coloured else ''}, got {n_types}")
    rng = np.random.default_rng(seed + 50_000)
    textures = list(TYPE_TEXTURES)
    rng.shuffle(textures)
    types = []
    for i in range(n_types):
        kind = ("box", "sphere", "cylinder")[i % 3]
        # Larger than make_scene's objects: in a 64-pixel-high panorama they still cover pixels.
        if kind == "box":
            size = tuple(float(s) for s in rng.uniform([0.5, 0.6, 0.5], [0.75, 0.9, 0.75]))
        elif kind == "sphere":
            size = (float(rng.uniform(0.55, 0.7)),)
        else:
            size = (float(rng.uniform(0.4, 0.55)), float(rng.uniform(0.7, 1.0)))
        types.append(Primitive(id=i + 1, kind=kind, center=(0.0, 0.0, 0.0), size=size, texture=textures[i],
                               tint=TYPE_COLOURS[i] if coloured else None))
    return types


def _footprint(prim: Primitive) -> float:
    return math.hypot(prim.size[0], prim.size[2]) if prim.kind == "box" else prim.size[0]


def family_room(seed: int, room: int, n_types: int, n_objects: int, keep_out_radius: float = 2.0,
                floor_y: float = 1.3, ceiling_y: float = -1.8, coloured: bool = False) -> Scene:
    """Room ``room`` of the family ``seed``: ``n_objects`` distinct types placed at random outside
    the camera's keep-out disc, in a room just large enough (objects near the camera cover
    pixels); consecutive rooms share types (a window sliding by ``n_objects // 2`` over them),
    so with ``n_objects >= n_types / 2`` every type recurs within three rooms. ``coloured``: see
    ``TYPE_COLOURS``."""
    half_x, half_z = keep_out_radius + 2.0, keep_out_radius + 1.8
    types = object_types(seed, n_types, coloured)
    if not 1 <= n_objects <= n_types:
        raise ValueError(f"a family room holds 1..{n_types} objects (one per type), got {n_objects}")
    rng = np.random.default_rng([seed, room])
    chosen = [(room * n_objects // 2 + j) % n_types for j in range(n_objects)]
    placed: list[tuple[float, float, float]] = []
    objects = []
    for t in chosen:
        proto = types[t]
        radius = _footprint(proto)
        for _ in range(500):
            x = rng.uniform(-half_x + radius + 0.2, half_x - radius - 0.2)
            z = rng.uniform(-half_z + radius + 0.2, half_z - radius - 0.2)
            if math.hypot(x, z) >= keep_out_radius + radius and \
                    all(math.hypot(x - px, z - pz) > radius + pr + 0.3 for px, pz, pr in placed):
                break
        else:
            raise ValueError(f"could not place {n_objects} objects in room {room}")
        placed.append((x, z, radius))
        half_height = proto.size[1] if proto.kind in ("box", "cylinder") else proto.size[0]
        objects.append(Primitive(id=proto.id, kind=proto.kind, center=(float(x), float(floor_y - half_height), float(z)),
                                 size=proto.size, yaw=float(rng.uniform(0, math.pi)) if proto.kind == "box" else 0.0,
                                 texture=proto.texture, tint=proto.tint))
    # Each room its own light and its own arrangement of the room's photographs.
    light = (float(rng.uniform(-0.6, 0.6)), 1.0, float(rng.uniform(-0.6, 0.6)))
    return Scene(half_x=half_x, half_z=half_z, floor_y=floor_y, ceiling_y=ceiling_y, objects=objects,
                 room_textures=rotated_room_textures(room) if room else dict(ROOM_TEXTURES), light_direction=light,
                 room_tint=ROOM_GREY if coloured else None)
