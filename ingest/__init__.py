"""ingest/: from 360° videos to a sharded dataset of frames and views (plus the project's
conventions, errors, atomic writes, shards and the synthetic world that everything builds on)."""
import os

# Before anything loads OpenMP (torch, via ingest.conventions): idle OpenMP threads sleep instead
# of spinning. On a shared or busy CPU spinning made `odin nrc fit` 10x slower (tiny preset, 30 s,
# load ~5 on 2 cores: 26 steps with ACTIVE, 268 with PASSIVE). An explicit user setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# OpenCV must load its zlib before pycolmap does: importing pycolmap first makes every later PNG
# encode (cv2 or PIL) corrupt the heap. Every package imports ingest, so this fixes the order once.
import cv2  # noqa: F401
