"""NRC: Neural Radiance Field Codebooks on posed 360° video (fit, discover objects, render, mesh).

The viewer's entry points: ``load_run(run_dir) -> (model, config)`` and
``render_view(model, c2w, camera, outputs=("rgb", "depth", "codes"))``. They are imported on
first use so that ``odin``'s command registration stays free of torch.
"""
from __future__ import annotations

# ingest's environment settings (MKL's strict reproducibility, sleeping OpenMP threads) must
# precede torch's first matrix product: without them `from nrc.field import NRCModel` alone gave
# different bits at 1 and 2 threads (tests/test_nrc_codebook_cpu.py run by itself).
import ingest  # noqa: F401,E402

_LAZY = {"load_run": "nrc.checkpoint", "render_view": "nrc.rendering", "fit": "nrc.trainer",
         "NRCConfig": "nrc.config", "NRCModel": "nrc.field"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nrc' has no attribute {name!r}")
