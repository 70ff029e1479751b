"""Builds nrc's C++/OpenMP CPU kernels into ctypes libraries (the hash grid's, the codebook's).

``torch.utils.cpp_extension.load`` compiles a source with g++ and ninja at first use and caches
the library in torch's extension directory (rebuilt when the source changes). The sources include
no torch or Python header, so a build takes seconds. Callers keep the torch version of every
kernel as the reference and fall back to it when the build fails.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
from pathlib import Path

# No -march=native: the build cache may be shared by machines of different kinds. No contraction
# into fma, so that the float arithmetic stays the reference's.
CFLAGS = ["-O3", "-fopenmp", "-ffp-contract=off"]
# Included by every kernel (its per-machine code paths), so part of every cache key.
TARGETS_HEADER = Path(__file__).with_name("targets.h")


def _put_ninja_on_path() -> None:
    """torch runs ``ninja`` from PATH; the pip package's binary is not there when the venv's
    scripts are run without activating it (``.venv/bin/odin``)."""
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def build_library(name: str, source: Path, extra_cflags: tuple[str, ...] = (),
                  headers: tuple[Path, ...] = ()) -> ctypes.CDLL:
    """Compile ``source`` (cached) and load it; raises when there is no compiler or the build fails.
    ``headers`` it includes (and targets.h) are part of the cache key (torch's cache only hashes
    the source)."""
    from torch.utils.cpp_extension import load

    _put_ninja_on_path()
    digest = hashlib.sha1(b"".join(Path(h).read_bytes() for h in (*headers, TARGETS_HEADER))).hexdigest()[:16]
    path = load(name, [str(source)], extra_cflags=CFLAGS + list(extra_cflags) + [f"-DODIN360_HEADERS={digest}"],
                extra_ldflags=["-fopenmp"], is_python_module=False, verbose=False)
    return ctypes.CDLL(path)


def failure_reason(error: Exception) -> str:
    """One line for a failed build: the exception's type and the last line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"[:300]


class LazyLibrary:
    """A library built on first use, or None with the reason in ``failure`` when it cannot be."""

    def __init__(self, build):
        self._build = build
        self.library: ctypes.CDLL | None = None
        self.failure: str | None = None

    def load(self) -> ctypes.CDLL | None:
        if self.library is None and self.failure is None:
            try:
                self.library = self._build()
            except Exception as error:  # no compiler, no ninja, a failed build or load
                self.failure = failure_reason(error)
        return self.library


def load_cpu_kernels() -> dict[str, str]:
    """Build (or load from the cache) every C++ kernel nrc uses on CPU; returns {kernel: reason}
    for those that could not be built (their torch references run instead). A build takes ~20 s
    once per machine and source version (torch's cache is shared by checkouts of the repo), so
    budgeted callers do this before their clock starts, as they do their imports."""
    from nrc import codebook_cpu, field_cpu
    from nrc.hashgrid import cpu_backend

    kernels = {"hash grid": cpu_backend._kernels, "codebook": codebook_cpu._kernels, "proposal field": field_cpu._kernels}
    return {name: library.failure for name, library in kernels.items() if library.load() is None}
