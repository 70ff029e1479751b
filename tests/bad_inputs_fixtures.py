"""The files users get wrong, made small and on demand: ``Fixtures(root)["tf_nan"]`` builds (once)
and returns the path of a transforms.json with a NaN pose, and so on. Real outputs (a synthetic
world, an ingested dataset, pairs, an NRC run, an Odin run) are built through the CLI in-process,
with the smallest settings that still give a loadable result."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np


def odin(*argv) -> None:
    """Run ``odin ARGV`` in this process, quietly; a fixture that fails is a broken test, said loudly."""
    from ingest.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    if code != 0:
        raise RuntimeError(f"fixture `odin {' '.join(map(str, argv))}` failed ({code}): {err.getvalue()[-2000:]}")


def _png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _gradient(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 255 // (w + h)], -1).astype(np.uint8)


def _mp4(path: Path, frames: int, w: int, h: int) -> Path:
    from ingest.media import write_mp4

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(frames)
    return write_mp4(path, [np.roll(_gradient(h, w), 7 * i, 1) ^ rng.integers(0, 16, (h, w, 3), np.uint8)
                            for i in range(frames)], fps=2)


def _transforms(folder: Path, frames: list[dict] | None = None, **meta) -> Path:
    """A pinhole transforms.json with 3 posed 32x24 images (``frames`` replaces the frame list)."""
    folder.mkdir(parents=True, exist_ok=True)
    if frames is None:
        frames = []
        for i in range(3):
            _png(folder / "images" / f"{i}.png", _gradient(24, 32))
            frames.append({"file_path": f"images/{i}.png",
                           "transform_matrix": [[1, 0, 0, 0.1 * i], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]})
    body = {"camera_model": "OPENCV", "fl_x": 20.0, "fl_y": 20.0, "cx": 16.0, "cy": 12.0, "w": 32, "h": 24,
            **meta, "frames": frames}
    (folder / "transforms.json").write_text(json.dumps(body))
    return folder / "transforms.json"


def _edit_frame(folder: Path, index: int, **fields) -> Path:
    path = _transforms(folder)
    body = json.loads(path.read_text())
    body["frames"][index].update(fields)
    path.write_text(json.dumps(body))
    return path


def _camera_path(path: Path, c2w, **meta) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"camera_type": "perspective", "render_width": 16, "render_height": 12, "fps": 4, "odin_frame": "world",
            "camera_path": [{"camera_to_world": c2w, "fov": 60.0}], **meta}
    path.write_text(json.dumps(body))
    return path


_EYE = np.eye(4).reshape(-1).tolist()


def _truncated_copy(src: Path, dst: Path, pattern: str) -> Path:
    """A copy of ``src`` whose first shard matching ``pattern`` lost its second half (a killed copy)."""
    shutil.copytree(src, dst)
    shard = sorted(dst.rglob(pattern))[0]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    return dst


class Fixtures:
    """Lazily built inputs under ``root``, by name; see ``BUILDERS`` for the names."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._built: dict[str, Path] = {}

    def __getitem__(self, name: str) -> Path:
        if name not in self._built:
            done = self.root / f"{name}.done"  # a root kept between runs (bench/abuse.py) is reused
            if done.exists():
                self._built[name] = Path(done.read_text())
            else:
                self._built[name] = BUILDERS[name](self, self.root / name)
                done.write_text(str(self._built[name]))
        return self._built[name]


def _world(fx, p):
    odin("synth", "--out", p, "--seconds", 2, "--fps", 2, "--width", 128, "--seed", 1)
    return p


def _dataset(fx, p):
    odin("ingest", fx["world"] / "video.mp4", "--out", p, "--fps", 0, "--equirect-width", 128, "--views", 2,
         "--view-size", 32, "--no-progress")
    return p


def _pairs(fx, p):
    from correspondence.synthetic_pairs import synthetic_gt_pairs
    from ingest.synth import SyntheticWorld

    synthetic_gt_pairs(SyntheticWorld(fx["world"]), p, 6, view_size=32, seed=0, max_frame_gap=3)
    return p


def _nrc_run(fx, p):
    odin("nrc", "fit", fx["world"], "--out", p, "--preset", "tiny", "--steps", 1, "--batch-rays", 64, "--height", 16,
         "--device", "cpu", "--seconds", 0)
    return p


def _odin_run(fx, p):
    odin("train", fx["pairs"], "--out", p, "--tiny", "--max-steps", 1, "--resolution", 32, "--quiet")
    return p


def _bytes(data: bytes, name: str):
    def build(fx, p):
        p.mkdir()
        (p / name).write_bytes(data)
        return p / name
    return build


def _jpeg_as_mp4(fx, p):
    import cv2

    p.mkdir()
    (p / "photo.mp4").write_bytes(cv2.imencode(".jpg", _gradient(64, 128))[1].tobytes())
    return p / "photo.mp4"


def _truncated_mp4(fx, p):
    data = (fx["world"] / "video.mp4").read_bytes()
    p.mkdir()
    (p / "cut.mp4").write_bytes(data[: len(data) // 2])
    return p / "cut.mp4"


def _unicode_mp4(fx, p):
    target = p / "vidéo ✓ dir" / "my clip ü.mp4"
    target.parent.mkdir(parents=True)
    shutil.copy(fx["world"] / "video.mp4", target)
    return target


def _png16(fx, p):
    """A 16-bit grey ramp whose 8-bit rendering has mean ~127 (saturating it gives 255)."""
    from PIL import Image

    p.mkdir()
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    Image.fromarray(ramp).save(p / "deep.png")
    return p / "deep.png"


BUILDERS = {
    "world": _world, "dataset": _dataset, "pairs": _pairs, "nrc_run": _nrc_run, "odin_run": _odin_run,
    "video": lambda fx, p: fx["world"] / "video.mp4",
    # videos
    "empty_mp4": _bytes(b"", "empty.mp4"),
    "corrupt_mp4": _bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes(), "noise.mp4"),
    "jpeg_mp4": _jpeg_as_mp4, "truncated_mp4": _truncated_mp4,
    "four_three_mp4": lambda fx, p: _mp4(p / "four_three.mp4", 3, 64, 48),
    "one_frame_mp4": lambda fx, p: _mp4(p / "one.mp4", 1, 128, 64),
    "unicode_mp4": _unicode_mp4,
    "missing_unicode": lambda fx, p: p / "nöt hére ✗.mp4",
    # images for generate
    "rgb_png": lambda fx, p: _png(p / "rgb.png", _gradient(48, 64)),
    "gray_png": lambda fx, p: _png(p / "gray.png", _gradient(40, 40)[..., 0]),
    "rgba_png": lambda fx, p: _png(p / "rgba.png", np.dstack([_gradient(40, 40), np.full((40, 40), 128, np.uint8)])),
    "png16": _png16,
    "tiny_png": lambda fx, p: _png(p / "tiny.png", _gradient(4, 4)),
    "corrupt_png": _bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "broken.png"),
    # scenes (transforms.json and friends)
    "tf_good": lambda fx, p: _transforms(p),
    "tf_nan": lambda fx, p: _edit_frame(p, 1, transform_matrix=[[1, 0, 0, float("nan")], [0, 1, 0, 0], [0, 0, 1, 0],
                                                                [0, 0, 0, 1]]),
    "tf_scaled": lambda fx, p: _edit_frame(p, 1, transform_matrix=[[2, 0, 0, 0], [0, 2, 0, 0], [0, 0, 2, 0],
                                                                   [0, 0, 0, 1]]),
    "tf_3x3": lambda fx, p: _edit_frame(p, 0, transform_matrix=np.eye(3).tolist()),
    "tf_fl0": lambda fx, p: _transforms(p, fl_x=0.0, fl_y=0.0),
    "tf_zero": lambda fx, p: _transforms(p, frames=[]),
    "tf_noimg": lambda fx, p: _transforms(p, frames=[{"file_path": f"images/gone_{i}.png", "transform_matrix":
                                                      np.eye(4).tolist()} for i in range(3)]),
    "tf_binary": _bytes(bytes(range(256)) * 8, "transforms.json"),
    "tf_malformed": _bytes(b'{"frames": [{"file_path": "a.png",', "transforms.json"),
    # camera paths
    "cp_good": lambda fx, p: _camera_path(p / "camera_path.json", _EYE),
    "cp_malformed": _bytes(b'{"camera_path": [', "camera_path.json"),
    "cp_binary": _bytes(bytes(range(256)) * 4, "camera_path.json"),
    "cp_empty": lambda fx, p: _camera_path(p / "camera_path.json", _EYE, camera_path=[]),
    "cp_nan": lambda fx, p: _camera_path(p / "camera_path.json", [float("nan")] * 16),
    "cp_scaled": lambda fx, p: _camera_path(p / "camera_path.json", (2 * np.eye(4)).reshape(-1).tolist()),
    "cp_strings": lambda fx, p: _camera_path(p / "camera_path.json", "not numbers"),
    "cp_size0": lambda fx, p: _camera_path(p / "camera_path.json", _EYE, render_width=0),
    # truncated shards (a copy cut mid-transfer)
    "dataset_trunc": lambda fx, p: _truncated_copy(fx["dataset"], p, "*.tar"),
    "pairs_trunc": lambda fx, p: _truncated_copy(fx["pairs"], p, "*.tar"),
    # a regular file where a folder is expected
    "a_file": _bytes(b"earlier output\n", "results.txt"),
}
