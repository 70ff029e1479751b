"""``HashGridEncoding``: the nn.Module the rest of nrc/ uses, with a choice of backend."""
from __future__ import annotations

import warnings

import torch

from . import cpu_backend
from .reference import hash_grid_reference
from .spec import PARAM_DTYPES, HashGridSpec, check_positions, init_table
from .tcnn_backend import TcnnHashGrid

BACKENDS = ("auto", "cpu", "triton", "torch", "tcnn")


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


_warned_no_cpu_backend = False


def _cpu_backend_or_warn() -> bool:
    """Whether the C++ CPU kernels are usable (building them on first use); says once per process
    why not when they are not."""
    global _warned_no_cpu_backend
    if cpu_backend.cpu_backend_available():
        return True
    if not _warned_no_cpu_backend:
        _warned_no_cpu_backend = True
        warnings.warn(f"nrc.hashgrid: the fast CPU backend could not be built ({cpu_backend.unavailable_reason()}); "
                      "using the slow torch reference (it needs g++ and ninja)", RuntimeWarning, stacklevel=3)
    return False


class HashGridEncoding(torch.nn.Module):
    """Multiresolution hash encoding, tiny-cuda-nn compatible (see ``nrc.hashgrid.spec``).

    ``config`` is tcnn's dict (otype HashGrid, n_levels, n_features_per_level,
    log2_hashmap_size, base_resolution, per_level_scale, interpolation). ``dtype`` is the
    table's dtype (float32, or float16 read with float32 accumulation); the output has it too.
    ``backend``: "torch" (reference), "cpu" (C++/OpenMP kernels), "triton" (fused kernels, CUDA),
    "tcnn" (tinycudann), "auto" (triton for CUDA inputs, cpu for CPU inputs; the reference, after
    one warning, where those cannot be built). ``check_inputs`` validates that positions
    lie in [0, 1] and are not NaN, at the cost of one device sync per call.
    Input (N, n_input_dims) in [0, 1]; output (N, n_levels * n_features_per_level).
    """

    def __init__(self, n_input_dims: int = 3, config: dict | None = None, *, backend: str = "auto",
                 dtype: torch.dtype = torch.float32, device=None, check_inputs: bool = True):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if dtype not in PARAM_DTYPES:
            raise ValueError(f"dtype must be torch.float32 or torch.float16, got {dtype}")
        if backend == "triton" and not triton_available():
            raise ValueError("backend 'triton' needs the triton package (pip install triton)")
        if backend == "cpu" and not cpu_backend.cpu_backend_available():
            raise ValueError(f"backend 'cpu' could not build its kernels ({cpu_backend.unavailable_reason()})")
        self.spec = HashGridSpec.from_config(n_input_dims, {} if config is None else config)
        self.backend = backend
        self.check_inputs = check_inputs
        self.table = torch.nn.Parameter(init_table(torch.empty(self.spec.n_params, dtype=dtype, device=device)))
        self._tcnn = None

    @property
    def n_input_dims(self) -> int:
        return self.spec.n_input_dims

    @property
    def n_output_dims(self) -> int:
        return self.spec.n_output_dims

    def resolved_backend(self, device: torch.device) -> str:
        if self.backend != "auto":
            return self.backend
        if device.type == "cuda":
            return "triton" if triton_available() else "torch"
        if device.type == "cpu" and _cpu_backend_or_warn():
            return "cpu"
        return "torch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        backend = self.resolved_backend(x.device)
        if backend == "torch":
            return hash_grid_reference(x, self.table, self.spec, self.check_inputs)
        if backend == "cpu":
            return cpu_backend.hash_grid_cpu(x, self.table, self.spec, self.check_inputs)
        if backend == "triton":
            from .triton_backend import hash_grid_triton  # triton is optional on CPU-only installs
            return hash_grid_triton(x, self.table, self.spec, self.check_inputs)
        check_positions(x, self.spec, self.check_inputs)
        if self._tcnn is None or self._tcnn.module.params is not self.table:
            self._tcnn = TcnnHashGrid(self.spec, self.table)
        return self._tcnn(x)

    def extra_repr(self) -> str:
        return (f"n_input_dims={self.n_input_dims}, config={self.spec.to_config()}, "
                f"backend={self.backend!r}, dtype={self.table.dtype}")
