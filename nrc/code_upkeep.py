"""Keeping the codebook's codes useful while fitting: dead codes restarted on features of every
scene, and codes that do not pay their way closed (``train.code_prune_tolerance``; in colour,
``train.code_prune_colour``)."""
from __future__ import annotations

import torch

from nrc.assignment import MATCH_OCTAVES, code_colours, matching_error, most_redundant_code
from nrc.config import NRCConfig
from nrc.data import RayBank, scene_batches
from nrc.determinism import step_generator
from nrc.field import NRCModel
from nrc.rendering import autocast_for, render_rays


@torch.no_grad()
def restart_dead_codes(model: NRCModel, banks: list[RayBank], config: NRCConfig, step: int, device) -> int:
    """Re-seed codes that (almost) no surface of any scene uses onto surface features drawn from
    every scene (usage: the mean of the scenes' shares, as in the loss)."""
    t = config.train
    if step == 0 or step % t.code_restart_every or step > t.code_restart_until * t.steps:
        return 0
    gen = step_generator(t.seed + 13, step, device)
    features, usage = [], []
    model.eval()
    for scene, (origins, directions, _) in enumerate(scene_batches(banks, min(t.batch_rays, 4096), gen)):
        with autocast_for(device, t.mixed_precision):
            out = render_rays(model, scene, origins, directions, outputs=("depth", "codes"))
            encoder = model.encoders[scene]
            surface = encoder.normalise(origins + directions * out["depth"][:, None].float())
            features.append(encoder(surface)[0].float())
        share = out["codes"].float().sum(0)
        usage.append(share / share.sum().clamp_min(1e-9))
    model.train()
    return model.codebook.restart_dead_codes(torch.cat(features), torch.stack(usage).mean(0), gen)


@torch.no_grad()
def prune_codes(model: NRCModel, banks: list[RayBank], config: NRCConfig, step: int, device) -> int | None:
    """After the restarts, every ``code_restart_every`` steps: of the open codes, close for good
    the one whose closing raises the photometric MSE of a fixed ray batch (every scene) the
    least, if by less than ``code_prune_tolerance`` (relative), so the number of codes is what
    the scenes need: a code that duplicates another, or that the variation can stand in for,
    goes. (Trying only the least-used code missed them: a rare code is often a needed one.)
    With ``code_prune_colour`` (objects mode) the criterion is colour instead: the code whose
    pixels another open code matches nearly as well. Returns the closed code, or None."""
    t = config.train
    book = model.codebook
    if ((not t.code_prune_tolerance and not t.code_prune_colour) or step % t.code_restart_every
            or step <= t.code_restart_until * t.steps or int(book.active().sum()) <= 1):
        return None
    batches = scene_batches(banks, min(t.batch_rays, 1024), step_generator(t.seed + 17, step, device))
    if t.code_prune_colour:
        # Without a variation a code cannot shade, so there brightness tells codes apart too: matched
        # at the E step's octaves, the no-variation row of bench/nrc_objects.py lost codes it needed
        # (22.44 dB against 27.62 without this pruning; 27.52 matched at the codes' own brightness).
        octaves = MATCH_OCTAVES if model.codebook.variation is not None else 0.0
        error = torch.cat([matching_error(code_colours(model, directions), rgb.float(), octaves)
                           for _, directions, rgb in batches])
        k, rise = most_redundant_code(error, book.active())
        if rise >= t.code_prune_colour:
            return None
        book.closed[k] = True
        return k
    model.eval()
    before = _batch_error(model, batches, config, device)
    rises = {}
    for k in book.active().nonzero(as_tuple=True)[0].tolist():
        book.closed[k] = True
        rises[k] = _batch_error(model, batches, config, device) / max(before, 1e-12) - 1
        book.closed[k] = False
    model.train()
    k = min(rises, key=rises.get)
    if rises[k] >= t.code_prune_tolerance:
        return None
    book.closed[k] = True
    return k


def _batch_error(model: NRCModel, batches: list[tuple], config: NRCConfig, device) -> float:
    """Mean over scenes of the photometric MSE of one ray batch per scene."""
    errors = []
    for scene, (origins, directions, target) in enumerate(batches):
        with autocast_for(device, config.train.mixed_precision):
            out = render_rays(model, scene, origins, directions)
        errors.append(torch.mean((out["rgb"].float() - target) ** 2))
    return float(torch.stack(errors).mean())
