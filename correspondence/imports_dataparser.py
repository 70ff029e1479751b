"""nerfstudio's dataparser frame, where it trains, renders and saves camera paths.

nerfstudio's dataparser maps the poses of a transforms.json (OpenGL camera axes) by a 3x4 rigid
``transform`` and then multiplies their positions by ``scale``: ``x_dp = scale * (transform @ [x; 1])``.
It saves both in ``dataparser_transforms.json`` (in its run folder: copy it beside the scene's
transforms.json), with the transforms.json's ``applied_transform`` / ``applied_scale`` folded in.
Its viewer's ``camera_path.json`` and ``ns-render camera-path`` use the dataparser frame as is.

With its default options (orientation "up", centre "poses", auto scale) the transform is fixed by
the poses alone: the mean camera up (OpenGL +y) is turned onto +z by the smallest rotation, the mean
camera centre goes to the origin, and the largest |coordinate| of a centre becomes 1.
:func:`nerfstudio_default_dataparser` computes that, so a scene we write can carry the frame
nerfstudio will train it in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ingest import conventions as cv
from ingest.atomic import atomic_write_bytes, atomic_write_json
from ingest.errors import OdinError

DATAPARSER_NAME = "dataparser_transforms.json"
PREDICTED_NOTE = ("computed by odin for nerfstudio's defaults (orientation_method up, center_method poses, "
                  "auto_scale_poses, scale_factor 1); replace it with the one from your nerfstudio run if it differs")


@dataclass(frozen=True)
class Dataparser:
    """nerfstudio's frame of one scene: ``x_dp = scale * (transform @ [x; 1])``, x in the scene's world
    (the frame of its transforms.json). Camera axes stay OpenGL in that frame."""

    transform: np.ndarray  # (3, 4) rigid
    scale: float

    @classmethod
    def from_dict(cls, meta: dict, path: Path) -> "Dataparser":
        meta = meta if isinstance(meta, dict) else {}
        T = _matrix(meta.get("transform"))
        scale = meta.get("scale")
        if T is None or not cv.is_rotation(T[:3, :3], atol=1e-3):
            raise OdinError("'transform' must be a 3x4 rigid transform", path)
        if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise OdinError(f"'scale' must be a positive number, got {scale!r}", path)
        return cls(cv.make_pose(cv.project_to_rotation(T[:3, :3]), T[:3, 3])[:3], float(scale))

    def to_dict(self) -> dict:
        return {"transform": np.asarray(self.transform).tolist(), "scale": self.scale}

    def to_dataparser(self, c2w) -> np.ndarray:
        """OpenCV-axes camera-to-world in the scene's world -> nerfstudio's (OpenGL axes, dataparser frame)."""
        out = cv.as_4x4(self.transform) @ cv.opengl_from_opencv_c2w(np.asarray(c2w, np.float64))
        out[:3, 3] *= self.scale
        return out

    def from_dataparser(self, c2w_gl) -> np.ndarray:
        m = np.array(cv.as_4x4(np.asarray(c2w_gl, np.float64)))
        m[:3, 3] /= self.scale
        return cv.opencv_from_opengl_c2w(cv.invert_pose(self.transform) @ m)


def _matrix(value) -> np.ndarray | None:
    """A finite 3x4 or 4x4 matrix from JSON, else None."""
    try:
        M = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        return None
    return M if M.shape in ((3, 4), (4, 4)) and np.all(np.isfinite(M)) else None


def _applied(meta: dict, path: Path) -> tuple[np.ndarray, float]:
    """(4x4 applied_transform, applied_scale) of a transforms.json (identity, 1 when absent)."""
    A = _matrix(meta.get("applied_transform", np.eye(4)[:3]))
    scale = meta.get("applied_scale", 1.0)
    if A is None or abs(np.linalg.det(A[:3, :3])) < 1e-9:
        raise OdinError("'applied_transform' must be an invertible 3x4 matrix", path)
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise OdinError(f"'applied_scale' must be a positive number, got {scale!r}", path)
    return cv.as_4x4(A), float(scale)


def _transforms_meta(scene: Path, folder: Path) -> tuple[dict, Path]:
    from correspondence.nerfstudio import _read_json

    path = scene if scene.is_file() and scene.suffix == ".json" else folder / "transforms.json"
    return (_read_json(path) if path.is_file() else {}), path


def find_dataparser(scene: str | Path | None) -> Dataparser | None:
    """The scene's ``dataparser_transforms.json`` (beside its transforms.json or model), or None.

    The transforms.json's ``applied_transform`` / ``applied_scale`` are unfolded, so the result maps the
    transforms.json's own frame: the world ``load_transforms`` gives."""
    from correspondence.nerfstudio import _read_json

    if scene is None:
        return None
    scene = Path(scene)
    folder = scene if scene.is_dir() else scene.parent
    path = folder / DATAPARSER_NAME
    if not path.is_file():
        return None
    dp = Dataparser.from_dict(_read_json(path), path)
    meta, transforms = _transforms_meta(scene, folder)
    A, applied_scale = _applied(meta, transforms)
    return Dataparser((cv.as_4x4(dp.transform) @ np.linalg.inv(A))[:3], dp.scale / applied_scale)


def written_by_nerfstudio(folder: str | Path) -> bool:
    """Whether ``folder`` holds a dataparser_transforms.json that odin did not predict (never overwrite it)."""
    from correspondence.nerfstudio import _read_json

    path = Path(folder) / DATAPARSER_NAME
    return path.is_file() and "odin" not in _read_json(path)


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking direction a onto b (half a turn about an axis normal to a when opposite)."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    axis = np.cross(a, b)
    if np.abs(axis).sum() < 1e-6:  # parallel or opposite: nerfstudio's choice of axis
        axis = np.cross(a, [1.0, 0, 0] if abs(a[0]) < 1e-6 else [0, 1.0, 0])
    angle = math.acos(float(np.clip(a @ b, -1, 1)))
    return cv.rotation_from_axis_angle(axis / np.linalg.norm(axis) * angle)


def nerfstudio_default_dataparser(c2ws) -> Dataparser | None:
    """The frame nerfstudio's dataparser gives these OpenCV-axes camera-to-worlds (the frames of one
    transforms.json) with its default options; None when it is undefined (one camera, no spread)."""
    gl = np.stack([cv.opengl_from_opencv_c2w(np.asarray(c, np.float64)) for c in c2ws])
    center, up = gl[:, :3, 3].mean(0), gl[:, :3, 1].mean(0)
    if np.linalg.norm(up) < 1e-9:
        return None
    R = _rotation_between(up, np.array([0.0, 0.0, 1.0]))
    extent = np.abs((gl[:, :3, 3] - center) @ R.T).max()
    if not extent > 1e-12:
        return None
    return Dataparser(np.hstack([R, (-R @ center)[:, None]]), float(1.0 / extent))


def write_dataparser(folder: str | Path, dp: Dataparser, transforms_meta: dict | None = None,
                     note: dict | None = None) -> Path:
    """``folder/dataparser_transforms.json`` as nerfstudio writes it (applied_transform / applied_scale of
    the transforms.json folded in); ``note`` says where it came from (nerfstudio ignores other keys)."""
    folder = Path(folder)
    A, applied_scale = _applied(transforms_meta or {}, folder / "transforms.json")
    out = {"transform": (cv.as_4x4(dp.transform) @ A)[:3].tolist(), "scale": dp.scale * applied_scale}
    if note:
        out["odin"] = note
    atomic_write_json(folder / DATAPARSER_NAME, out)
    return folder / DATAPARSER_NAME


def carry_dataparser(src_dir: Path, scene, out: Path) -> str:
    """The dataparser frame of an imported scene written to ``out`` (beside its new transforms.json): the
    source's file, copied as is when the source is a transforms.json (same world, same applied_transform); a
    file nerfstudio already put in ``out``, kept; else the frame nerfstudio's defaults will give. Says which."""
    source_file = Path(src_dir) / DATAPARSER_NAME
    if scene.source.suffix == ".json" and source_file.is_file():
        atomic_write_bytes(out / DATAPARSER_NAME, source_file.read_bytes())
        return f"{source_file} copied"
    if written_by_nerfstudio(out):
        return f"{out / DATAPARSER_NAME} (from nerfstudio) kept"
    dp = nerfstudio_default_dataparser([f.c2w for f in scene.frames])
    if dp is None:
        return "no dataparser frame (one camera position)"
    write_dataparser(out, dp, scene.extra, {"predicted": PREDICTED_NOTE})
    return "nerfstudio's default dataparser frame predicted"
