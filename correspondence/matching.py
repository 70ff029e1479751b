"""Mutual nearest-neighbour descriptor matching with Lowe's ratio test.

A match (i, j) is kept when j is i's nearest neighbour, i is j's nearest neighbour, and in
both directions the nearest distance is below ``ratio`` times the second nearest.
:func:`mutual_ratio_matches` (float32 matrix products, row-wise minima only) is the
fast path — it replaced two OpenCV ``BFMatcher.knnMatch`` calls that dominated mining time
(bench/mine.py prints the ratio);
:func:`mutual_ratio_matches_reference` spells the rule out in numpy and is the test oracle.
"""
from __future__ import annotations

import numpy as np


def _ratio_nn(dist: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: nearest column, its distance, and whether it passes the ratio test."""
    order = np.argsort(dist, axis=1)[:, :2]
    rows = np.arange(len(dist))
    d1 = dist[rows, order[:, 0]]
    d2 = dist[rows, order[:, 1]] if dist.shape[1] > 1 else np.full(len(dist), np.inf)
    return order[:, 0], d1, d1 < ratio * d2


def mutual_ratio_matches_reference(desc_a: np.ndarray, desc_b: np.ndarray, ratio: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """(M, 2) index pairs and (M,) nearest/second-nearest distance ratios, in numpy."""
    if len(desc_a) < 2 or len(desc_b) < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0)
    a, b = desc_a.astype(np.float64), desc_b.astype(np.float64)
    dist = np.sqrt(np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0))
    nn_ab, d_ab, ok_ab = _ratio_nn(dist, ratio)
    nn_ba, _, ok_ba = _ratio_nn(dist.T, ratio)
    i = np.flatnonzero(ok_ab & (nn_ba[nn_ab] == np.arange(len(a))) & ok_ba[nn_ab])
    second = np.sort(dist[i], axis=1)[:, 1]
    return np.stack([i, nn_ab[i]], axis=1), d_ab[i] / np.maximum(second, 1e-12)


def _nearest_two(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of ``a``: nearest row of ``b`` and the squared distances to the nearest and second nearest.

    Everything runs along contiguous rows: a column-wise argmin over the same matrix is ~25x
    slower (strided reads), so the other direction calls this again with its own product.
    ``|a_i|^2`` is constant along a row, so it is added to the two minima only.
    """
    dist2 = (-2 * a) @ b.T  # scaling the small factor, not the product, saves a pass
    dist2 += (b * b).sum(1)[None]
    rows = np.arange(len(a))
    nn = np.argmin(dist2, axis=1)
    d1 = dist2[rows, nn].copy()
    dist2[rows, nn] = np.inf  # mask the nearest out: two argmin-style passes beat a partial sort
    d2 = np.min(dist2, axis=1)
    a_sq = (a * a).sum(1)
    return nn, np.maximum(d1 + a_sq, 0), np.maximum(d2 + a_sq, 0)


def mutual_ratio_matches(desc_a: np.ndarray, desc_b: np.ndarray, ratio: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    """Same rule as the reference: float32 GEMMs for the squared distances, row-wise minima."""
    if len(desc_a) < 2 or len(desc_b) < 2:
        return np.zeros((0, 2), np.int64), np.zeros(0)
    a, b = np.ascontiguousarray(desc_a, np.float32), np.ascontiguousarray(desc_b, np.float32)
    nn_ab, d1_ab, d2_ab = _nearest_two(a, b)
    nn_ba, d1_ba, d2_ba = _nearest_two(b, a)
    # The ratio test on distances, written on squared distances: d1 < r d2  <=>  d1^2 < r^2 d2^2.
    ok_ab, ok_ba = d1_ab < ratio**2 * d2_ab, d1_ba < ratio**2 * d2_ba
    i = np.flatnonzero(ok_ab & (nn_ba[nn_ab] == np.arange(len(a))) & ok_ba[nn_ab])
    return np.stack([i, nn_ab[i]], axis=1).astype(np.int64), np.sqrt(d1_ab[i] / np.maximum(d2_ab[i], 1e-12))
