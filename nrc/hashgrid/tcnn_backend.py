"""Optional tiny-cuda-nn backend: tcnn's own kernels reading and training *our* table.

tcnn's torch module keeps its parameters in ``.params``; we hand it the encoding's table
Parameter, so the state dict, the optimiser and the layout stay ours and any backend can
take over a table trained here.
"""
from __future__ import annotations

import torch

from .spec import HashGridSpec


def tcnn_available() -> bool:
    try:
        import tinycudann  # noqa: F401
    except Exception:  # ImportError, or EnvironmentError raised by tcnn without a usable GPU
        return False
    return True


class TcnnHashGrid:
    """Callable wrapper (deliberately not an nn.Module, so tcnn's copy is not registered twice)."""

    def __init__(self, spec: HashGridSpec, table: torch.nn.Parameter):
        try:
            import tinycudann
        except Exception as error:
            raise ValueError(f"backend 'tcnn' needs the tinycudann package ({error})") from error
        if not table.is_cuda:
            raise ValueError("backend 'tcnn' needs the table on a CUDA device")
        self.module = tinycudann.Encoding(spec.n_input_dims, spec.to_config(), dtype=table.dtype).to(table.device)
        if self.module.params.numel() != spec.n_params:
            raise ValueError(f"tinycudann expects {self.module.params.numel()} parameters for this config, "
                             f"the spec computes {spec.n_params}: layouts disagree")
        self.module.params = table

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)
