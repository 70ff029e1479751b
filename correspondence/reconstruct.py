"""`odin reconstruct`: pycolmap SfM of one video's kept 360° frames -> nerfstudio transforms.json.

pycolmap's EQUIRECTANGULAR camera uses our convention exactly (checked empirically and in
tests): ``img_from_cam`` maps camera ray (x, y, z) to ``u = (atan2(x, z)/2pi + 0.5) W``,
``v = (0.5 - asin(-y)/pi) H`` — OpenCV axes, pixel centres at +0.5 — and ``cam_from_world``
is our ``w2c``. So ``c2w = inv(cam_from_world)`` needs no axis change.

Output (in OUT): ``images/`` (the equirect frames fed to SfM), ``views/`` (perspective crops
of the ingest view grid), ``transforms.json`` (those views, OpenGL axes as nerfstudio wants),
``points.ply`` (sparse points). SfM scale is arbitrary. Frames already exported to ``images/``
are not decoded again; SfM itself reruns as a whole (the CLI skips an OUT that already has
its transforms.json).
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2  # before pycolmap: pycolmap's zlib otherwise breaks cv2's PNG writer
import numpy as np

from correspondence.mine import FrameSource
from correspondence.nerfstudio import PosedFrame, PosedScene, write_transforms
from ingest import conventions as cv
from ingest.errors import OdinError
from ingest.views import ViewsConfig, extract_views


@dataclass(frozen=True)
class ReconstructConfig:
    max_frames: int = 200
    views: ViewsConfig = field(default_factory=ViewsConfig)
    sequential_overlap: int = 20  # above exhaustive_max frames, match each frame with this many neighbours
    exhaustive_max: int = 60


@dataclass
class ReconstructResult:
    video_id: str
    out: Path
    frames: int
    registered: int
    points: int
    seconds: float
    c2w: dict = field(default_factory=dict)  # frame_id -> 4x4 c2w of the equirect frame (SfM units)

    def line(self) -> str:
        return (f"{self.video_id}: {self.registered}/{self.frames} frames registered, {self.points} points, "
                f"{self.seconds:.1f} s -> {self.out / 'transforms.json'}")


def subsample(items: list, max_count: int) -> list:
    if len(items) <= max_count:
        return list(items)
    return [items[k] for k in np.linspace(0, len(items) - 1, max_count).round().astype(int)]


def c2w_from_cam_from_world(matrix_3x4: np.ndarray) -> np.ndarray:
    return cv.invert_pose(np.asarray(matrix_3x4, np.float64))


def run_sfm(image_dir: Path, work: Path, width: int, height: int, n_images: int, config: ReconstructConfig):
    """Features, matching and incremental mapping; returns the reconstruction with most images."""
    import pycolmap

    db = work / "database.db"
    db.unlink(missing_ok=True)
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model, reader.camera_params = "EQUIRECTANGULAR", f"{width},{height}"
    pycolmap.extract_features(db, image_dir, camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                              device=pycolmap.Device.cpu)
    if n_images <= config.exhaustive_max:
        pycolmap.match_exhaustive(db, device=pycolmap.Device.cpu)
    else:
        pairing = pycolmap.SequentialPairingOptions()
        pairing.overlap = config.sequential_overlap
        pycolmap.match_sequential(db, pairing_options=pairing, device=pycolmap.Device.cpu)
    maps = pycolmap.incremental_mapping(db, image_dir, work / "sparse", pycolmap.IncrementalPipelineOptions())
    if not maps:
        return None
    return max(maps.values(), key=lambda r: r.num_reg_images())


def reconstruct_video(source: FrameSource, video_id: str, out: str | Path,
                      config: ReconstructConfig = ReconstructConfig()) -> ReconstructResult:
    out = Path(out)
    start = time.perf_counter()
    frames = subsample(list(source.frames(video_id)), config.max_frames)
    if len(frames) < 2:
        raise OdinError(f"video {video_id!r} has {len(frames)} kept frames; SfM needs at least 2", out)
    work, image_dir = out / ".sfm", out / "images"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    names = {}
    for k, fr in enumerate(frames):
        name = f"{k:06d}.jpg"
        names[name] = fr
        if not (image_dir / name).exists():
            rgb = source.load_equirect(fr.frame_id)
            ok = cv2.imwrite(str(image_dir / f".{name}.tmp.jpg"), rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            if not ok:
                raise OdinError("could not write image", image_dir / name)
            (image_dir / f".{name}.tmp.jpg").rename(image_dir / name)
    h, w = cv2.imread(str(image_dir / "000000.jpg")).shape[:2]
    rec = run_sfm(image_dir, work, w, h, len(frames), config)
    if rec is None:
        raise OdinError(f"SfM registered no images of video {video_id!r} (too little texture or motion)", out)
    posed, c2ws = [], {}
    (out / "views").mkdir(exist_ok=True)
    specs = config.views.specs()
    for image in sorted(rec.images.values(), key=lambda im: im.name):
        if not image.has_pose:
            continue
        fr = names[image.name]
        c2w_frame = c2w_from_cam_from_world(image.cam_from_world().matrix())
        c2ws[fr.frame_id] = c2w_frame
        rgb = cv2.imread(str(image_dir / image.name))[..., ::-1]
        for v, (spec, view) in enumerate(zip(specs, extract_views(rgb, specs))):
            path = out / "views" / f"{Path(image.name).stem}_v{v:02d}.jpg"
            cv2.imwrite(str(path), view[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            c2w_view = c2w_frame @ cv.make_pose(spec.R_frame_from_view, np.zeros(3))
            posed.append(PosedFrame(path, c2w_view, spec.size, spec.size, spec.intrinsics, "PINHOLE", float(fr.time)))
    rec.export_PLY(str(work / "points.ply"))
    (work / "points.ply").replace(out / "points.ply")
    write_transforms(PosedScene(posed, out, extra={"video_id": video_id}), out / "transforms.json")
    shutil.rmtree(work, ignore_errors=True)
    return ReconstructResult(video_id, out, len(frames), len(c2ws), rec.num_points3D(), time.perf_counter() - start, c2ws)
