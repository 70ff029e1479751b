"""Synthetic-world render speed on one CPU core (goal: a 1024x512 frame in < 0.5 s).

Prints seconds per frame and the speed-up of the bounding-sphere culling over casting every
ray against every object (both measured here, same scene, same frame).
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time  # noqa: E402

import numpy as np  # noqa: E402

from ingest.synth import CameraPathConfig, camera_to_world, make_scene, render_equirect  # noqa: E402
from ingest.synth import render as render_module  # noqa: E402


def best_of(fn, repeats=5):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times))


def main():
    scene = make_scene(0, 6, moving_object=True)
    c2w = camera_to_world(1.0, CameraPathConfig(), 0)
    best, median = best_of(lambda: render_equirect(scene, c2w, 512, 1024, 1.0))
    # Baseline in the same run: disable culling (every ray is a candidate for every object).
    original = render_module._bounding_sphere_candidates
    render_module._bounding_sphere_candidates = lambda o, d, *a: np.arange(len(d))
    try:
        base_best, _ = best_of(lambda: render_equirect(scene, c2w, 512, 1024, 1.0), repeats=3)
    finally:
        render_module._bounding_sphere_candidates = original
    print(f"synth render 1024x512, 1 thread: best {best:.3f} s, median {median:.3f} s per frame "
          f"(goal < 0.5 s: {'met' if best < 0.5 else 'NOT met'})")
    print(f"culling speed-up vs all-rays-all-objects: {base_best / best:.2f}x ({base_best:.3f} s baseline)")


if __name__ == "__main__":
    main()
