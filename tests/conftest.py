"""Shared fixtures: a tiny synthetic world (built once per session) and the real data folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_collection_modifyitems(config, items):
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the repo; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """A 256x128, 4 s, 5 fps synthetic world with 6 static objects and one moving sphere."""
    from ingest.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth") / "world"
    return generate(root, SynthConfig(seconds=4.0, fps=5.0, width=256, seed=3, moving_object=True), progress=False)


@pytest.fixture(autouse=True)
def _ieee_floats_after_each_test():
    """Odin's trainer and pipeline flush denormals process-wide (a 20x CPU slowdown otherwise); a
    command run in-process must not leave that to later tests (hypothesis refuses to run under it)."""
    yield
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_flush_denormal(False)
