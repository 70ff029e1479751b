"""The codebook's assignment and the code-conditioned density fused into one CPU kernel
(codebook_kernels.cpp): ``assign_and_decode(codebook, density, table, density_variation, features, detail)``.

Same contract as ``Codebook.forward`` followed by ``Decoder.density`` (the reference, which the
tests compare against), for float32 CPU tensors: returns (Assignment without ``probs``, sigma,
geo). On 49k points of the cpu preset the torch version takes ~27 ms forward and backward on 2
cores, almost all of it in ~30 memory-bound passes over (N, K + 1) and (N, D) tensors; the
kernel reads each point once each way.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from .codebook import Assignment, Codebook
from .native import LazyLibrary, build_library

SOURCE = Path(__file__).with_name("codebook_kernels.cpp")


def _build() -> ctypes.CDLL:
    # No trapping math (results unchanged): without it GCC keeps the float selects of the softmax's
    # exp as branches and does not vectorise the loop.
    library = build_library("odin360_codebook_cpu", SOURCE, ("-fno-trapping-math", "-Wno-psabi"))
    p, i64, i32, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_float
    library.codebook_density_forward.argtypes = [p] * 9 + [f32, f32, i64, i32, i32, i32, i32] + [p] * 6 + [i32]
    library.codebook_density_forward.restype = None
    library.codebook_density_backward.argtypes = [p] * 14 + [f32, f32, i64, i32, i32, i32, i32] + [p] * 8 + [i32]
    library.codebook_density_backward.restype = None
    return library


_kernels = LazyLibrary(_build)


MAX_CODES = 63  # the kernels' per-point arrays: K + 1 <= 64 codes, code and variation width <= 64
MAX_WIDTH = 64


def fused_available(codebook: Codebook, features: torch.Tensor) -> bool:
    """Whether ``assign_and_decode`` serves these features (float32 on CPU, a codebook within the
    kernels' limits, kernels built)."""
    return (features.device.type == "cpu" and features.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and codebook.n_codes <= MAX_CODES and codebook.codes.shape[1] <= MAX_WIDTH
            and (codebook.variation is None or codebook.variation.out_features <= MAX_WIDTH)
            and _kernels.load() is not None)


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class _AssignAndDecode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, detail, codes, bias, weight, bias_v, density, table, never, shut, temperature,
                density_variation, soft):
        n, d = features.shape
        k, g = table.shape
        nv = 0 if weight is None else weight.shape[0]
        sigma = torch.empty(n)
        geo = torch.empty(n, g + max(nv - 1, 0))
        slot = torch.empty(n, dtype=torch.long)
        nearest = torch.empty(n, dtype=torch.long)
        variation = torch.empty(n, nv)
        sums = torch.zeros(2, dtype=torch.float64)
        same = detail is None
        x = features if same else detail
        _kernels.library.codebook_density_forward(
            _ptr(features), _ptr(x), _ptr(codes), _ptr(bias), _ptr(never), _ptr(weight), _ptr(bias_v),
            _ptr(density), _ptr(table), density_variation, temperature, n, d, k, g, nv, _ptr(sigma), _ptr(geo),
            _ptr(slot), _ptr(nearest), _ptr(variation), _ptr(sums), torch.get_num_threads())
        ctx.save_for_backward(features, detail, codes, bias, weight, density, table, shut, slot, variation, sigma)
        ctx.constants = (temperature, density_variation, soft, n * d, n * nv)
        ctx.mark_non_differentiable(slot, nearest)
        vq = (sums[0] / max(1, n * d)).float()
        var_cost = (sums[1] / max(1, n * nv)).float() if nv else torch.zeros(())
        return sigma, geo, slot, nearest, torch.stack([vq, vq]), variation, var_cost

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_sigma, grad_geo, _slot, _nearest, grad_vq, grad_variation, grad_var_cost):
        features, detail, codes, bias, weight, density, table, shut, slot, variation, sigma = ctx.saved_tensors
        temperature, density_variation, soft, n_features, n_variation = ctx.constants
        if grad_variation is not None and bool(grad_variation.any()):
            raise RuntimeError("the fused codebook does not differentiate through its variation output directly")
        n, d = features.shape
        k, g = table.shape
        nv = 0 if weight is None else weight.shape[0]
        zeros = lambda *shape: torch.zeros(shape)  # noqa: E731
        grad_sigma = zeros(n) if grad_sigma is None else grad_sigma.contiguous()
        grad_geo = zeros(n, g + max(nv - 1, 0)) if grad_geo is None else grad_geo.contiguous()
        grad_vq = zeros(2) if grad_vq is None else grad_vq
        grad_var_cost = zeros() if grad_var_cost is None else grad_var_cost
        scales = torch.stack([grad_vq[0] / max(1, n_features), grad_vq[1] / max(1, n_features),
                              grad_var_cost / max(1, n_variation)]).float().contiguous()
        grad_features = torch.empty(n, d)
        grad_detail = grad_features if detail is None else torch.empty(n, d)
        grad_logits = torch.empty(n, k + 1) if soft else None
        grad_codes = torch.empty_like(codes)
        grad_weight = None if weight is None else torch.empty_like(weight)
        grad_bias_v = None if weight is None else torch.empty(nv)
        grad_density, grad_table = torch.empty_like(density), torch.empty_like(table)
        x = features if detail is None else detail
        _kernels.library.codebook_density_backward(
            _ptr(features), _ptr(x), _ptr(codes), _ptr(bias), _ptr(shut), _ptr(weight), _ptr(density), _ptr(table),
            _ptr(slot), _ptr(variation), _ptr(sigma), _ptr(grad_sigma), _ptr(grad_geo), _ptr(scales),
            density_variation, temperature, n, d, k, g, nv, _ptr(grad_logits), _ptr(grad_features),
            _ptr(grad_detail), _ptr(grad_codes), _ptr(grad_weight), _ptr(grad_bias_v), _ptr(grad_density),
            _ptr(grad_table), torch.get_num_threads())
        if grad_logits is None:
            grad_bias = torch.zeros_like(bias)
        else:  # logit = (2/T) h.c + bias (the kernels leave out -|h|^2/T: its gradient sums to zero)
            grad_bias = grad_logits.sum(0)
            grad_features.addmm_(grad_logits, codes, alpha=2.0 / temperature)
            grad_codes.addmm_(grad_logits.T, features, alpha=2.0 / temperature)
        return (grad_features, None if detail is None else grad_detail, grad_codes, grad_bias, grad_weight,
                grad_bias_v, grad_density, grad_table, None, None, None, None, None)


def assign_and_decode(codebook: Codebook, density: torch.Tensor, table: torch.Tensor, density_variation: float,
                      features: torch.Tensor, detail: torch.Tensor | None = None
                      ) -> tuple[Assignment, torch.Tensor, torch.Tensor]:
    """(assignment (``probs`` None), sigma (N,), geo (N, G + variation_dim)) of ``features``;
    ``density`` (K,) is each surface code's density (``Decoder.code_density``), ``table``
    (K, G) its geometry features: ``Decoder.density``'s inputs."""
    if _kernels.load() is None:
        raise RuntimeError(f"the fused codebook kernels could not be built ({_kernels.failure})")
    codes = codebook.codes.float()
    bias = codebook.log_gates() - (codes**2).sum(-1) / codebook.temperature
    if not codebook.training:  # hard one-hot: nothing reaches the logits
        bias = bias.detach()
    with torch.no_grad():
        open_ = codebook.open_mask()
        never = torch.zeros(len(codes)).masked_fill(~open_, float("-inf"))
        shut = torch.cat([codebook.closed, codebook.closed.new_zeros(1)]).to(torch.uint8)
    layer = codebook.variation
    weight, bias_v = (None, None) if layer is None else (layer.weight.float().contiguous(),
                                                         layer.bias.float().contiguous())
    detail = None if detail is None or detail is features or layer is None else detail.float().contiguous()
    sigma, geo, slot, nearest, vq, variation, cost = _AssignAndDecode.apply(
        features.float().contiguous(), detail, codes.contiguous(), bias.contiguous(), weight, bias_v,
        density.float().contiguous(), table.float().contiguous(), never, shut.contiguous(),
        float(codebook.temperature), float(density_variation), codebook.training)
    empty = slot == codebook.n_codes
    return Assignment(None, nearest, empty, variation.detach() if layer is not None else None, vq, cost), sigma, geo
