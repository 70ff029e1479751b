"""Meshes from a trained field: marching cubes on density, vertex colours from the field,
optional quadric decimation (``fast_simplification``; a target face count, which it may stop
above on meshes with many open boundaries), and per-code meshes (one object per active code).

The grid covers the scene's foreground cube (center +- radius, world units) unless bounds are
given. The default iso-level is the density at which one rendering step is half opaque, so
the surface is where the renderer itself sees it.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ingest.atomic import atomic_path
from ingest.errors import OdinError
from nrc.field import NRCModel
from nrc.rendering import autocast_for

MESH_SUFFIXES = (".ply", ".glb", ".obj")


def default_level(model: NRCModel, scene: int = 0) -> float:
    return -math.log(0.5) / model.encoders[scene].sample_spacing(model.config.sampler.uniform_samples)


@torch.no_grad()
def sample_grid(model: NRCModel, scene: int, resolution: int, lo: np.ndarray, hi: np.ndarray,
                chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """Density (R,R,R) and hard code index (R,R,R) at the vertices of a world-space grid."""
    model.eval()
    device = next(model.parameters()).device
    encoder = model.encoders[scene]
    axes = [torch.linspace(float(lo[i]), float(hi[i]), resolution, device=device) for i in range(3)]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    sigma, index = [], []
    for i in range(0, len(points), chunk):
        with autocast_for(device, model.config.train.mixed_precision):
            field = model.query(scene, encoder.normalise(points[i:i + chunk]), None)
        sigma.append(field.sigma.float().cpu())
        index.append(field.assignment.index.cpu())
    shape = (resolution,) * 3
    return torch.cat(sigma).numpy().reshape(shape), torch.cat(index).numpy().reshape(shape)


def marching_cubes(volume: np.ndarray, level: float, lo: np.ndarray, hi: np.ndarray):
    """trimesh.Trimesh of the ``level`` iso-surface, or None if the volume never crosses it."""
    import trimesh
    from skimage.measure import marching_cubes as skimage_marching_cubes

    if not (volume.min() < level < volume.max()):
        return None
    spacing = tuple((hi - lo) / (np.array(volume.shape) - 1))
    verts, faces, _, _ = skimage_marching_cubes(volume, level=level, spacing=spacing)
    # Density rises into matter: flip so normals point out of it (towards the viewer).
    return trimesh.Trimesh(verts + lo, faces[:, ::-1], process=False)


@torch.no_grad()
def vertex_colours(model: NRCModel, scene: int, vertices: np.ndarray, eye: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """(V, 4) uint8 colours of the field seen from ``eye`` (where the cameras were)."""
    device = next(model.parameters()).device
    encoder = model.encoders[scene]
    v = torch.as_tensor(vertices, dtype=torch.float32, device=device)
    dirs = torch.nn.functional.normalize(v - torch.as_tensor(eye, dtype=torch.float32, device=device), dim=-1)
    rgb = []
    for i in range(0, len(v), chunk):
        with autocast_for(device, model.config.train.mixed_precision):
            rgb.append(model.query(scene, encoder.normalise(v[i:i + chunk]), dirs[i:i + chunk]).rgb.float().cpu())
    rgb = torch.cat(rgb).numpy() if rgb else np.zeros((0, 3))
    return np.concatenate([np.round(rgb * 255), np.full((len(rgb), 1), 255)], 1).astype(np.uint8)


def extract_meshes(model: NRCModel, scene: int = 0, resolution: int = 128, level: float | None = None,
                   bounds: tuple | None = None, per_code: bool = False,
                   decimate_faces: int | None = None) -> dict[str, "trimesh.Trimesh"]:
    """{"scene": mesh} or, with ``per_code``, {"code_03": mesh, ...} for every code with a surface."""
    frame = model.config.scenes[scene]
    center, radius = np.asarray(frame.center, float), float(frame.radius)
    lo, hi = (center - radius, center + radius) if bounds is None else map(np.asarray, bounds)
    user_level = level is not None
    level = default_level(model, scene) if level is None else float(level)
    sigma, index = sample_grid(model, scene, resolution, lo, hi)
    if not user_level and not (sigma.min() < level < sigma.max()):
        # A briefly trained field may never reach the principled level; a high quantile still
        # outlines what it has learned. Said loudly, because the surface then means less.
        fallback = float(np.quantile(sigma, 0.9))
        print(f"nrc export-mesh: no density reaches the default level {level:.3g}; "
              f"using the 90th-percentile density {fallback:.3g} instead (set --level to choose)", flush=True)
        level = fallback
    volumes = {"scene": sigma}
    if per_code:
        volumes = {f"code_{k:02d}": np.where(index == k, sigma, 0.0) for k in np.unique(index)}
    meshes = {}
    for name, volume in volumes.items():
        mesh = marching_cubes(volume, level, lo, hi)
        if mesh is None or len(mesh.faces) == 0:
            continue
        if decimate_faces and len(mesh.faces) > decimate_faces:
            mesh = mesh.simplify_quadric_decimation(face_count=decimate_faces)
        mesh.visual.vertex_colors = vertex_colours(model, scene, np.asarray(mesh.vertices), center)
        meshes[name] = mesh
    return meshes


def write_meshes(meshes: dict, out: str | Path, per_code: bool) -> list[Path]:
    """One file (a scene of named objects for .glb/.obj; ``stem_code_XX.ply`` files for .ply)."""
    import trimesh

    out = Path(out)
    if out.suffix.lower() not in MESH_SUFFIXES:
        raise OdinError(f"mesh format must be one of {MESH_SUFFIXES}", out)
    if per_code and out.suffix.lower() == ".ply":
        targets = {out.with_name(f"{out.stem}_{name}.ply"): mesh for name, mesh in meshes.items()}
    elif per_code:
        targets = {out: trimesh.Scene(geometry=meshes)}
    else:
        targets = {out: next(iter(meshes.values()))}
    for path, obj in targets.items():
        with atomic_path(path) as tmp:
            obj.export(tmp, file_type=path.suffix.lower()[1:])
    return list(targets)


def export_mesh(run_dir: str | Path, out: str | Path, *, resolution: int = 128, level: float | None = None,
                per_code: bool = False, decimate_faces: int | None = None, scene: int = 0,
                device: str = "cpu") -> list[Path]:
    from nrc.checkpoint import load_run

    if Path(out).suffix.lower() not in MESH_SUFFIXES:
        raise OdinError(f"mesh format must be one of {MESH_SUFFIXES}", out)
    model, config = load_run(run_dir, device)
    config.check_scene(scene)
    meshes = extract_meshes(model, scene, resolution, level, None, per_code, decimate_faces)
    if not meshes:
        raise OdinError(f"no surface at density level {level or default_level(model, scene):.3g}; try a lower --level", run_dir)
    return write_meshes(meshes, out, per_code)
