"""Long-range pairs by correspondence propagation over the graph of accepted pairs.

Accepted pairs are edges ``i -> j`` carrying ``T_j_from_i`` (translation in each pair's
scene-depth unit). Within a connected component, the pose between two frames further apart
than the mining window is composed along the shortest path (fewest edges); that guess
pre-filters the matches of the long-range pair before RANSAC, and the verified pose must
agree with it. Composed translations mix the depth units of their edges; neighbouring frames
see similar depths, so this is good enough for a guess, never stored as a result.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from ingest import conventions as cv


class PairGraph:
    def __init__(self, n_frames: int):
        self.n = n_frames
        self.edges: dict[int, dict[int, np.ndarray]] = {k: {} for k in range(n_frames)}

    def add(self, i: int, j: int, T_j_from_i: np.ndarray) -> None:
        self.edges[i][j] = np.asarray(T_j_from_i, np.float64)
        self.edges[j][i] = cv.invert_pose(self.edges[i][j])

    def components(self) -> list[list[int]]:
        seen, comps = set(), []
        for start in range(self.n):
            if start in seen or not self.edges[start]:
                continue
            comp, queue = [], deque([start])
            seen.add(start)
            while queue:
                k = queue.popleft()
                comp.append(k)
                for m in self.edges[k]:
                    if m not in seen:
                        seen.add(m)
                        queue.append(m)
            comps.append(sorted(comp))
        return comps

    def composed_from(self, i: int) -> dict[int, np.ndarray]:
        """``T_k_from_i`` for every k reachable from i, along breadth-first (fewest-edge) paths."""
        poses = {i: np.eye(4)}
        queue = deque([i])
        while queue:
            k = queue.popleft()
            for m, T_m_from_k in self.edges[k].items():
                if m not in poses:
                    poses[m] = T_m_from_k @ poses[k]
                    queue.append(m)
        return poses

    @staticmethod
    def agrees(T_guess: np.ndarray, result, max_rotation_deg: float) -> bool:
        return float(cv.rotation_angle_deg(T_guess[:3, :3], result.R)) <= max_rotation_deg


def propose_long_range(graph: PairGraph, window: int, per_frame: int,
                       max_baseline: float = 1.5) -> list[tuple[int, int, np.ndarray]]:
    """(i, k, T_k_from_i guess) for up to ``per_frame`` frames k > i + window per frame i.

    The nearest reachable frames beyond the window come first; a composed baseline above
    ``max_baseline`` scene depths is unlikely to share much of the view, so it is skipped.
    """
    proposals = []
    for i in range(graph.n):
        if not graph.edges[i] or per_frame <= 0:
            continue
        poses = graph.composed_from(i)
        far = sorted(k for k in poses if k > i + window and np.linalg.norm(poses[k][:3, 3]) <= max_baseline)
        proposals += [(i, k, poses[k]) for k in far[:per_frame]]
    return proposals
