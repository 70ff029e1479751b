"""COLMAP structure from motion on 360° frames (pycolmap), by two routes.

- ``rig``: each equirect frame is rendered to overlapping virtual pinhole cameras (4 yaws at
  pitches -35°, 0°, +35°, 90° FoV, as ``pycolmap.panorama`` does) that form one COLMAP rig with
  fixed, exact ``cam_from_rig`` rotations. Every panorama pixel extracts features in one camera
  only (the camera whose axis is closest), so overlapping crops do not duplicate features.
- ``equirect``: the frames themselves with COLMAP's native EQUIRECTANGULAR camera.

Both match only the frame pairs they are given (mining's verified pairs plus temporal
neighbours) instead of exhaustive or blind sequential matching; the rig route expands a frame
pair to the camera pairs whose views can overlap. What moves with the camera (a car body, a
tripod) is kept out by COLMAP's stationary-match filter, per frame pair, or with ``mask_features``
by the clip's rig mask. A 360° camera walking forward needs
``init_max_forward_motion = 1``: COLMAP's default (0.95) is a pinhole rule that rejects every
initial pair of such a clip.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2  # before pycolmap: pycolmap's zlib otherwise breaks cv2's PNG writer
import numpy as np

from ingest import conventions as cv
from ingest.errors import OdinError
from ingest.rigmask import resize_mask
from ingest.views import ViewSpec, ViewsConfig, extract_views

ROUTES = ("rig", "equirect")
MAPPERS = ("incremental", "global")
RIG_RINGS = ((4, -35.0), (4, 0.0), (4, 35.0))


@dataclass(frozen=True)
class SfmConfig:
    # Defaults chosen by bench/reconstruct.py (README): global mapping registered whole real clips where
    # incremental mapping stalled after its initial pair; the equirect route matches one image pair per
    # frame pair instead of dozens and registers as much.
    route: str = "equirect"
    mapper: str = "global"
    sequential_overlap: int = 4  # temporal neighbours matched with each frame, besides mining's pairs
    max_features: int = 4096  # per image (a virtual camera on the rig route)
    init_max_forward_motion: float = 1.0
    init_min_tri_angle_deg: float = 16.0  # COLMAP's default
    abs_pose_min_num_inliers: int = 30  # COLMAP's default
    sift_peak_threshold: float = 0.0067  # COLMAP's default
    # None: upsample (COLMAP's -1) only images under 512 px high; on a 1024x512 panorama upsampling cost
    # 2.6-4.5x the time for the same registration (README), while small images need it to find features.
    sift_first_octave: int | None = None
    # A posed frame counts as registered only when it sees this many triangulated points: fewer cannot
    # fix its position (a static clip "registered" 33/33 frames on 4 points before this rule).
    min_frame_points: int = 10
    # What moves with the camera, out of SfM. Default: COLMAP drops, per frame pair, the matches that keep
    # their pixel position (filter_stationary_matches). mask_features: no features under the clip's rig
    # mask instead, which also covers far content that barely moves (the road ahead and the horizon of the
    # dragster clip: 17 of 59 frames registered after a jump, 0 with the filter; car and drone clips
    # registered the same either way; README). COLMAP's 4 px for "stationary": with 1 or 2 px the dragster
    # had 7 and 24 frames after a jump (rig edges shake by a few pixels).
    mask_features: bool = False
    filter_stationary_matches: bool | None = None  # None: when features are not masked
    rig_pair_max_angle_deg: float = 75.0  # 90° cameras whose axes differ more share too little to match
    # Feature extraction uses every thread (-1) and still gives the same database run to run: images are
    # numbered in frame order. Matching runs on one thread (see run_colmap). The mappers: with
    # threads, three runs of the dragster clip on that same database registered 58, 58 and 59 frames on three
    # different paths, and on 2 cores one mapping thread costs ~0.3-0.5 s of its 5 s. More threads: faster
    # on many cores, poses vary.
    num_threads: int = -1
    mapper_threads: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.route not in ROUTES:
            raise OdinError(f"--route must be one of {', '.join(ROUTES)}, got {self.route!r}")
        if self.mapper not in MAPPERS:
            raise OdinError(f"--mapper must be one of {', '.join(MAPPERS)}, got {self.mapper!r}")
        if self.mapper_threads == 0 or self.mapper_threads < -1:
            raise OdinError(f"--mapper-threads must be >= 1 (or -1: all), got {self.mapper_threads}")
        if self.sequential_overlap < 0:
            raise OdinError(f"--overlap must be >= 0, got {self.sequential_overlap}")


@dataclass
class SfmResult:
    c2w: dict[int, np.ndarray]  # frame index (into the input list) -> 4x4 c2w of the equirect frame
    reprojection_px: dict[int, float]  # frame index -> mean reprojection error of its observations
    keypoints: dict[int, int]  # frame index -> features extracted (all cameras of the frame)
    verified: dict[int, set[int]]  # frame index -> frames it has a geometrically verified pair with
    model_sizes: list[int]  # registered frames of every model COLMAP made, largest first
    points_ply: Path | None
    num_points: int
    seconds: dict[str, float] = field(default_factory=dict)
    elsewhere: set[int] = field(default_factory=set)  # frames registered only in a smaller, separate model
    unsupported: dict[int, int] = field(default_factory=dict)  # frame -> 3D points seen, when too few to count


def rig_specs(width: int, config: SfmConfig) -> list[ViewSpec]:
    """The virtual cameras: 90° crops whose width keeps the panorama's angular resolution."""
    return ViewsConfig(rings=RIG_RINGS, fov_deg=90.0, size=max(16, width // 4)).specs()


def frame_pairs(n_frames: int, overlap: int, seeds: set[tuple[int, int]] = frozenset()) -> list[tuple[int, int]]:
    pairs = {(i, j) for i in range(n_frames) for j in range(i + 1, min(n_frames, i + 1 + overlap))}
    pairs |= {(min(a, b), max(a, b)) for a, b in seeds if a != b and 0 <= min(a, b) and max(a, b) < n_frames}
    return sorted(pairs)


def _owner_masks(specs: list[ViewSpec], height: int, width: int) -> list[np.ndarray]:
    """Per virtual camera, the panorama pixels whose closest camera axis is this camera's."""
    directions = cv.equirect_directions(height, width).reshape(-1, 3)
    axes = np.stack([s.R_frame_from_view[:, 2] for s in specs])
    owner = np.argmax(directions @ axes.T, axis=1).reshape(height, width)
    return [(owner == k).astype(np.uint8) * 255 for k in range(len(specs))]


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OdinError("could not write image", path)


def write_inputs(route: str, frames_bgr, names: list[str], keep: np.ndarray | None, image_dir: Path,
                 mask_dir: Path, config: SfmConfig) -> list[list[str]]:
    """Images (and feature masks, 0 = no features) for COLMAP; returns each frame's image names."""
    per_frame: list[list[str]] = []
    specs, views_of_masks = None, None
    for name, bgr in zip(names, frames_bgr):
        h, w = bgr.shape[:2]
        keep_mask = np.full((h, w), 255, np.uint8) if keep is None else resize_mask(keep, w, h).astype(np.uint8) * 255
        if route == "equirect":
            _write(image_dir / name, bgr)
            # Written even when nothing is masked: without mask files, two runs on the same dragster
            # frames extracted differently (58 and 59 frames registered, different paths); with them,
            # every run gave the same poses.
            _write(mask_dir / f"{name}.png", keep_mask)
            per_frame.append([name])
            continue
        if specs is None:
            specs = rig_specs(w, config)
            owners = _owner_masks(specs, h, w)
            views_of_masks = [extract_views(np.minimum(o, keep_mask), [s])[0] for o, s in zip(owners, specs)]
        images = []
        for k, (spec, view) in enumerate(zip(specs, extract_views(bgr, specs))):
            image_name = f"cam{k:02d}/{name}"
            _write(image_dir / image_name, view)
            _write(mask_dir / f"{image_name}.png", (views_of_masks[k] > 127).astype(np.uint8) * 255)
            images.append(image_name)
        per_frame.append(images)
    return per_frame


def image_pairs(route: str, pairs: list[tuple[int, int]], images: list[list[str]], specs: list[ViewSpec] | None,
                rotations: dict[tuple[int, int], np.ndarray], config: SfmConfig) -> list[tuple[str, str]]:
    """Frame pairs expanded to image pairs. ``rotations[(a, b)]`` is R_b_from_a when mining knows it."""
    if route == "equirect":
        return [(images[a][0], images[b][0]) for a, b in pairs]
    axes = np.stack([s.R_frame_from_view[:, 2] for s in specs])
    cos_max = np.cos(np.radians(config.rig_pair_max_angle_deg))
    out = []
    for a, b in pairs:
        R = rotations.get((a, b), np.eye(3))
        close = (axes @ R.T) @ axes.T >= cos_max  # [i, j]: camera i of a (turned into b's frame) vs camera j of b
        out += [(images[a][i], images[b][j]) for i, j in zip(*np.nonzero(close))]
    return out


def _rig_config(specs: list[ViewSpec]):
    import pycolmap

    R0 = specs[0].R_frame_from_view
    cameras = []
    for k, spec in enumerate(specs):
        cam_from_rig = None if k == 0 else pycolmap.Rigid3d(
            pycolmap.Rotation3d(spec.R_frame_from_view.T @ R0), np.zeros((3, 1)))
        cameras.append(pycolmap.RigConfigCamera(ref_sensor=k == 0, image_prefix=f"cam{k:02d}/", cam_from_rig=cam_from_rig))
    return pycolmap.RigConfig(cameras=cameras)


def run_colmap(work: Path, route: str, images: list[list[str]], pairs: list[tuple[str, str]], specs,
               config: SfmConfig, log=print, filter_stationary: bool = False):
    """Feature extraction, matching of the given pairs, mapping; returns (reconstructions, seconds)."""
    import pycolmap

    # COLMAP logs six INFO lines per image and per BA iteration, which bury our progress lines;
    # its warnings and errors still come through.
    pycolmap.logging.minloglevel = max(pycolmap.logging.minloglevel, 1)
    image_dir, mask_dir, db = work / "images", work / "masks", work / "database.db"
    db.unlink(missing_ok=True)
    seconds = {}
    reader = pycolmap.ImageReaderOptions(mask_path=mask_dir)
    if route == "equirect":
        reader.camera_model = "EQUIRECTANGULAR"
    else:
        K = specs[0].intrinsics
        reader.camera_model, reader.camera_params = "PINHOLE", f"{K.fx},{K.fy},{K.cx},{K.cy}"
    extraction = pycolmap.FeatureExtractionOptions(num_threads=config.num_threads)
    extraction.sift.max_num_features = config.max_features
    extraction.sift.peak_threshold = config.sift_peak_threshold
    height = specs[0].size if route == "rig" else cv2.imread(str(image_dir / images[0][0]), cv2.IMREAD_GRAYSCALE).shape[0]
    extraction.sift.first_octave = config.sift_first_octave if config.sift_first_octave is not None else (
        -1 if height < 512 else 0)
    start = time.perf_counter()
    names = [n for frame in images for n in frame]
    camera_mode = pycolmap.CameraMode.SINGLE if route == "equirect" else pycolmap.CameraMode.PER_FOLDER
    # Images enter the database first, in frame order: threaded extraction otherwise numbers them in the
    # order its threads finish, and the mappers, which visit images by id, drew different paths run to run.
    pycolmap.Database.open(db).close()
    pycolmap.import_images(db, image_dir, camera_mode=camera_mode, image_names=names, options=reader)
    pycolmap.extract_features(db, image_dir, image_names=names, camera_mode=camera_mode,
                              reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu)
    seconds["features"] = time.perf_counter() - start
    if route == "rig":
        with pycolmap.Database.open(db) as database:
            pycolmap.apply_rig_config([_rig_config(specs)], database)
    match_list = work / "pairs.txt"
    match_list.write_text("".join(f"{a} {b}\n" for a, b in pairs))
    # Matching on one thread: with several, verification still varied run to run although seeded (CI:
    # one run in several differed by 3e-3 on the rig route and by 1e-3 on the equirect route, neither
    # reproducible on an idle machine); matching is a small share of the time.
    matching = pycolmap.FeatureMatchingOptions(num_threads=1)
    matching.rig_verification = route == "rig"
    matching.skip_image_pairs_in_same_frame = route == "rig"
    verification = pycolmap.TwoViewGeometryOptions()
    verification.filter_stationary_matches = filter_stationary
    verification.ransac.random_seed = config.seed  # unseeded, each thread's RANSAC draws differ run to run
    start = time.perf_counter()
    pycolmap.match_image_pairs(db, matching_options=matching,
                               pairing_options=pycolmap.ImportedPairingOptions(match_list_path=match_list),
                               verification_options=verification,
                               device=pycolmap.Device.cpu)
    seconds["matching"] = time.perf_counter() - start
    log(f"reconstruct: {len(pairs)} image pairs matched in {seconds['matching']:.1f} s; mapping ({config.mapper})")
    sparse = work / "sparse"
    sparse.mkdir(exist_ok=True)
    start = time.perf_counter()
    pycolmap.set_random_seed(config.seed)
    if config.mapper == "incremental":
        options = pycolmap.IncrementalPipelineOptions(num_threads=config.mapper_threads, random_seed=config.seed)
        options.mapper.init_max_forward_motion = config.init_max_forward_motion
        options.mapper.init_min_tri_angle = config.init_min_tri_angle_deg
        options.mapper.abs_pose_min_num_inliers = config.abs_pose_min_num_inliers
        options.min_model_size = 3
        if route == "rig":
            options.ba_refine_sensor_from_rig = False
            options.ba_refine_focal_length = options.ba_refine_principal_point = options.ba_refine_extra_params = False
        maps = pycolmap.incremental_mapping(db, image_dir, sparse, options)
    else:
        options = pycolmap.GlobalPipelineOptions(num_threads=config.mapper_threads, random_seed=config.seed)
        options.min_model_size = 3
        if route == "rig":
            options.mapper.refine_sensor_from_rig = False
            ba = options.mapper.bundle_adjustment
            ba.refine_focal_length = ba.refine_principal_point = ba.refine_extra_params = False
        maps = pycolmap.global_mapping(db, image_dir, sparse, options)
    seconds["mapping"] = time.perf_counter() - start
    return db, list(maps.values()), seconds


def _verified_frames(db: Path, frame_of_image: dict[str, int], min_inliers: int = 15) -> dict[int, set[int]]:
    import pycolmap

    verified: dict[int, set[int]] = {}
    with pycolmap.Database.open(db) as database:
        name_of = {im.image_id: im.name for im in database.read_all_images()}
        pair_ids, counts = database.read_two_view_geometry_num_inliers()
    for pair_id, count in zip(pair_ids, counts):
        if count < min_inliers:
            continue
        a, b = (frame_of_image[name_of[i]] for i in pycolmap.pair_id_to_image_pair(pair_id))
        verified.setdefault(a, set()).add(b)
        verified.setdefault(b, set()).add(a)
    return verified


def _keypoint_counts(db: Path, frame_of_image: dict[str, int]) -> dict[int, int]:
    import pycolmap

    counts: dict[int, int] = {}
    with pycolmap.Database.open(db) as database:
        for im in database.read_all_images():
            counts[frame_of_image[im.name]] = counts.get(frame_of_image[im.name], 0) + database.num_keypoints_for_image(im.image_id)
    return counts


def reprojection_errors(rec) -> dict[str, float]:
    """Mean reprojection error (px) of each registered image's triangulated observations."""
    errors = {}
    for image in rec.images.values():
        if not image.has_pose:
            continue
        observed = [p for p in image.points2D if p.has_point3D()]
        if not observed:
            continue
        xyz = np.stack([rec.points3D[p.point3D_id].xyz for p in observed])
        cam_from_world = image.cam_from_world().matrix()
        projected = rec.cameras[image.camera_id].img_from_cam(xyz @ cam_from_world[:, :3].T + cam_from_world[:, 3])
        errors[image.name] = float(np.mean(np.linalg.norm(np.asarray(projected) - np.stack([p.xy for p in observed]), axis=1)))
    return errors


def reconstruct_frames(frames_bgr, names: list[str], work: Path, config: SfmConfig, keep: np.ndarray | None = None,
                       seed_pairs: set[tuple[int, int]] = frozenset(),
                       rotations: dict[tuple[int, int], np.ndarray] | None = None, log=print) -> SfmResult:
    """Pose a sequence of equirect frames (BGR arrays, in time order); ``keep`` is False on the rig."""
    start = time.perf_counter()
    frames_bgr = list(frames_bgr)
    images = write_inputs(config.route, frames_bgr, names, keep, work / "images", work / "masks", config)
    specs = rig_specs(frames_bgr[0].shape[1], config) if config.route == "rig" else None
    frame_of_image = {name: k for k, frame in enumerate(images) for name in frame}
    pairs = image_pairs(config.route, frame_pairs(len(names), config.sequential_overlap, seed_pairs), images, specs,
                        rotations or {}, config)
    seconds = {"render": time.perf_counter() - start}
    filter_stationary = config.filter_stationary_matches
    if filter_stationary is None:
        filter_stationary = keep is None or bool(np.all(keep))
    db, models, run_seconds = run_colmap(work, config.route, images, pairs, specs, config, log, filter_stationary)
    seconds.update(run_seconds)
    verified = _verified_frames(db, frame_of_image)
    keypoints = _keypoint_counts(db, frame_of_image)
    registered = [{frame_of_image[im.name] for im in rec.images.values() if im.has_pose} for rec in models]
    if not models:
        return SfmResult({}, {}, keypoints, verified, [], None, 0, seconds)
    best = max(range(len(models)), key=lambda m: len(registered[m]))
    rec = models[best]
    elsewhere = set().union(*(r for m, r in enumerate(registered) if m != best)) - registered[best]
    c2w: dict[int, np.ndarray] = {}
    errors: dict[int, list[float]] = {}
    per_image_error = reprojection_errors(rec)
    points_seen = points_seen_per_frame(rec, frame_of_image)
    unsupported = {k: n for k, n in points_seen.items() if n < config.min_frame_points}
    for image in rec.images.values():
        if not image.has_pose:
            continue
        k = frame_of_image[image.name]
        if k in unsupported:
            continue
        c2w_image = cv.invert_pose(np.asarray(image.cam_from_world().matrix(), np.float64))
        if config.route == "rig":
            cam = int(image.name[3:5])
            c2w_image = c2w_image @ cv.make_pose(specs[cam].R_frame_from_view.T, np.zeros(3))
        c2w.setdefault(k, c2w_image)
        if image.name in per_image_error:
            errors.setdefault(k, []).append(per_image_error[image.name])
    ply = work / "points.ply"
    rec.export_PLY(str(ply))
    return SfmResult(c2w, {k: float(np.mean(v)) for k, v in errors.items()}, keypoints, verified,
                     sorted(map(len, registered), reverse=True), ply, rec.num_points3D(), seconds, elsewhere,
                     unsupported)


def points_seen_per_frame(rec, frame_of_image: dict[str, int]) -> dict[int, int]:
    """3D points each posed frame observes (all its cameras). The global mapper poses a frame from
    rotation averaging alone, so a static or purely rotating camera gets every frame "registered"
    with almost no triangulated points; such a pose says nothing about where the camera was."""
    seen: dict[int, set[int]] = {}
    for image in rec.images.values():
        if image.has_pose:
            ids = seen.setdefault(frame_of_image[image.name], set())
            ids.update(p.point3D_id for p in image.points2D if p.has_point3D())
    return {k: len(v) for k, v in seen.items()}
