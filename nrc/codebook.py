"""The codebook of Neural Radiance Field Codebooks (Wallingford et al., 2023), made explicit.

A point's feature ``h`` picks its nearest code among K learned codes; the choice is hard in
the forward pass and differentiable through a softmax in the backward pass (straight-through).
Each code has a gate ``sigmoid(g_k)``: its log enters the assignment logits, and the loss pays
``gate_penalty * sum_k gate_k * (1 - usage_k / min_share)+``: a code that renders less than
``min_share`` of the surface pays for its gate, one that renders more is free, so codes that
do not earn their keep switch off and the number of active codes is learned. (A flat
``sum_k gate_k`` closes every gate but one under Adam, whatever its weight: Adam moves a
parameter with a steady gradient by ~lr a step, and the reconstruction's pull on a gate is
noisy.) The variation module lets points of one code differ: the
decoder sees ``code + bound * tanh(V [h, code])``, a bounded feature-dependent offset that can
shade a texture but cannot turn one code into another.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Assignment:
    latent: torch.Tensor  # (N, D) code + bounded offset: the decoder's input
    index: torch.Tensor  # (N,) hard code index
    probs: torch.Tensor  # (N, K) soft assignment (straight-through in training)
    vq_loss: torch.Tensor  # (2,): codebook term (codes -> features), commitment term (features -> codes)


def nearest_code_reference(features: torch.Tensor, codes: torch.Tensor, log_gates: torch.Tensor,
                           temperature: float) -> torch.Tensor:
    """(N, K) assignment logits, written out per code: the reference for :func:`assignment_logits`."""
    cols = [-((features - codes[k]) ** 2).sum(-1) / temperature + log_gates[k] for k in range(len(codes))]
    return torch.stack(cols, -1)


def assignment_logits(features: torch.Tensor, codes: torch.Tensor, log_gates: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """-|h - c_k|^2 / T + log gate_k, via one matmul (|h|^2 is shared by all k, but kept so the
    logits equal the reference exactly up to rounding)."""
    d2 = (features**2).sum(-1, keepdim=True) - 2 * features @ codes.T + (codes**2).sum(-1)
    return -d2 / temperature + log_gates


class Codebook(nn.Module):
    def __init__(self, n_codes: int, code_dim: int, variation_bound: float, temperature: float = 1.0):
        super().__init__()
        self.codes = nn.Parameter(torch.randn(n_codes, code_dim))
        # Gates start open (sigmoid(3) = 0.95): every code is available until it proves useless.
        self.gate_logits = nn.Parameter(torch.full((n_codes,), 3.0))
        self.variation = nn.Linear(2 * code_dim, code_dim)
        self.variation_bound = variation_bound
        self.temperature = temperature

    @property
    def n_codes(self) -> int:
        return len(self.codes)

    def gates(self) -> torch.Tensor:
        return torch.sigmoid(self.gate_logits.float())

    def active(self) -> torch.Tensor:
        """(K,) bool: codes with gate > 0.5 (at least the most open one)."""
        g = self.gates()
        return (g > 0.5) | (g == g.max())

    def gate_cost(self, usage: torch.Tensor | None = None, min_share: float = 0.02) -> torch.Tensor:
        """Sum of gates, each weighted by how far its code's ``usage`` (K,) share falls short of
        ``min_share`` (all weights 1 without usage)."""
        if usage is None:
            return self.gates().sum()
        shortfall = (1 - usage.detach().float() / min_share).clamp(0, 1)
        return (self.gates() * shortfall).sum()

    @torch.no_grad()
    def restart_dead_codes(self, features: torch.Tensor, usage: torch.Tensor, generator: torch.Generator,
                           min_usage: float = 1e-3) -> int:
        """Move codes used by fewer than ``min_usage`` of the points onto random current features
        (and reopen their gates); the usual cure for VQ collapse early in training. Returns how many."""
        dead = (usage < min_usage).nonzero(as_tuple=True)[0]
        if len(dead) == 0 or len(features) == 0:
            return 0
        pick = torch.randint(len(features), (len(dead),), generator=generator, device=generator.device).to(features.device)
        self.codes[dead] = features[pick].to(self.codes.dtype)
        self.gate_logits[dead] = 3.0
        return len(dead)

    def forward(self, features: torch.Tensor) -> Assignment:
        features = features.float()
        codes = self.codes.float()
        log_gates = torch.nn.functional.logsigmoid(self.gate_logits.float())
        logits = assignment_logits(features, codes, log_gates, self.temperature)
        # Closed codes never win a hard assignment, whatever the distance.
        logits_hard = logits.masked_fill(~self.active(), float("-inf"))
        index = logits_hard.argmax(-1)
        if self.training:
            soft = torch.softmax(logits, -1)
            hard = torch.nn.functional.one_hot(index, self.n_codes).to(soft)
            probs = hard + soft - soft.detach()
        else:
            probs = torch.softmax(logits_hard, -1)
        chosen = probs @ codes if self.training else codes[index]
        vq_loss = ((features.detach() - codes[index]) ** 2).mean(), ((features - codes[index].detach()) ** 2).mean()
        offset = self.variation_bound * torch.tanh(self.variation(torch.cat([features, chosen.detach()], -1)))
        return Assignment(chosen + offset, index, probs, torch.stack(vq_loss))
