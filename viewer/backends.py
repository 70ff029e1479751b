"""What the viewer draws: NRC renders (RGB, depth, code segmentation) and Odin's imagined views."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ingest import conventions as cv
from ingest.errors import OdinError

log = logging.getLogger(__name__)


@dataclass
class TrainingView:
    c2w: np.ndarray
    width: int
    height: int
    fy: float | None  # None for equirectangular frames
    image_path: Path


def _palette(n: int) -> np.ndarray:
    rng = np.random.default_rng(12345)
    colours = rng.integers(40, 256, size=(max(n, 1), 3)).astype(np.uint8)
    return colours


def colorize(out: dict, mode: str) -> np.ndarray:
    """uint8 RGB image of one NRC read-out."""
    import cv2

    if mode == "rgb":
        return (np.clip(out["rgb"], 0, 1) * 255).astype(np.uint8)
    if mode == "depth":
        depth = out["depth"]
        lo, hi = np.percentile(depth, [2, 98]) if depth.size else (0, 1)
        scaled = np.clip((depth - lo) / max(hi - lo, 1e-6), 0, 1)
        return cv2.cvtColor(cv2.applyColorMap((255 * (1 - scaled)).astype(np.uint8), cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    if mode == "codes":
        codes = out["codes"]
        # Weight by opacity so empty space stays dark instead of showing an arbitrary code.
        shade = np.clip(codes.sum(-1, keepdims=True), 0, 1)
        return (_palette(codes.shape[-1])[out["segmentation"]] * shade).astype(np.uint8)
    raise ValueError(f"unknown view mode {mode!r}")


class NrcBackend:
    """A trained NRC run: renders any camera, knows its training cameras and mesh."""

    OUTPUTS = {"rgb": ("rgb",), "depth": ("depth",), "codes": ("codes",)}

    def __init__(self, run_dir: str | Path, device: str | None = None, mesh_path: str | Path | None = None,
                 preview_grid: int = 128):
        import torch

        from nrc.baked import bake
        from nrc.checkpoint import load_run

        self.run_dir = Path(run_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.config = load_run(self.run_dir, self.device)
        frame = self.config.scenes[0]
        self.center, self.scene_scale = np.asarray(frame.center, np.float64), float(frame.radius)
        self.training_views = self._training_views(frame.source)
        candidates = [mesh_path] if mesh_path else [self.run_dir / f"mesh.{ext}" for ext in ("glb", "ply", "obj")]
        self.mesh_path = next((Path(p) for p in candidates if p and Path(p).exists()), None)
        self.min_transmittance = 1e-3  # rays stop when this little light is left (0: march them all)
        # Previews while the camera moves come from a baked grid (seconds to bake on a CPU).
        self.baked = bake(self.model, 0, preview_grid) if preview_grid else None

    def _training_views(self, source: str) -> list[TrainingView]:
        from correspondence.nerfstudio import load_scene

        try:
            scene = load_scene(source)
        except OdinError as e:  # the run still renders without its training data (moved or deleted)
            log.warning("training cameras not shown: %s", e)
            return []
        return [TrainingView(f.c2w, f.width, f.height, None if f.intrinsics is None else f.intrinsics.fy, f.image_path)
                for f in scene.frames]

    def initial_pose(self) -> np.ndarray:
        if self.training_views:
            return self.training_views[0].c2w
        return cv.make_pose(np.eye(3), self.center)

    def render(self, c2w: np.ndarray, K: cv.Intrinsics, mode: str, preview: bool = False) -> dict:
        """The full field, or with ``preview`` the baked grid (view-independent, coarser, ~10x faster)."""
        from nrc.rendering import render_view

        return render_view(self.model, c2w, K, outputs=self.OUTPUTS[mode], min_transmittance=self.min_transmittance,
                           baked=self.baked if preview else None)

    def median_depth(self, c2w: np.ndarray, K: cv.Intrinsics) -> float:
        small = K.scaled(32 / K.width)
        depth = self.render(c2w, small, "depth")["depth"]
        return float(np.median(depth))


class OdinBackend:
    """Odin imagines the view at each camera stop from one source image (trajectory mode:
    conditioned on the original image and on the previous imagined frame)."""

    def __init__(self, run_dir: str | Path, device: str | None = None, steps: int = 25):
        import torch

        from odin.pipeline import load_pipeline

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.pipe, self.config = load_pipeline(run_dir, self.device)
        self.steps = steps
        self.source: np.ndarray | None = None
        self.source_c2w: np.ndarray | None = None
        self.previous: tuple | None = None
        self.depth_scale = 1.0

    def set_source_view(self, view: TrainingView, depth_scale: float = 1.0) -> None:
        from ingest.shards import decode_image

        self.set_source(decode_image(Path(view.image_path).read_bytes()), view.c2w, depth_scale)

    def set_source(self, rgb: np.ndarray, c2w: np.ndarray, depth_scale: float) -> None:
        from odin.data import image_tensor, to_rgb_square

        self.source = image_tensor(to_rgb_square(rgb, self.config.model.resolution)[0])
        self.source_c2w, self.previous, self.depth_scale = np.asarray(c2w, np.float64), None, depth_scale

    def imagine(self, c2w: np.ndarray, K: cv.Intrinsics) -> np.ndarray:
        from odin.data import tensor_image
        from odin.pipeline import next_frame

        if self.source is None:
            raise OdinError("choose a source image for Odin mode first")
        res = self.config.model.resolution
        K_work = cv.Intrinsics.from_fov(res, res, K.fov_x_deg)
        frame = next_frame(self.pipe, self.source, self.source_c2w, self.previous, c2w, K_work,
                           scale=self.depth_scale, steps=self.steps)
        self.previous = (frame, np.asarray(c2w, np.float64))
        return tensor_image(frame)
