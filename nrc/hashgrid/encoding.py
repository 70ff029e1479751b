"""``HashGridEncoding``: the nn.Module the rest of nrc/ uses, with a choice of backend."""
from __future__ import annotations

import torch

from .reference import hash_grid_reference
from .spec import PARAM_DTYPES, HashGridSpec, check_positions, init_table
from .tcnn_backend import TcnnHashGrid

BACKENDS = ("auto", "triton", "torch", "tcnn")


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


class HashGridEncoding(torch.nn.Module):
    """Multiresolution hash encoding, tiny-cuda-nn compatible (see ``nrc.hashgrid.spec``).

    ``config`` is tcnn's dict (otype HashGrid, n_levels, n_features_per_level,
    log2_hashmap_size, base_resolution, per_level_scale, interpolation). ``dtype`` is the
    table's dtype (float32, or float16 read with float32 accumulation); the output has it too.
    ``backend``: "torch" (reference), "triton" (fused kernels, CUDA), "tcnn" (tinycudann),
    "auto" (triton for CUDA inputs, torch otherwise). ``check_inputs`` validates that positions
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
        return "triton" if device.type == "cuda" and triton_available() else "torch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        backend = self.resolved_backend(x.device)
        if backend == "torch":
            return hash_grid_reference(x, self.table, self.spec, self.check_inputs)
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
