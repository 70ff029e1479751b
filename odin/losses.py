"""The motion-masked denoising loss.

Let ``err`` be the per-pixel squared error of the denoiser (mean over channels), ``M`` in [0, 1]
the predicted motion mask and ``mined`` the mined motion mask of the target view (1 = moving,
0 = static or unknown).  The loss weight of a pixel is ``w = M * (1 - mined)`` and

    loss = mean(w * err) - lambda * mean(w) + beta * BCE(M, 1 - mined)   [BCE only where mined]

Why this form:

* For a pixel with no mined label the optimum of ``M * err - lambda * M`` is M = 1 where
  err < lambda and M = 0 where err > lambda: the network may ignore pixels it cannot explain
  from the source (independent motion), at a cost lambda per ignored pixel, so M cannot collapse
  to 0.  ``err`` is measured on a unit-variance target (epsilon, or v with unit-variance data),
  where predicting zero already costs about 1, so lambda = 1 means "only drop a pixel when the
  model does worse there than predicting nothing"; lambda is in those units.
* Where a mask was mined, ``(1 - mined)`` removes the pixel from the denoising loss outright, and
  the BCE term teaches M to flag such motion itself, so pairs without a mined mask benefit.
  The -lambda term uses the same weight w, so mined pixels are not pushed towards M = 1.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def motion_masked_loss(pred: torch.Tensor, target: torch.Tensor, mask_logit: torch.Tensor,
                       mined: torch.Tensor | None = None, has_mined: torch.Tensor | None = None,
                       motion_lambda: float = 1.0, bce_weight: float = 0.1) -> tuple[torch.Tensor, dict]:
    """pred/target (B, C, h, w); mask_logit (B, 1, h, w); mined (B, 1, h, w) in [0, 1] or None."""
    pred, target, mask_logit = pred.float(), target.float(), mask_logit.float()
    err = (pred - target).pow(2).mean(dim=1, keepdim=True)
    mask = torch.sigmoid(mask_logit)
    static = torch.ones_like(mask) if mined is None else 1.0 - mined.float()
    weight = mask * static
    loss = (weight * err).mean() - motion_lambda * weight.mean()
    bce = torch.zeros((), device=pred.device)
    if mined is not None and has_mined is not None and bool(has_mined.any()):
        sel = has_mined.bool()
        bce = F.binary_cross_entropy_with_logits(mask_logit[sel], static[sel])
        loss = loss + bce_weight * bce
    stats = {"mse": err.mean().detach(), "mask_mean": mask.mean().detach(), "bce": bce.detach()}
    return loss, stats


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, H, W) fraction of each low-resolution cell covered by the mask (area average)."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    return F.interpolate(mask.float(), size=size, mode="area")
