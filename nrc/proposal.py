"""Proposal sampling (mip-NeRF 360, nerfacto): a small density-only field (``nrc.field.ProposalField``)
says where along each ray the surface is, and the radiance field is evaluated only there.

On a CPU every sample the radiance field evaluates costs a full hash-grid lookup, the feature
MLP, the codebook and the colour MLP. A proposal field (a few coarse hash levels and a
16-wide MLP) is evaluated at ``proposal_samples`` uniform samples instead, and the radiance field
at ``n_samples`` samples drawn from the proposal's weights (inverse-CDF in s-space). The
proposal learns from the radiance field by :func:`interlevel_loss`: its weights must cover
the radiance field's (an upper bound over every interval), and no gradient flows back.
"""
from __future__ import annotations

import torch


def pdf_edges(edges: torch.Tensor, weights: torch.Tensor, n_intervals: int, *, stratified: bool,
              generator: torch.Generator | None = None, padding: float = 0.01) -> torch.Tensor:
    """(R, n_intervals + 1) interval edges drawn from the piecewise-constant density ``weights``
    (R, M) over ``edges`` (R, M + 1) by inverse CDF: edges crowd where the weight is.
    ``padding`` (a share of the total, spread evenly) keeps some samples everywhere, so a
    surface the proposal missed can still be found. Stratified: one jitter per edge."""
    w = weights.detach().float()
    w = w + padding * w.sum(-1, keepdim=True).clamp_min(1e-6) / w.shape[-1] + 1e-6
    cdf = torch.cumsum(w / w.sum(-1, keepdim=True), -1).clamp(max=1.0)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], -1)
    # One edge per 1/n of the mass, jittered within it or at its middle: never at the ray's ends,
    # where a sparse tail would make one interval as long as the empty part of the ray.
    n = n_intervals + 1
    u = (torch.arange(n, device=w.device, dtype=w.dtype) / n).expand(len(w), n)
    if stratified:
        jitter = torch.rand(len(w), n, generator=generator, device=generator.device if generator else w.device)
        u = u + jitter.to(w) / n
    else:
        u = (u + 0.5 / n).contiguous()
    above = torch.searchsorted(cdf, u, right=True).clamp(1, cdf.shape[-1] - 1)
    below = above - 1
    c0, c1 = cdf.gather(1, below), cdf.gather(1, above)
    e0, e1 = edges.gather(1, below), edges.gather(1, above)
    f = ((u - c0) / (c1 - c0).clamp_min(1e-9)).clamp(0, 1)
    return (e0 + f * (e1 - e0)).detach()


def covering_weights(edges: torch.Tensor, env_edges: torch.Tensor, env_weights: torch.Tensor) -> torch.Tensor:
    """For each interval of ``edges`` (R, N + 1), the total of ``env_weights`` (R, M) over every
    envelope interval (``env_edges`` (R, M + 1)) that overlaps it: the most weight the envelope
    can account for there (mip-NeRF 360's outer measure)."""
    cum = torch.cat([torch.zeros_like(env_weights[:, :1]), torch.cumsum(env_weights, -1)], -1)
    m = env_weights.shape[-1]
    env = env_edges.contiguous()
    lo = (torch.searchsorted(env, edges[:, :-1].contiguous(), right=True) - 1).clamp(0, m)  # first env interval ending after a0
    hi = torch.searchsorted(env, edges[:, 1:].contiguous(), right=False).clamp(max=m).maximum(lo)  # one past the last starting before a1
    return cum.gather(1, hi) - cum.gather(1, lo)


def covering_weights_reference(edges: torch.Tensor, env_edges: torch.Tensor, env_weights: torch.Tensor) -> torch.Tensor:
    """:func:`covering_weights` as an explicit overlap test of every pair of intervals."""
    a0, a1 = edges[:, :-1, None], edges[:, 1:, None]
    b0, b1 = env_edges[:, None, :-1], env_edges[:, None, 1:]
    overlaps = (b1 > a0) & (b0 < a1)
    return (overlaps * env_weights[:, None, :]).sum(-1)


def interlevel_loss(edges: torch.Tensor, weights: torch.Tensor, env_edges: torch.Tensor,
                    env_weights: torch.Tensor) -> torch.Tensor:
    """Per ray (R,): how far the radiance field's ``weights`` over ``edges`` exceed what the
    proposal's weights can cover, sum of max(0, w - cover)^2 / w. Gradient reaches the proposal
    only (the radiance field is the target)."""
    w = weights.detach().float()
    excess = (w - covering_weights(edges.detach(), env_edges, env_weights.float())).clamp_min(0)
    return (excess**2 / (w + 1e-7)).sum(-1)
