"""Analytic ray caster for the synthetic world: exact depth, object ids and Lambertian colour.

Depth here is the *range*: the Euclidean distance from the camera centre along the unit ray
(``point = origin + depth * direction``), for equirectangular and perspective images alike.
Shading is view-independent (textured albedo times a directional + ambient light), so a
surface point has the same colour in every frame that sees it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ingest import conventions as cv
from ingest.synth.scene import Primitive, Scene

_EPS = 1e-6
_TINTS = np.array([[1.0, 0.55, 0.45], [0.45, 0.8, 0.5], [0.5, 0.6, 1.0], [1.0, 0.85, 0.4], [0.8, 0.5, 0.9], [0.5, 0.9, 0.9]])


@functools.lru_cache(maxsize=None)
def load_texture(name: str, tint: tuple[float, float, float] | None = None) -> np.ndarray:
    """(H, W, 3) float32 albedo in [0, 1] from a photograph that ships with scikit-image: its own
    colours (a grey one tinted by its name), or with ``tint`` its brightness times that colour."""
    import skimage.data
    from scipy.ndimage import gaussian_filter

    img = np.asarray(getattr(skimage.data, name)())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    img = img.astype(np.float32) / 255.0
    if tint is not None:
        grey = img[..., :3].mean(-1) if img.ndim == 3 else img
        img = grey[..., None] * np.asarray(tint, np.float32)[None, None, :]
    elif img.ndim == 3:
        img = img[..., :3]
    else:
        tint = _TINTS[sum(map(ord, name)) % len(_TINTS)]
        img = img[..., None] * tint[None, None, :].astype(np.float32)
    # A light blur stands in for mip-mapping: it tames aliasing when texels are smaller than pixels.
    img = gaussian_filter(img, sigma=(0.8, 0.8, 0))
    return np.ascontiguousarray(0.1 + 0.85 * img, dtype=np.float32)


def sample_texture(tex: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Bilinear lookup with wrap-around; (s, t) in texels (column, row), pixel centres at +0.5."""
    h, w = tex.shape[:2]
    s, t = s.astype(np.float32) - 0.5, t.astype(np.float32) - 0.5
    s0, t0 = np.floor(s), np.floor(t)
    fs, ft = (s - s0)[:, None], (t - t0)[:, None]
    c0, r0 = s0.astype(np.int32) % w, t0.astype(np.int32) % h
    c1, r1 = (c0 + 1) % w, (r0 + 1) % h
    flat = tex.reshape(-1, 3)
    r0, r1 = r0 * w, r1 * w
    top = flat[r0 + c0] * (1 - fs) + flat[r0 + c1] * fs
    bottom = flat[r1 + c0] * (1 - fs) + flat[r1 + c1] * fs
    return top * (1 - ft) + bottom * ft


# --------------------------------------------------------------------------- intersections
def _room_range(o, d, scene: Scene):
    """Distance to the room's inside walls (the camera is inside, so every ray exits)."""
    lo = np.array([-scene.half_x, scene.ceiling_y, -scene.half_z])
    hi = np.array([scene.half_x, scene.floor_y, scene.half_z])
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d > 0, (hi - o) / d, np.where(d < 0, (lo - o) / d, np.inf))
    axis = t.argmin(axis=1)
    rows = np.arange(len(t))
    face = axis + 3 * (d[rows, axis] > 0)  # 0..5 = x-, y-, z-, x+, y+, z+
    return t[rows, axis], face


def _yaw_matrix(yaw: float) -> np.ndarray:
    return cv.rotation_from_ypr(np.float64(yaw), np.float64(0), np.float64(0))


def _box_range(o, d, prim: Primitive, center):
    R = _yaw_matrix(prim.yaw)
    ol, dl = (o - center) @ R, d @ R  # into the box frame (R^T x, written as x @ R)
    h = np.asarray(prim.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-h - ol) / dl, (h - ol) / dl
    tn = np.nan_to_num(np.minimum(t1, t2), nan=-np.inf).max(axis=1)
    tf = np.nan_to_num(np.maximum(t1, t2), nan=np.inf).min(axis=1)
    return np.where((tn <= tf) & (tn > _EPS), tn, np.inf)


def _sphere_range(o, d, prim: Primitive, center):
    oc = o - center
    b = np.einsum("ij,ij->i", oc, d)
    c = np.einsum("ij,ij->i", oc, oc) - prim.size[0] ** 2
    disc = b * b - c
    t = -b - np.sqrt(np.maximum(disc, 0))
    return np.where((disc >= 0) & (t > _EPS), t, np.inf)


def _cylinder_range(o, d, prim: Primitive, center):
    r, hh = prim.size
    oc = o - center
    a = d[:, 0] ** 2 + d[:, 2] ** 2
    b = oc[:, 0] * d[:, 0] + oc[:, 2] * d[:, 2]
    c = oc[:, 0] ** 2 + oc[:, 2] ** 2 - r * r
    disc = b * b - a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-b - np.sqrt(np.maximum(disc, 0))) / a
    y_side = oc[:, 1] + t_side * d[:, 1]
    t_side = np.where((disc >= 0) & (a > 1e-12) & (t_side > _EPS) & (np.abs(y_side) <= hh), t_side, np.inf)
    best = t_side
    for cap_y in (-hh, hh):
        with np.errstate(divide="ignore", invalid="ignore"):
            t_cap = (cap_y - oc[:, 1]) / d[:, 1]
        px, pz = oc[:, 0] + t_cap * d[:, 0], oc[:, 2] + t_cap * d[:, 2]
        ok = np.isfinite(t_cap) & (t_cap > _EPS) & (px * px + pz * pz <= r * r)
        best = np.minimum(best, np.where(ok, t_cap, np.inf))
    return best


def _bounding_radius(prim: Primitive) -> float:
    return float(np.linalg.norm(prim.size)) if prim.kind != "sphere" else prim.size[0]


def _bounding_sphere_candidates(o, d, center, radius: float, shared_origin: bool) -> np.ndarray:
    """Indices of rays that pass within ``radius`` of ``center`` (the exact test comes after)."""
    if shared_origin:  # one camera centre: a matrix-vector product instead of per-ray dots
        oc = center - o[0]
        along = d @ oc
        miss2 = oc @ oc - along * along
    else:
        oc = center - o
        along = np.einsum("ij,ij->i", oc, d)
        miss2 = np.einsum("ij,ij->i", oc, oc) - along * along
    return np.flatnonzero((miss2 <= radius * radius * 1.0001) & (along > -radius))


_RANGE = {"box": _box_range, "sphere": _sphere_range, "cylinder": _cylinder_range}


# --------------------------------------------------------------------------- surfaces
def _room_surface(p, face):
    """Normals (pointing into the room) and (u, v) metres on the face, plus the face name."""
    axis, positive = face % 3, face >= 3
    n = np.zeros_like(p)
    n[np.arange(len(p)), axis] = np.where(positive, -1.0, 1.0)
    u = np.where(axis == 0, p[:, 2], p[:, 0])
    v = np.where(axis == 1, p[:, 2], p[:, 1])
    names = np.array(["wall_x-", "ceiling", "wall_z-", "wall_x+", "floor", "wall_z+"])
    return n, u, v, names[face]


def _object_surface(p, prim: Primitive, center):
    q = p - center
    if prim.kind == "sphere":
        n = q / prim.size[0]
        lon, lat = cv.lonlat_from_direction(n)
        return n, lon * prim.size[0], lat * prim.size[0]
    if prim.kind == "box":
        R = _yaw_matrix(prim.yaw)
        ql = q @ R
        h = np.asarray(prim.size)
        axis = np.abs(ql / h).argmax(axis=1)
        sign = np.sign(ql[np.arange(len(ql)), axis])
        nl = np.zeros_like(ql)
        nl[np.arange(len(ql)), axis] = sign
        # Shift each face's texture window so the six faces do not show the same patch.
        offset = (axis + 3 * (sign > 0)) * 0.61
        u = np.where(axis == 0, ql[:, 2], ql[:, 0]) + offset
        v = np.where(axis == 1, ql[:, 2], ql[:, 1]) + offset
        return nl @ R.T, u, v
    r, hh = prim.size
    radial = np.hypot(q[:, 0], q[:, 2])
    on_cap = (np.abs(np.abs(q[:, 1]) - hh) < 1e-7) & (radial < r - 1e-7)
    n = np.where(on_cap[:, None], np.stack([0 * q[:, 0], np.sign(q[:, 1]), 0 * q[:, 0]], 1),
                 np.stack([q[:, 0] / r, 0 * q[:, 0], q[:, 2] / r], 1))
    u = np.where(on_cap, q[:, 0], np.arctan2(q[:, 0], q[:, 2]) * r)
    v = np.where(on_cap, q[:, 2], q[:, 1])
    return n, u, v


@dataclass
class Hits:
    """Per-ray results of :func:`cast_rays`."""

    rgb: np.ndarray  # (N, 3) float32 in [0, 1]
    depth: np.ndarray  # (N,) float64 range along the unit ray
    ids: np.ndarray  # (N,) uint8 object id, 0 = room
    normals: np.ndarray  # (N, 3) world-frame unit normals facing the ray's side


def cast_rays(scene: Scene, origins: np.ndarray, directions: np.ndarray, time: float = 0.0) -> Hits:
    """Nearest surface along each world-frame ray; ``directions`` are normalised here."""
    shared_origin = np.size(origins) == 3 or bool(np.all(np.asarray(origins) == np.asarray(origins).reshape(-1, 3)[:1]))
    o = np.broadcast_to(np.asarray(origins, np.float64), np.shape(directions)).reshape(-1, 3)
    d = cv.normalize(np.asarray(directions, np.float64)).reshape(-1, 3)
    centers = [prim.center_at(time) for prim in scene.objects]
    ranges = np.full((len(o), 1 + len(scene.objects)), np.inf)
    ranges[:, 0], room_face = _room_range(o, d, scene)
    for k, (prim, center) in enumerate(zip(scene.objects, centers), start=1):
        # Objects cover a small part of the view: test a bounding sphere first, solve exactly only there.
        cand = _bounding_sphere_candidates(o, d, center, _bounding_radius(prim), shared_origin)
        if cand.size:
            ranges[cand, k] = _RANGE[prim.kind](o[cand], d[cand], prim, center)
    winner = ranges.argmin(axis=1)
    depth = ranges[np.arange(len(o)), winner]
    points = o + depth[:, None] * d
    rgb = np.zeros((len(o), 3), np.float32)
    normals = np.zeros((len(o), 3))
    ids = np.zeros(len(o), np.uint8)

    sel = winner == 0
    if sel.any():
        n, u, v, face = _room_surface(points[sel], room_face[sel])
        normals[sel] = n
        tpm = scene.room_texels_per_meter
        block = np.zeros((sel.sum(), 3), np.float32)
        for name, tex_name in scene.room_textures.items():
            m = face == name
            if m.any():
                block[m] = sample_texture(load_texture(tex_name, scene.room_tint), u[m] * tpm, v[m] * tpm)
        rgb[sel] = block
    for k, (prim, center) in enumerate(zip(scene.objects, centers), start=1):
        sel = winner == k
        if not sel.any():
            continue
        n, u, v = _object_surface(points[sel], prim, center)
        normals[sel] = n
        ids[sel] = prim.id
        rgb[sel] = sample_texture(load_texture(prim.texture, prim.tint), u * prim.texels_per_meter, v * prim.texels_per_meter)

    light = cv.normalize(np.asarray(scene.light_direction, np.float64))
    lambert = np.clip(-(normals @ light), 0.0, 1.0).astype(np.float32)
    rgb *= (0.55 + 0.45 * lambert)[:, None]
    return Hits(rgb=np.clip(rgb, 0, 1), depth=depth, ids=ids, normals=normals)


# --------------------------------------------------------------------------- images
@dataclass
class Render:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 range
    ids: np.ndarray  # (H, W) uint8


def _render(scene, c2w, dirs_cam, time) -> Render:
    h, w = dirs_cam.shape[:2]
    origins, dirs = cv.rays_world(np.asarray(c2w, np.float64), dirs_cam.reshape(-1, 3))
    hits = cast_rays(scene, origins, dirs, time)
    if scene.rig is not None:
        _overlay_rig(hits, scene, np.asarray(c2w, np.float64)[:3, :3], dirs_cam.reshape(-1, 3))
    rgb = np.round(hits.rgb * 255).astype(np.uint8).reshape(h, w, 3)
    return Render(rgb=rgb, depth=hits.depth.astype(np.float32).reshape(h, w), ids=hits.ids.reshape(h, w))


def _overlay_rig(hits: Hits, scene: Scene, R_c2w: np.ndarray, dirs_cam: np.ndarray) -> None:
    """Draw the camera-attached rig over ``hits`` (in place): traced in the camera frame, so it
    covers the same pixels whatever the pose; lit by the world's light like everything else."""
    rig = scene.rig
    d = cv.normalize(dirs_cam)
    center = np.asarray(rig.center, np.float64)
    t = _box_range(np.zeros_like(d), d, rig, center)
    sel = t < hits.depth
    if not sel.any():
        return
    n_cam, u, v = _object_surface(t[sel, None] * d[sel], rig, center)
    normals = n_cam @ R_c2w.T
    light = cv.normalize(np.asarray(scene.light_direction, np.float64))
    lambert = np.clip(-(normals @ light), 0.0, 1.0).astype(np.float32)
    rgb = sample_texture(load_texture(rig.texture), u * rig.texels_per_meter, v * rig.texels_per_meter)
    hits.rgb[sel] = np.clip(rgb * (0.55 + 0.45 * lambert)[:, None], 0, 1)
    hits.depth[sel], hits.ids[sel], hits.normals[sel] = t[sel], rig.id, normals


@functools.lru_cache(maxsize=8)
def _equirect_dirs(height: int, width: int) -> np.ndarray:
    return cv.equirect_directions(height, width)


def render_equirect(scene: Scene, c2w, height: int, width: int | None = None, time: float = 0.0) -> Render:
    """Equirectangular image (W = 2H unless given) seen from camera-to-world pose ``c2w``."""
    return _render(scene, c2w, _equirect_dirs(int(height), int(width or 2 * height)), time)


def render_perspective(scene: Scene, c2w, K: cv.Intrinsics, time: float = 0.0) -> Render:
    """Pinhole image with intrinsics ``K`` (depth is still the range along each ray)."""
    return _render(scene, c2w, cv.perspective_directions(K), time)


def range_to_z_depth(depth_range: np.ndarray, K: cv.Intrinsics) -> np.ndarray:
    """Convert a perspective range map to z-depth (distance along the optical axis)."""
    dirs = cv.perspective_directions(K)
    return depth_range / np.linalg.norm(dirs, axis=-1)

