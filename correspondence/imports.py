"""Posed scenes in other tools' formats, and the choice of reader from a folder's contents.

- IDR / NeuS / MonoSDF ``cameras.npz`` (as DTU is distributed): ``world_mat_i = K [R|t]`` (4x4) and
  ``scale_mat_i``, which maps the unit sphere around the object into the world. As those projects do,
  the camera is ``decomposeProjectionMatrix(world_mat_i @ scale_mat_i)``, so poses come out in the
  normalised frame (the object inside the unit sphere, which becomes the scene's box). Their pixel
  grid has pixel centres on integers, ours at +0.5: cx and cy move by half a pixel. Images are the
  sorted files of ``image/`` or ``images/`` (or MonoSDF's ``*_rgb.png``), masks those of ``mask/``.
- COLMAP sparse models (``cameras/images/points3D`` as .bin or .txt), read by pycolmap. COLMAP's camera
  axes and pixel-centre convention are ours, so ``c2w = inv(cam_from_world)`` and K carry over as they
  are; radial and OPENCV distortion is kept on the frame (OpenCV's coefficient order).
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import cv2  # before pycolmap: pycolmap's zlib otherwise breaks cv2's PNG writer
import numpy as np

from correspondence.nerfstudio import (PosedFrame, PosedScene, _image_size, load_llff, load_synthetic_world,
                                       load_transforms)
from ingest import conventions as cv
from ingest.errors import OdinError

log = logging.getLogger(__name__)

NPZ_NAMES = ("cameras.npz", "cameras_sphere.npz")
COLMAP_STEMS = ("cameras", "images", "points3D")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_any(path: str | Path, images_dir: str | Path | None = None) -> PosedScene:
    """The posed scene at ``path`` (a file, or a folder whose contents say its format); frames keep their
    lens distortion. ``images_dir`` overrides where a COLMAP model's images are looked for."""
    path = Path(path)
    if not path.exists():
        raise OdinError("scene not found", path)
    if path.is_file():
        if path.name in NPZ_NAMES:
            return load_cameras_npz(path)
        if path.suffix in (".bin", ".txt") and path.stem in COLMAP_STEMS:
            return load_colmap(path.parent, images_dir)
        return load_transforms(path)
    if (path / "transforms.json").exists():
        return load_transforms(path / "transforms.json")
    if (path / "poses_bounds.npy").exists():
        return load_llff(path)
    npz = next((path / n for n in NPZ_NAMES if (path / n).is_file()), None)
    if npz is not None:
        return load_cameras_npz(npz)
    model = find_colmap_model(path)
    if model is not None:
        return load_colmap(model, images_dir)
    if (path / "scene.json").exists() and (path / "cameras.json").exists():
        return load_synthetic_world(path)
    raise OdinError("not a scene: expected transforms.json, poses_bounds.npy, cameras.npz, a COLMAP model "
                    "(cameras + images .bin/.txt, here or in sparse/0) or a synthetic world", path)


# --------------------------------------------------------------------------- IDR / NeuS / MonoSDF
def decompose_projection(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x4 ``K [R|t]`` (up to scale) -> (K with K[2,2] = 1, OpenCV-axes camera-to-world)."""
    K, R, c = cv2.decomposeProjectionMatrix(np.asarray(P, np.float64)[:3, :4])[:3]
    D = np.diag(np.where(np.diag(K) < 0, -1.0, 1.0))  # the RQ split leaves signs to choose: K's diagonal > 0
    K, R = K @ D, D @ R
    if np.linalg.det(R) < 0:  # P given with a negative overall scale
        R = -R
    return K / K[2, 2], cv.make_pose(R.T, (c[:3] / c[3]).ravel())


def _sorted_images(folder: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_SUFFIXES)


def _npz_images(folder: Path, n: int, npz: Path) -> list[Path]:
    for sub in ("image", "images"):
        if (folder / sub).is_dir():
            images = _sorted_images(folder / sub)
            break
    else:
        images = _sorted_images(folder, "*_rgb.*")  # MonoSDF keeps 000000_rgb.png beside cameras.npz
        sub = "*_rgb.png"
    if len(images) != n:
        raise OdinError(f"{n} cameras but {len(images)} images in {folder / sub}", npz)
    return images


def _npz_masks(folder: Path, n: int) -> list[Path | None]:
    for sub in ("mask", "masks"):
        if (folder / sub).is_dir():
            masks = _sorted_images(folder / sub)
            if len(masks) == n:
                return list(masks)
            log.warning("%s: %d masks for %d cameras; masks ignored", folder / sub, len(masks), n)
    return [None] * n


def load_cameras_npz(path: str | Path) -> PosedScene:
    path = Path(path)
    try:
        with np.load(path) as npz:
            mats = {k: np.asarray(npz[k], np.float64) for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise OdinError(f"unreadable .npz ({type(e).__name__})", path) from None
    ids = sorted(int(k[10:]) for k in mats if k.startswith("world_mat_") and k[10:].isdigit())
    if not ids:
        raise OdinError("no world_mat_<i> arrays: not an IDR/NeuS cameras.npz", path)
    images = _npz_images(path.parent, len(ids), path)
    masks = _npz_masks(path.parent, len(ids))
    frames = []
    for i, image, mask in zip(ids, images, masks):
        world, scale = mats[f"world_mat_{i}"], mats.get(f"scale_mat_{i}", np.eye(4))
        if world.shape not in ((4, 4), (3, 4)) or scale.shape != (4, 4):
            raise OdinError(f"world_mat_{i} must be 4x4 (or 3x4) and scale_mat_{i} 4x4", path)
        P = world[:3] @ scale
        if not np.all(np.isfinite(P)) or np.linalg.cond(P[:, :3]) > 1e12:
            raise OdinError(f"camera {i}: world_mat_{i} @ scale_mat_{i} is not a finite projection matrix", path)
        K, c2w = decompose_projection(P)
        if abs(K[0, 1]) > 1e-3 * K[0, 0]:
            log.warning("%s: camera %d has skew %.3g, ignored", path, i, K[0, 1])
        w, h = _image_size(image)
        intr = cv.Intrinsics(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]) + 0.5, float(K[1, 2]) + 0.5, w, h)
        frames.append(PosedFrame(image, c2w, w, h, intr, "PINHOLE", None, None, mask))
    has_scale = any(f"scale_mat_{i}" in mats for i in ids)
    aabb = ([-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]) if has_scale else None
    return PosedScene(frames, path, aabb=aabb, extra={"format": "cameras.npz"})


# --------------------------------------------------------------------------- COLMAP
def is_colmap_model(folder: Path) -> bool:
    return any(all((folder / f"{s}{ext}").is_file() for s in ("cameras", "images")) for ext in (".bin", ".txt"))


def find_colmap_model(folder: Path) -> Path | None:
    """The model in ``folder`` itself or in its ``sparse/0`` / ``sparse`` (COLMAP's and nerfstudio's layouts)."""
    return next((d for d in (folder, folder / "sparse" / "0", folder / "sparse") if is_colmap_model(d)), None)


def _colmap_intrinsics(cam, where: Path) -> tuple[cv.Intrinsics | None, tuple[float, ...] | None]:
    """pycolmap camera -> (K, OpenCV distortion (k1, k2, p1, p2, k3) or None); K None = equirectangular."""
    name, p, w, h = cam.model.name, [float(x) for x in cam.params], int(cam.width), int(cam.height)
    if name == "EQUIRECTANGULAR":
        return None, None
    layouts = {  # model -> (fx, fy, cx, cy, distortion) from its params
        "SIMPLE_PINHOLE": lambda f, cx, cy: (f, f, cx, cy, ()),
        "PINHOLE": lambda fx, fy, cx, cy: (fx, fy, cx, cy, ()),
        "SIMPLE_RADIAL": lambda f, cx, cy, k: (f, f, cx, cy, (k,)),
        "RADIAL": lambda f, cx, cy, k1, k2: (f, f, cx, cy, (k1, k2)),
        "OPENCV": lambda fx, fy, cx, cy, k1, k2, p1, p2: (fx, fy, cx, cy, (k1, k2, p1, p2)),
        "FULL_OPENCV": lambda fx, fy, cx, cy, k1, k2, p1, p2, k3, k4, k5, k6:
            (fx, fy, cx, cy, (k1, k2, p1, p2, k3) if k4 == k5 == k6 == 0 else None),
    }
    if name not in layouts:
        raise OdinError(f"camera {cam.camera_id}: COLMAP model {name} is not supported "
                        f"({', '.join(layouts)}, EQUIRECTANGULAR)", where)
    fx, fy, cx, cy, dist = layouts[name](*p)
    if dist is None:
        raise OdinError(f"camera {cam.camera_id}: FULL_OPENCV with rational terms k4-k6 is not supported", where)
    dist = tuple(dist) + (0.0,) * (5 - len(dist))
    return cv.Intrinsics(fx, fy, cx, cy, w, h), (dist if any(dist) else None)


def _colmap_image_dir(model: Path, first_name: str, images_dir) -> Path:
    if images_dir is not None:
        candidates = [Path(images_dir)]
    else:
        parents = [model, model.parent, model.parent.parent]
        candidates = [p / "images" for p in parents] + parents
    found = next((d for d in candidates if (d / first_name).is_file()), None)
    if found is None:
        raise OdinError(f"COLMAP image {first_name} not found in {', '.join(map(str, candidates))} "
                        "(give the image folder with --images)", model)
    return found


def load_colmap(model: str | Path, images_dir: str | Path | None = None) -> PosedScene:
    """A COLMAP sparse model (bin or txt); unregistered images and missing files are skipped with a warning."""
    import pycolmap

    model = Path(model)
    try:
        rec = pycolmap.Reconstruction(str(model))
    except (ValueError, RuntimeError) as e:
        raise OdinError(f"unreadable COLMAP model ({str(e).splitlines()[0] if str(e) else type(e).__name__})",
                        model) from None
    images = sorted((im for im in rec.images.values() if im.has_pose), key=lambda im: im.name)
    if not images:
        raise OdinError("COLMAP model has no registered images", model)
    if len(images) < rec.num_images():
        log.warning("%s: %d of %d images are not registered; skipped", model, rec.num_images() - len(images),
                    rec.num_images())
    root = _colmap_image_dir(model, images[0].name, images_dir)
    frames = []
    for im in images:
        path = root / im.name
        if not path.is_file():
            log.warning("%s: image %s is missing; skipped", model, path)
            continue
        K, dist = _colmap_intrinsics(rec.cameras[im.camera_id], model)
        cam = rec.cameras[im.camera_id]
        c2w = cv.invert_pose(np.asarray(im.cam_from_world().matrix(), np.float64))
        frames.append(PosedFrame(path.resolve(), c2w, int(cam.width), int(cam.height), K,
                                 "EQUIRECTANGULAR" if K is None else "PINHOLE", None, dist))
    return PosedScene(frames, model, extra={"format": "colmap"})
