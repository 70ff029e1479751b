"""Which cues, seen perfectly, separate the family's object types? (issue 15)

    python bench/nrc_objects_cues.py [--coloured] [--out DIR]

On the held-out frames of bench/nrc_objects.py's family (48 px, every 8th capture moment), k-means
of each cue taken from the *true* renders, all rooms together, scored by FG-ARI as the codes are.
Per-pixel cues are clustered over the object pixels alone with k = 8 (the codebook's size), so
walls take no cluster: what a per-point code following that cue can be expected to reach. The
pooled cues show what grouping the pixels first adds:
- chroma: colour with brightness divided out (what objects mode's shaded codes follow);
- + true curvature / + true height: with the spread of the true surface normals in 3x3 pixels,
  or the true height of the surface, beside the chroma (local shape, seen perfectly);
- superpixels: mean and spread of colour over Felzenszwalb segments of the true colour and depth
  (all pixels, k = 8 as the bench's appearance rows);
- instances: mean chroma over each true object instance in each frame, k = M. FG-ARI is scored
  within one frame, where each type appears once, so any labelling constant per instance scores
  1.0; clustering the instances by colour tests whether the types are told apart across frames.
The last line prints the five numbers in that order.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nrc_objects import N_TYPES, make_family  # noqa: E402  (also puts the repository on sys.path)

from ingest import argcheck as ac  # noqa: E402
from nrc.data import camera_rays, load_scene_data  # noqa: E402
from nrc.metrics import foreground_ari, kmeans_labels  # noqa: E402

HEIGHT, HOLDOUT_EVERY = 48, 8


def chroma(view) -> np.ndarray:
    rgb = view.rgb.astype(np.float64) / 255
    return 3 * rgb / rgb.sum(-1, keepdims=True).clip(1e-3)


def surface_points(view) -> np.ndarray:
    origins, directions = camera_rays(view.camera)
    points = origins + directions * view.depth.reshape(-1, 1)
    return points.reshape(*view.depth.shape, 3)


def normal_spread(view) -> np.ndarray:
    """1 - |mean of the unit normals in 3x3 pixels|: 0 on a plane, larger where the surface bends."""
    import cv2

    points = surface_points(view)
    normals = np.cross(np.gradient(points, axis=1), np.gradient(points, axis=0))
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True).clip(1e-9)
    return 1 - np.linalg.norm(cv2.blur(normals.astype(np.float32), (3, 3)), axis=-1)


def score(views, labels_per_view) -> float:
    return float(np.nanmean([foreground_ari(v.ids, labels) for v, labels in zip(views, labels_per_view)]))


def per_object_pixel(views, features) -> float:
    """k-means (k = 8) of per-pixel features over the object pixels of every frame."""
    masks = [v.ids > 0 for v in views]
    stacked = np.concatenate([f[m] for f, m in zip(features, masks)])
    labels, start, out = kmeans_labels(stacked, 8, seed=0), 0, []
    for v, m in zip(views, masks):
        seg = np.zeros(v.ids.shape, np.int64)
        seg[m] = labels[start:start + m.sum()] + 1
        start += m.sum()
        out.append(seg)
    return score(views, out)


def superpixel_pooled(views, scale: float = 400) -> float:
    from skimage.segmentation import felzenszwalb

    pooled = []
    for v in views:
        rgb = v.rgb.astype(np.float64) / 255
        with warnings.catch_warnings():  # four channels (colour and depth) are meant
            warnings.simplefilter("ignore", UserWarning)
            seg = felzenszwalb(np.concatenate([rgb, (v.depth / v.depth.max())[..., None]], -1), scale=scale, sigma=0.5,
                               min_size=5, channel_axis=-1)
        stats = np.stack([np.concatenate([rgb[seg == s].mean(0), rgb[seg == s].std(0)]) for s in range(seg.max() + 1)])
        pooled.append(stats[seg].reshape(-1, 6))
    labels, start, out = kmeans_labels(np.concatenate(pooled), 8, seed=0), 0, []
    for v in views:
        out.append(labels[start:start + v.ids.size].reshape(v.ids.shape))
        start += v.ids.size
    return score(views, out)


def instance_pooled(views) -> float:
    keys, stats = [], []
    for i, v in enumerate(views):
        c = chroma(v)
        for t in np.unique(v.ids[v.ids > 0]):
            keys.append((i, t)), stats.append(c[v.ids == t].mean(0))
    labels = kmeans_labels(np.array(stats), N_TYPES, seed=0)
    out = [np.zeros(v.ids.shape, np.int64) for v in views]
    for (i, t), label in zip(keys, labels):
        out[i][views[i].ids == t] = label + 1
    return score(views, out)


def main() -> int:
    ap = ac.OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--coloured", action="store_true", help="the coloured family (bench/nrc_objects.py --coloured)")
    ap.add_argument("--out", type=ac.out_dir, help="folder for the family (default: a temporary one)")
    args = ap.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="nrc_ceilings_"))
    worlds = make_family(out, args.coloured)
    views = [v for w in worlds for v in load_scene_data(w.root, HEIGHT, HOLDOUT_EVERY, part="held_out").views]
    chromas = [chroma(v) for v in views]
    ceilings = {
        "chroma": per_object_pixel(views, chromas),
        "+ true curvature": per_object_pixel(views, [np.concatenate([c, np.clip(20 * normal_spread(v), 0, 1)[..., None]], -1)
                                                     for c, v in zip(chromas, views)]),
        "+ true height": per_object_pixel(views, [np.concatenate([c, surface_points(v)[..., 1:2] / 2], -1)
                                                  for c, v in zip(chromas, views)]),
        "superpixels": superpixel_pooled(views),
        "instances": instance_pooled(views),
    }
    print(f"{len(views)} held-out frames of {len(worlds)} rooms, {N_TYPES} types{' (coloured)' if args.coloured else ''}")
    for name, value in ceilings.items():
        print(f"  {name:<18}FG-ARI {value:.3f}")
    print("FG-ARI of cues: " + ", ".join(f"{name} {value:.2f}" for name, value in ceilings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
