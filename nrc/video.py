"""Render a nerfstudio ``camera_path.json`` through a trained run into an H.264 MP4."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ingest.errors import OdinError
from ingest.media import write_mp4
from nrc.plots import to_uint8
from nrc.rendering import render_view


def render_camera_path(run_dir: str | Path, camera_path: str | Path, out: str | Path, *, scene: int = 0,
                       device: str = "cpu", output: str = "rgb", progress: bool = True) -> Path:
    """Every camera of the path rendered by the run (perspective or equirectangular, as the path says).
    ``output``: "rgb", "depth" or "codes" (the segmentation, coloured)."""
    from tqdm import tqdm

    from correspondence.nerfstudio import load_camera_path
    from nrc.checkpoint import load_run, read_config
    from nrc.plots import colorize_depth, colorize_labels

    config = read_config(run_dir)
    config.check_scene(scene)
    # nerfstudio's paths are in the scene's dataparser frame, when it has one
    path = load_camera_path(camera_path, scene=config.scenes[scene].source)
    if path.width % 2 or path.height % 2:
        raise OdinError(f"render size must be even for H.264, got {path.width}x{path.height}", camera_path)
    if path.camera_type == "equirectangular" and path.width != 2 * path.height:
        raise OdinError(f"equirectangular render size must be 2:1, got {path.width}x{path.height}", camera_path)
    model, _ = load_run(run_dir, device)

    def frames():
        for i in tqdm(range(len(path.c2ws)), desc="nrc render", unit="frame", disable=not progress):
            camera = (path.height, path.width) if path.camera_type == "equirectangular" else path.intrinsics(i)
            kind = {"rgb": ("rgb",), "depth": ("depth",), "codes": ("codes",)}[output]
            res = render_view(model, path.c2ws[i], camera, kind, scene=scene)
            if output == "rgb":
                yield to_uint8(res["rgb"])
            elif output == "depth":
                yield colorize_depth(res["depth"])
            else:
                yield colorize_labels(res["segmentation"])

    return write_mp4(out, frames(), path.fps)


def read_mp4_frames(path: str | Path) -> list[np.ndarray]:
    """Decoded RGB frames of a video (for checks)."""
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
