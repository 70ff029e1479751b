"""Codes assigned by what they render: the E and M steps of object discovery (issue 15).

Nearest-code assignment with a straight-through estimator learns which code a point takes only
through the rendering's gradient, and that reaches a code only where its softmax share is not
~0. Features spread out early and the shares freeze: a small object keeps the code of the wall
around it, and a code no pixel takes never learns a colour. On the coloured 3-room family
(bench/nrc_objects.py --coloured) the 4 types shared 2-3 codes with the room, FG-ARI 0.27-0.37.
Two terms make the codebook cluster what it renders, as k-means does, with
``model.colour_variation`` "brightness" (a code has one colour, shaded):

- E step (``train.assignment_loss``): at each training ray's surface point, the target is the
  open code whose colour, at its best brightness, is nearest the pixel; a cross-entropy pulls the
  point's nearest-code logits (the codebook's own distances) towards it. The assignment stays
  the paper's nearest code; this only teaches the features where to sit.
- M step (``train.code_colour_loss``): each code's colour, at that brightness, is pulled towards
  the pixels that picked it, whether or not their points already take the code.

The brightness is matched within ``MATCH_OCTAVES`` (x 1/8 .. 8: shading and a texture's dark and
light parts), wider than rendering's 2^[-2, 2], so a hue and not a shade picks the code. On the
coloured family (bench/nrc_objects.py --quick --coloured) K=8 reaches FG-ARI 0.74/0.52/0.74/0.64/0.87
(seeds 0-4), beyond what k-means of the true pixels' hues separates (0.58: the codes are
spatially coherent too) at four seeds of five, against 0.27/0.37/0.34 with the photometric loss
alone and 0.22 with shaded codes but without these two steps (seed 0; its "no E/M steps" row).
On the textured family it stays short of the issue's FG-ARI 0.7 (0.37/0.56/0.45/0.09/0.41): there
the E step paints an object's colour on the wall behind it instead of building the object, and
the variants that place the objects no longer separate them. The weights, the octaves and every
variant tried, with their numbers: bench/nrc_objects.md.
"""
from __future__ import annotations

import torch

from nrc.codebook import assignment_logits

MATCH_OCTAVES = 3.0


def code_colours(model, directions: torch.Tensor) -> torch.Tensor:
    """(K, R, 3): each surface code's unshaded colour seen along each of ``directions`` (R, 3)."""
    decoder = model.decoder
    table = decoder.code_table(model.codebook.codes[:-1])
    k, r = len(table), len(directions)
    geo = table[:, 1:].repeat_interleave(r, 0)
    return decoder.code_colour(geo, directions.float().repeat(k, 1)).reshape(k, r, 3).float()


def matching_error(colours: torch.Tensor, target: torch.Tensor, octaves: float = MATCH_OCTAVES) -> torch.Tensor:
    """(R, K) squared error of each code's ``colours`` (K, R, 3) against the pixels ``target``
    (R, 3), each at its least-squares brightness within 2^[-octaves, octaves] (the brightness
    is a constant of the gradient: the M step moves the colour, not the shade)."""
    with torch.no_grad():
        scale = ((colours * target).sum(-1) / (colours * colours).sum(-1).clamp_min(1e-6))
        scale = scale.clamp(2.0 ** -octaves, 2.0 ** octaves)
    return ((scale[..., None] * colours).clamp(max=1.0) - target).pow(2).sum(-1).T


def assignment_terms(model, scene: int, origins: torch.Tensor, directions: torch.Tensor, target: torch.Tensor,
                     depth: torch.Tensor, with_colour: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(E-step cross-entropy, M-step error) of one ray batch of ``scene`` whose rendered ``depth``
    (R,) places the surface points; the M step is 0 without ``with_colour``."""
    book, encoder = model.codebook, model.encoders[scene]
    surface = encoder.normalise(origins.float() + directions.float() * depth.detach().float()[:, None])
    features, _ = encoder(surface)
    logits = assignment_logits(features.float(), book.codes.float(), book.log_gates(), book.temperature)[:, :-1]
    open_codes = book.active()
    with torch.set_grad_enabled(with_colour and torch.is_grad_enabled()):
        error = matching_error(code_colours(model, directions), target.float())
    best = error.detach().masked_fill(~open_codes, float("inf")).argmin(1)
    log_p = torch.log_softmax(logits.masked_fill(~open_codes, float("-inf")), 1)
    cross_entropy = -log_p.gather(1, best[:, None]).mean()
    colour = error.gather(1, best[:, None]).mean() if with_colour else cross_entropy.new_zeros(())
    return cross_entropy, colour


def most_redundant_code(error: torch.Tensor, open_codes: torch.Tensor) -> tuple[int, float]:
    """(k, rise): of the ``open_codes`` (K,) bool, the code whose pixels (those it matches best
    by ``matching_error`` (R, K)) the other open codes match with the least mean rise of their
    error (0 for a code no pixel picks). The mean, not the sum: a small object with a hue of its
    own keeps its code however few its pixels (the photometric pruning closed those first)."""
    if int(open_codes.sum()) < 2:
        raise ValueError("most_redundant_code needs at least two open codes")
    values, index = error.detach().float().masked_fill(~open_codes, float("inf")).topk(2, 1, largest=False)
    picks, rise = index[:, 0], values[:, 1] - values[:, 0]
    count = torch.bincount(picks, minlength=len(open_codes))
    total = torch.zeros(len(open_codes), dtype=rise.dtype, device=rise.device).index_add_(0, picks, rise)
    mean = (total / count.clamp_min(1)).masked_fill(~open_codes, float("inf"))
    k = int(mean.argmin())
    return k, float(mean[k])
