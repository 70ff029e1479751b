"""Image, depth, segmentation and geometry metrics for held-out evaluation and the benchmark."""
from __future__ import annotations

import numpy as np

from ingest.image_metrics import psnr, ssim  # noqa: F401  (re-exported: one definition project-wide)


def depth_errors(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """Absolute relative error and RMSE (target's units) over finite, positive, masked pixels."""
    ok = np.isfinite(target) & (target > 0) & np.isfinite(pred)
    if mask is not None:
        ok &= mask
    p, t = pred[ok].astype(np.float64), target[ok].astype(np.float64)
    return {"abs_rel": float(np.mean(np.abs(p - t) / t)), "rmse": float(np.sqrt(np.mean((p - t) ** 2)))}


def adjusted_rand_index(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """ARI (Hubert & Arabie) from the contingency table; 1 = identical partitions."""
    a = np.asarray(labels_true).reshape(-1)
    b = np.asarray(labels_pred).reshape(-1)
    if a.size != b.size:
        raise ValueError(f"label arrays differ in size: {a.size} vs {b.size}")
    n = a.size
    if n < 2:
        return 1.0
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1), np.int64)
    np.add.at(table, (ai, bi), 1)
    comb = lambda x: x * (x - 1) / 2  # noqa: E731
    sum_ij = comb(table).sum()
    sum_a, sum_b = comb(table.sum(1)).sum(), comb(table.sum(0)).sum()
    expected = sum_a * sum_b / comb(n)
    max_index = (sum_a + sum_b) / 2
    if max_index == expected:  # both partitions trivial (all one cluster, or all singletons)
        return 1.0
    return float((sum_ij - expected) / (max_index - expected))


def adjusted_rand_index_reference(labels_true: np.ndarray, labels_pred: np.ndarray) -> float:
    """ARI by counting agreeing pairs directly, O(n^2): the reference for small inputs."""
    a = np.asarray(labels_true).reshape(-1)
    b = np.asarray(labels_pred).reshape(-1)
    i, j = np.triu_indices(a.size, 1)
    same_a, same_b = a[i] == a[j], b[i] == b[j]
    n_pairs = len(i)
    both, pa, pb = np.sum(same_a & same_b), np.sum(same_a), np.sum(same_b)
    expected = pa * pb / n_pairs
    max_index = (pa + pb) / 2
    return 1.0 if max_index == expected else float((both - expected) / (max_index - expected))


def foreground_ari(gt_ids: np.ndarray, pred_labels: np.ndarray, background_id: int = 0) -> float:
    """FG-ARI: ARI over pixels whose ground-truth id is not the background (here: the room)."""
    fg = np.asarray(gt_ids) != background_id
    if fg.sum() < 2:
        return float("nan")
    return adjusted_rand_index(np.asarray(gt_ids)[fg], np.asarray(pred_labels)[fg])


def majority_codes(gt_ids: np.ndarray, pred_labels: np.ndarray, background_id: int = 0) -> dict[int, int]:
    """{object id: the predicted label most of its pixels get} over the given pixels."""
    gt, pred = np.asarray(gt_ids).reshape(-1), np.asarray(pred_labels).reshape(-1)
    return {int(i): int(np.bincount(pred[gt == i]).argmax()) for i in np.unique(gt) if i != background_id}


def cross_scene_consistency(majorities: list[dict[int, int]]) -> tuple[float, int]:
    """(share of the object types seen in two or more scenes whose majority code is the same in
    every one of them, how many such types), from :func:`majority_codes` per scene. NaN when no
    type recurs. (Alone it rewards one code for everything: read it beside FG-ARI.)"""
    seen: dict[int, set[int]] = {}
    counts: dict[int, int] = {}
    for per_scene in majorities:
        for obj, code in per_scene.items():
            seen.setdefault(obj, set()).add(code)
            counts[obj] = counts.get(obj, 0) + 1
    recurring = [obj for obj, n in counts.items() if n >= 2]
    if not recurring:
        return float("nan"), 0
    return float(np.mean([len(seen[obj]) == 1 for obj in recurring])), len(recurring)


def kmeans_labels(points: np.ndarray, k: int, seed: int = 0, iterations: int = 50) -> np.ndarray:
    """(N,) cluster of each of ``points`` (N, D) by Lloyd's k-means from a k-means++ start
    (seeded: the same points give the same labels); at most ``k`` clusters, fewer when the
    points have fewer distinct values."""
    x = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(len(x))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        if d2.sum() <= 0:
            break
        centres.append(x[rng.choice(len(x), p=d2 / d2.sum())])
        d2 = np.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
    c = np.stack(centres)
    labels = np.full(len(x), -1)
    for _ in range(iterations):
        new = (((x[:, None, :] - c[None]) ** 2).sum(-1)).argmin(1)
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(len(c)):
            if (labels == j).any():
                c[j] = x[labels == j].mean(0)
    return labels


def chamfer_distance(points_a: np.ndarray, points_b: np.ndarray) -> float:
    """Symmetric mean nearest-neighbour distance: (mean d(a->B) + mean d(b->A)) / 2."""
    from scipy.spatial import cKDTree

    da = cKDTree(points_b).query(points_a)[0]
    db = cKDTree(points_a).query(points_b)[0]
    return float((da.mean() + db.mean()) / 2)
