"""The codebook of Neural Radiance Field Codebooks (Wallingford et al., 2023), made explicit.

A point's feature ``h`` picks its nearest code among K learned *surface* codes and one *empty*
code (empty space: density 0, never closed, never counted); the choice is hard in the forward
pass and differentiable through a softmax in the backward pass (straight-through). The
decoder reads the code, not the feature (``nrc.field``): density and geometry come from the
code, so a point can only be as dense and look as a code does, up to the variation.

The variation is the only feature-dependent signal that reaches the decoder, and it is an
information bottleneck: one number for density and ``variation_dim`` (default 1) for colour
per point, each bounded by tanh and paid for by ``variation_penalty * mean(v^2)``. Through
the old full-width, unpenalised offset one code rendered as well as eight (issue 15); through
this one, one code learns slowly to stand in for many, but it does learn: on a 3-room family
K=1 falls 4.4 dB below K=8 after 400 steps (1 dB with two colour numbers at 1e-3) and only
0.8 dB after 1200 (bench/nrc_objects.py --quick --steps 400, and its default, when its rows
were fitted on the photometric loss alone; its "photometric" row is that K=8). With
``colour_variation`` "brightness" the colour number only shades the code's one colour, and
nrc.assignment teaches the features which code explains their pixel (``--objects``).
(Scaling an offset in code space to the codes' spacing bounds nothing: the decoder can
amplify any offset, so the bottleneck is the width and the price, not a radius.)

Each surface code has a gate ``sigmoid(g_k)``: its log enters the assignment logits, and the
loss pays ``gate_penalty * sum_k gate_k * (1 - usage_k / min_share)+``: a code that renders
less than ``min_share`` of the surface pays for its gate, one that renders more is free. (A
flat ``sum_k gate_k`` closes every gate but one under Adam, whatever its weight.)

The distances and the assignment run in fp32 with autocast disabled: under bf16 autocast the
cross-term ``h @ codes.T`` ran in bf16 and flipped 0.34% of assignments (issue 15).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

GATE_OPEN = 3.0  # sigmoid(3) = 0.95: every code is available until it proves useless


@dataclass
class Assignment:
    probs: torch.Tensor  # (N, K + 1) hard one-hot forward; soft gradient in training (last column: empty)
    index: torch.Tensor  # (N,) nearest surface code (segmentation; rendered with weight 0 where empty)
    empty: torch.Tensor  # (N,) bool: the empty code won
    variation: torch.Tensor | None  # (N, 1 + variation_dim) in [-1, 1]: density, then colour variation
    vq_loss: torch.Tensor  # (2,): codebook term (codes -> features), commitment term (features -> codes)
    variation_cost: torch.Tensor  # () mean squared variation: the bottleneck's price


def nearest_code_reference(features: torch.Tensor, codes: torch.Tensor, log_gates: torch.Tensor,
                           temperature: float) -> torch.Tensor:
    """(N, K) assignment logits, written out per code: the reference for :func:`assignment_logits`."""
    cols = [-((features - codes[k]) ** 2).sum(-1) / temperature + log_gates[k] for k in range(len(codes))]
    return torch.stack(cols, -1)


def assignment_logits(features: torch.Tensor, codes: torch.Tensor, log_gates: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """-|h - c_k|^2 / T + log gate_k, via one matmul, in fp32 whatever autocast says (|h|^2 is
    shared by all k, but kept so the logits equal the reference up to rounding)."""
    with torch.autocast(device_type=features.device.type, enabled=False):
        h, c = features.float(), codes.float()
        # One addmm and one subtraction over (N, K): the (N, K) passes, not the matmul, are the cost.
        bias = log_gates.float() - (c**2).sum(-1) / temperature
        return torch.addmm(bias, h, c.T, alpha=2.0 / temperature) - (h**2).sum(-1, keepdim=True) / temperature


class _StraightThrough(torch.autograd.Function):
    """The one-hot of ``slot`` forward, the gradient handed to ``soft`` unchanged backward: the
    value of ``hard + soft - soft.detach()`` without its two (N, K) passes each way."""

    @staticmethod
    def forward(ctx, soft, slot):
        return torch.nn.functional.one_hot(slot, soft.shape[-1]).to(soft.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class Codebook(nn.Module):
    def __init__(self, n_codes: int, code_dim: int, variation_dim: int = 2, temperature: float = 1.0):
        super().__init__()
        if n_codes < 1:
            raise ValueError(f"n_codes must be >= 1, got {n_codes}")
        # K surface codes, then the empty code. Small: the features start small too.
        self.codes = nn.Parameter(0.3 * torch.randn(n_codes + 1, code_dim))
        self.gate_logits = nn.Parameter(torch.full((n_codes,), GATE_OPEN))
        # Codes pruned for not paying their way (nrc.code_upkeep.prune_codes): out of every assignment,
        # soft ones included, until a restart reopens them.
        self.register_buffer("closed", torch.zeros(n_codes, dtype=torch.bool))
        # One density number and ``variation_dim`` colour numbers; none at all with 0 (ablation).
        self.variation = nn.Linear(code_dim, 1 + variation_dim) if variation_dim > 0 else None
        self.temperature = temperature

    @property
    def n_codes(self) -> int:
        """K, the surface codes (the empty code is not counted)."""
        return len(self.codes) - 1

    def gates(self) -> torch.Tensor:
        return torch.sigmoid(self.gate_logits.float())

    def active(self) -> torch.Tensor:
        """(K,) bool: surface codes with gate > 0.5 (at least the most open one)."""
        g = self.gates().masked_fill(self.closed, -1.0)
        return ((g > 0.5) | (g == g.max())) & ~self.closed

    def gate_cost(self, usage: torch.Tensor | None = None, min_share: float = 0.02) -> torch.Tensor:
        """Sum of gates, each weighted by how far its code's ``usage`` (K,) share falls short of
        ``min_share`` (all weights 1 without usage)."""
        if usage is None:
            return self.gates().sum()
        shortfall = (1 - usage.detach().float() / min_share).clamp(0, 1)
        return (self.gates() * shortfall).sum()

    def log_gates(self) -> torch.Tensor:
        """(K + 1,) log gates of every code; the empty code's is 0 (always open)."""
        lg = torch.nn.functional.logsigmoid(self.gate_logits.float())
        return torch.cat([lg, lg.new_zeros(1)])

    def open_mask(self) -> torch.Tensor:
        """(K + 1,) bool: codes that may win a hard assignment."""
        return torch.cat([self.active(), self.active().new_ones(1)])

    @torch.no_grad()
    def restart_dead_codes(self, features: torch.Tensor, usage: torch.Tensor, generator: torch.Generator,
                           min_usage: float = 1e-3) -> int:
        """Move surface codes used by fewer than ``min_usage`` of the rendered surface onto
        surface ``features`` (k-means++: drawn in proportion to their squared distance to the
        nearest code, so restarts land where the codebook describes the surface worst) and
        reopen their gates. ``usage`` (K,) and ``features`` should cover every scene. Returns how many."""
        dead = (usage < min_usage).nonzero(as_tuple=True)[0]
        if len(dead) == 0 or len(features) == 0:
            return 0
        f = features.float()
        live = torch.ones(len(self.codes), dtype=torch.bool, device=f.device)
        live[dead] = False
        for k in dead.tolist():
            d2 = torch.cdist(f, self.codes[live].float()).pow(2).min(1).values
            if float(d2.sum()) <= 0:
                d2 = torch.ones_like(d2)
            pick = torch.multinomial((d2 / d2.sum()).to(generator.device), 1, generator=generator).to(f.device)
            self.codes[k] = f[pick[0]].to(self.codes.dtype)
            live[k] = True
        self.gate_logits[dead] = GATE_OPEN
        self.closed[dead] = False
        return len(dead)

    def forward(self, features: torch.Tensor, detail: torch.Tensor | None = None) -> Assignment:
        """Assign ``features`` (N, code_dim) to codes; the variation reads ``detail`` (same shape)
        when given, else the features themselves."""
        features = features.float()
        codes = self.codes.float()
        logits = assignment_logits(features, codes, self.log_gates(), self.temperature)
        # Masks enter as (K + 1,) biases, not as (N, K + 1) masked copies.
        with torch.no_grad():
            never = torch.zeros(len(codes), device=codes.device).masked_fill(~self.open_mask(), float("-inf"))
            # Closed codes never win a hard assignment, whatever the distance. One max over the surface
            # codes gives both the nearest surface code (the segmentation's label, also of an empty
            # point, which renders with weight 0) and, against the empty code's logit, the winner
            # (argmax's tie rule: the first, i.e. the surface code).
            nearest, index = (logits[:, :-1] + never[:-1]).max(-1)
            empty = logits[:, -1] + never[-1] > nearest
            slot = torch.where(empty, self.n_codes, index)
        if self.training:
            shut = torch.cat([self.closed, self.closed.new_zeros(1)])  # pruned codes: not even a soft share
            soft = torch.softmax(logits.masked_fill(shut, float("-inf")) if bool(shut.any()) else logits, -1)
            probs = _StraightThrough.apply(soft, slot)
            hard = probs.detach()
        else:
            hard = probs = torch.nn.functional.one_hot(slot, len(codes)).float()
        # hard @ codes is codes[slot] exactly, and its gradient one (K, N) @ (N, D) matmul instead
        # of an accumulating index_put over N rows (17 ms at 49k points on 2 cores).
        chosen = hard @ codes
        vq_loss = torch.stack([((features.detach() - chosen) ** 2).mean(), ((features - chosen.detach()) ** 2).mean()])
        variation, cost = None, features.new_zeros(())
        if self.variation is not None:
            variation = torch.tanh(self.variation(features if detail is None else detail.float()))
            cost = (variation**2).mean()
        return Assignment(probs, index, empty, variation, vq_loss, cost)
