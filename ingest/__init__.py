"""ingest/: from 360° videos to a sharded dataset of frames and views (plus the project's
conventions, errors, atomic writes, shards and the synthetic world that everything builds on)."""
# OpenCV must load its zlib before pycolmap does: importing pycolmap first makes every later PNG
# encode (cv2 or PIL) corrupt the heap. Every package imports ingest, so this fixes the order once.
import cv2  # noqa: F401
