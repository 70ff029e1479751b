"""ingest/: from 360° videos to a sharded dataset of frames and views (plus the project's
conventions, errors, atomic writes, shards and the synthetic world that everything builds on)."""
import os

# Before anything loads OpenMP (torch, via ingest.conventions): idle OpenMP threads sleep instead
# of spinning. On a shared or busy CPU spinning made `odin nrc fit` 10x slower (tiny preset, 30 s,
# load ~5 on 2 cores: 26 steps with ACTIVE, 268 with PASSIVE). An explicit user setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# MKL's strict conditional numerical reproducibility (read at its first call, so before any
# matrix product): without it, on an AVX-512 Xeon a product that reduces over many rows (every
# Linear's weight gradient) split its sum by thread count, and NRC fits at 1 and 2 threads
# differed in the last bits; with it they are byte-identical (tests/test_crash_safety.py) and a
# cpu-preset step costs ~5% more (80 steps of fern at 128 px, 5 runs each: median 16.1 vs 15.3 s).
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
# OpenCV must load its zlib before pycolmap does: importing pycolmap first makes every later PNG
# encode (cv2 or PIL) corrupt the heap. Every package imports ingest, so this fixes the order once.
import cv2  # noqa: F401
