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
coloured family (bench/nrc_objects.py --quick --coloured) K=8 reaches FG-ARI 0.77/0.51/0.78 (seeds
0-2, with objects mode's density floor; 0.77/0.83/0.82 without it), beyond what k-means of the
true pixels' hues separates (0.58: the codes are spatially coherent too) at two seeds of three,
against 0.27/0.37/0.34 with the photometric loss alone and 0.25 with shaded codes but without
these two steps (seed 0; its "no E/M steps" row). Measured without the floor, same bench and seeds
(so against 0.77/0.83/0.82): the E step's weight 1e-3 0.71/0.72/0.24, 1e-2 0.68/(not run)/0.67,
2e-2 0.72/0.60/0.50, 3e-2 0.77/0.83/0.82, 1e-1 0.76/0.25/0.67 with the depth error past 1 (the
pull outweighs the photometric loss and the geometry collapses onto a shell). Chosen while
building it, one seed each (a prototype whose colour MLP also read a zeroed input): 1 octave 0.45,
5 octaves 0.41; no M step 0.41; pruning on 0.15 (it closes the small objects' codes first). Tried
and not kept: restarting dead codes on the colours of the pixels the codes explain worst
(k-means++ in colour: 0.09, seed 0), the E step at each ray's peak weight instead of its expected
depth (0.57/0.72/0.81, depth error ~1), 3e-2 for the first half and 1e-3 after it (0.73 and 0.68,
seeds 0 and 2; textured 28.38 dB and 0.30 against 27.85 and 0.35), merging the two codes of most
similar colour (error < 0.003) during the restarts so one is re-seeded (0.75 against 0.82 at seed
2, textured 0.30 against 0.35; one room alone 0.34 against 0.18 at seed 1), the E step weighted by
each pixel's margin between its two best codes (seeds 0 and 2: 0.90 and 0.75; textured 0.13,
though at 29.56 dB and a depth error of 0.30 against 0.83). Also tried before the floor, one row
each unless seeds are named (coloured seeds 0-2 are 0.77/0.83/0.82, textured seed 0 0.35 with
cross-scene 1.00, room 0 alone 0.09/0.18/0.60): no view dependence, 0.80/0.82/0.82
(29.97/29.87/28.45 dB against 29.34/29.03/29.15), but textured cross-scene 0.25; view dependence
as a shade (one logit for the three channels), 0.63; two colours per code mixed by a second
variation number, textured 0.19 with K=1 no worse than K=8 (27.87 and 27.82 dB: the codebook stops
mattering); a soft E target (softmax of -error / 0.01), textured 0.16, 0.16 with the code picked
from the 3 coarsest levels; no E and M steps in the first 30%, 0.28 (textured 0.37); the gate
counting a code's E-target share as use, room 0 alone 0.62/0.40/0.54 but three rooms
0.60/0.85/0.52 and textured 0.20; code colours from k-means of the training pixels' chromaticity,
room 0 alone 0.32/0.73/0.61 but three rooms 0.81/0.46/0.56 (depth errors 1.0-1.4) and textured
0.19; the E step only at points that take a surface code (not the empty one: 95% do),
0.72/0.92/0.30, textured 0.18; the E step's gradient kept out of the hash grid (the feature MLP
only), 0.36/0.68/0.70 and textured 0.20 and 0.17 (seeds 0, 1), though with depth errors of
0.35-0.47. Blurring does not help appearance either: k-means of the textured family's held-out
colours blurred by 1-5 pixels scores 0.16-0.29 (chromaticity 0.21-0.33, 0.42 unblurred). With
objects mode's density floor, the E step at 5e-2 instead of 3e-2: coloured 0.85/0.94/0.78 (against
0.77/0.51/0.78) but textured 0.23/0.59/0.38 (against 0.39/0.54/0.33), at seed 0 with cross-scene
0.75 and the object pixels no better than K=1's (24.02 and 24.07 dB); at 2e-2, coloured seed 1
0.76. Also with the floor, textured family: the E target from the errors pooled in a voxel grid of
the scene (an exponential average over the steps, decay 0.99, so a textured object's hues vote
together and an object and the wall behind it do not), 0.39 at 64^3 and 0.22 at 32^3 (seed 0,
against 0.39); a second cross-entropy pulling each surface point towards the code of a random
neighbour 0.05 radii away, weighted by the neighbour's opacity (one code per solid, free to change
across the gap between an object and its wall), 0.50/0.24/0.41 against 0.39/0.54/0.33, 0.51 at
three times the weight (depth error 0.85). Neither can separate what the field has not placed,
and the E step is what displaces the objects (the bench's "obj depth", the depth error of the
object pixels, textured seed 0): K=8 0.78 against K=1's 0.25 and 0.32 without the E and M steps;
the E step alone (no M step) 1.05 at FG-ARI 0.13, the M step alone 0.28 but a depth error of 1.04
elsewhere: pulled towards the object's colour code where its ray ends now, on the wall behind,
the wall takes the object's paint and the object stays a ghost (at the true depth of the held-out
object pixels, 89% of the points take surface codes, at a median density of 1.8 per radius
against K=1's 11). Weaker or
later E steps trade one for the other without lifting both: 1e-2, textured 0.57/0.37/0.33 (obj
depth 0.58/0.54/0.39) and coloured 0.72/0.63/0.74 with cross-scene 0.50/0.75/1.00; 3e-2 ramped
up from 0 over the first half, 0.53 at obj depth 0.85; no E and M steps in the first half (the
objects built first), 0.47 at 0.99; no view dependence 0.46 at 0.75; the E step at the depth where
a ray's opacity reaches 0.1 or 0.3 (in the ghost, not on the wall), 0.14 at 0.94 and 0.32 at
0.57. Nor does the codes' density: its gradient kept at the floor's when a code sits there and
should grow (one code went to 65), 0.46 at 0.82; one density for every surface code, 0.36 at
1.35 (0.3 of each code's own: 22.55 dB); the E target only among codes at least half (or all)
as dense as the point's own, 0.37 at 1.09 (0.14 at 0.41). What paints is the E step's gradient
into the point features; into the code vectors alone it places the objects but does not separate
them: 0.14 at obj depth 0.20 (the features' gradient scaled by 0.1 and 0.3: 0.18 at 0.40, 0.26 at
0.64; only on rays whose weight one code holds >= 70% or 90%: 0.20 at 1.10, 0.15 at 0.25). On
the textured family the codes segment by painting, not by placed objects. A longer fit places them slowly: 4000
and 8000 steps (bench/nrc_objects.py --quick --steps N, the K=8 row), FG-ARI 0.45 and 0.50, obj
depth 0.40 and 0.28, 31.1 dB.
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
