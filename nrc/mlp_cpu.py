"""Small ReLU MLPs fused into one CPU kernel (mlp_kernels.cpp): ``mlp_forward(mlp, x)`` runs an
``nn.Sequential`` of Linear layers with ReLU between them, forward and backward, on float32 CPU
tensors, and the torch modules everywhere else (they are its reference in the tests).

nrc's MLPs are narrow (16-64 units) and run on ~16k samples a step: torch spends most of their
time in separate passes over (N, width) tensors (the product, the bias, the ReLU and each of their
gradients); the kernel keeps a block of 64 samples' activations in cache through every layer.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from .native import LazyLibrary, build_library

SOURCE = Path(__file__).with_name("mlp_kernels.cpp")
MAX_WIDTH, MAX_LAYERS = 128, 8


def _build() -> ctypes.CDLL:
    library = build_library("odin360_mlp_cpu", SOURCE, ("-fno-trapping-math", "-ffp-contract=fast", "-Wno-psabi"))
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    library.mlp_forward.argtypes = [p, p, i64, i64, p, p, p, i32]
    library.mlp_backward.argtypes = [p, p, p, i64, i64, p, p, p, p, p, i32]
    library.mlp_forward.restype = library.mlp_backward.restype = i32
    return library


_kernels = LazyLibrary(_build)


def linear_layers(mlp: nn.Sequential) -> list[nn.Linear] | None:
    """The Linear layers of Linear(-ReLU-Linear)*, or None for any other shape."""
    modules = list(mlp)
    if len(modules) % 2 == 0 or not all(isinstance(m, nn.Linear) for m in modules[::2]) \
            or not all(isinstance(m, nn.ReLU) for m in modules[1::2]):
        return None
    return modules[::2]


def fused_available(mlp: nn.Sequential, x: torch.Tensor) -> bool:
    """Whether the kernel serves this MLP and input: float32 CPU tensors within its widths, no autocast."""
    layers = linear_layers(mlp)
    if layers is None or len(layers) > MAX_LAYERS or x.dim() != 2:
        return False
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and all(l.weight.dtype == torch.float32 and l.weight.device.type == "cpu" and l.bias is not None
                    and max(l.in_features, l.out_features) <= MAX_WIDTH for l in layers)
            and _kernels.load() is not None)


def _pointers(tensors) -> ctypes.Array:
    return (ctypes.c_void_p * len(tensors))(*[t.data_ptr() for t in tensors])


class _FusedMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, *params):
        x = x.contiguous()
        weights, biases = [w.contiguous() for w in params[0::2]], [b.contiguous() for b in params[1::2]]
        widths = torch.tensor([weights[0].shape[1]] + [w.shape[0] for w in weights], dtype=torch.int64)
        out = torch.empty(len(x), widths[-1].item())
        if len(x):
            status = _kernels.library.mlp_forward(x.data_ptr(), out.data_ptr(), len(x), len(weights), widths.data_ptr(),
                                                  _pointers(weights), _pointers(biases), torch.get_num_threads())
            assert status == 0, "mlp_forward: unsupported shape"
        ctx.save_for_backward(x, widths, *weights, *biases)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, widths, *params = ctx.saved_tensors
        n_layers = len(params) // 2
        weights, biases = params[:n_layers], params[n_layers:]
        grad_weights = [torch.empty_like(w) for w in weights]
        grad_biases = [torch.empty_like(b) for b in biases]
        grad_x = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        if len(x) == 0:
            grads = [g.zero_() for g in grad_weights + grad_biases]
        else:
            status = _kernels.library.mlp_backward(
                x.data_ptr(), grad_out.float().contiguous().data_ptr(), None if grad_x is None else grad_x.data_ptr(),
                len(x), n_layers, widths.data_ptr(), _pointers(weights), _pointers(biases), _pointers(grad_weights),
                _pointers(grad_biases), torch.get_num_threads())
            assert status == 0, "mlp_backward: unsupported shape"
        interleaved = [g for pair in zip(grad_weights, grad_biases) for g in pair]
        return (grad_x, *interleaved)


def mlp_forward(mlp: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``mlp(x)``: the fused kernel where ``fused_available``, else the torch modules."""
    if not fused_available(mlp, x):
        return mlp(x)
    params = [t for layer in linear_layers(mlp) for t in (layer.weight, layer.bias)]
    return _FusedMLP.apply(x, *params)
