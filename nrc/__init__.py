"""NRC: Neural Radiance Field Codebooks on posed 360° video (fit, discover objects, render, mesh).

The viewer's entry points: ``load_run(run_dir) -> (model, config)`` and
``render_view(model, c2w, camera, outputs=("rgb", "depth", "codes"))``. They are imported on
first use so that ``odin``'s command registration stays free of torch.
"""
from __future__ import annotations

_LAZY = {"load_run": "nrc.checkpoint", "render_view": "nrc.rendering", "fit": "nrc.trainer",
         "NRCConfig": "nrc.config", "NRCModel": "nrc.field"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'nrc' has no attribute {name!r}")
