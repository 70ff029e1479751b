"""Held-out evaluation of a run: PSNR, SSIM, and on synthetic worlds depth error, ARI and
FG-ARI of the code segmentation against the ground-truth object ids, the PSNR and the depth
error of the object pixels alone (where codes that tell objects apart show: objects are a few %
of a room's pixels; and whether the field has put the objects in their place at all), and over
the rooms of a synthetic family the cross-scene consistency of the codes; JSON + PNG panels
(per view: GT | render | depth | ids | codes, and GT ids | code argmax | each code's weight map).

Pixels of moving objects are excluded from every score (they were excluded from training:
a static field cannot explain them). The constant-colour baseline (every pixel = the mean
training colour) is reported beside the model, so "better than nothing" is measurable.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ingest.atomic import atomic_write_json
from ingest.errors import OdinError
from nrc.checkpoint import load_run
from nrc.data import load_scene_data
from nrc.metrics import (adjusted_rand_index, cross_scene_consistency, depth_errors, foreground_ari, majority_codes,
                         psnr, ssim)
from nrc.plots import colorize_depth, colorize_labels, panel, write_png
from nrc.rendering import render_view


def evaluate_run(run_dir: str | Path, out_dir: str | Path | None = None, device: str = "cpu",
                 max_views: int | None = None, image_height: int | None = None) -> dict:
    """Score every scene of the run on its held-out views; writes ``metrics.json`` and panels."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir else run_dir / "eval"
    model, config = load_run(run_dir, device)
    height = image_height or config.train.image_height
    report = {"run": str(run_dir), "scenes": []}
    k = config.train.holdout_every
    majorities = []  # per scene: {GT id: majority code} over its held-out pixels
    for scene_index, frame in enumerate(config.scenes):
        data = load_scene_data(frame.source, height, k, part="held_out")
        held_out = data.views
        if not held_out:
            raise OdinError("no held-out views to evaluate (the scene has fewer than 2 frames)", frame.source)
        train_frames, held_out_frames = data.split_frames(k)
        # The baseline's mean colour barely depends on resolution: read the training views small.
        mean_colour = _mean_colour(load_scene_data(frame.source, min(height or 32, 32), k, part="train").views)
        rows, scene_ids, scene_seg = [], [], []
        for view in held_out[:max_views]:
            out = render_view(model, view.camera.c2w, view.camera, ("rgb", "depth", "codes"), scene=scene_index)
            mask = view.valid if view.valid is not None else np.ones(view.rgb.shape[:2], bool)
            row = {"view": view.name, "psnr": psnr(out["rgb"], view.rgb, mask), "ssim": ssim(out["rgb"], view.rgb),
                   "baseline_psnr": psnr(np.broadcast_to(mean_colour, view.rgb.shape), view.rgb, mask)}
            # One depth scale for GT and prediction, so the panels compare.
            depth_max = float(np.percentile(view.depth, 99)) if view.depth is not None else None
            images = [view.rgb, out["rgb"], colorize_depth(out["depth"], depth_max)]
            labels = ["GT", f"render {row['psnr']:.1f} dB", "depth"]
            if view.depth is not None:
                row.update({f"depth_{k}": v for k, v in depth_errors(out["depth"], view.depth, mask).items()})
                images.insert(2, colorize_depth(view.depth, depth_max))
                labels.insert(2, "GT depth")
            if view.ids is not None:
                ids, seg = view.ids[mask], out["segmentation"][mask]
                row["ari"] = adjusted_rand_index(ids, seg)
                row["fg_ari"] = foreground_ari(ids, seg)
                objects = mask & (view.ids > 0)
                row["object_psnr"] = psnr(out["rgb"], view.rgb, objects) if objects.any() else float("nan")
                # Codes can only separate objects the field has put in their place.
                row["object_depth_abs_rel"] = (depth_errors(out["depth"], view.depth, objects)["abs_rel"]
                                               if objects.any() and view.depth is not None else float("nan"))
                images += [colorize_labels(view.ids), colorize_labels(out["segmentation"])]
                labels += ["GT ids", "codes"]
                scene_ids.append(ids), scene_seg.append(seg)
                write_png(out_dir / f"codes_scene{scene_index}_{view.name}.png", code_panel(view.ids, out["codes"]))
            else:
                images.append(colorize_labels(out["segmentation"]))
                labels.append("codes")
            rows.append(row)
            write_png(out_dir / f"scene{scene_index}_{view.name}.png", panel(images, labels))
        summary = {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0] if k != "view"}
        if scene_ids:
            majorities.append(majority_codes(np.concatenate(scene_ids), np.concatenate(scene_seg)))
        report["scenes"].append({"source": frame.source, "n_views": len(rows), "image_height": height,
                                 "holdout_every": k, "held_out_frames": held_out_frames, "train_frames": train_frames,
                                 "active_codes": int(model.codebook.active().sum()), "mean": summary, "views": rows})
    # Synthetic families share object-type ids across rooms (ingest.synth.family): does one type
    # get one code in every room?
    report["active_codes"] = int(model.codebook.active().sum())
    if len(majorities) > 1:
        report["cross_scene"], report["recurring_types"] = cross_scene_consistency(majorities)
        report["majority_codes"] = [{str(i): c for i, c in m.items()} for m in majorities]
    atomic_write_json(out_dir / "metrics.json", _finite(report))
    return report


def code_panel(gt_ids: np.ndarray, code_weights: np.ndarray) -> np.ndarray:
    """GT ids | code argmax | each code's rendering weight (white = the code renders the pixel)."""
    maps = [np.repeat(np.clip(code_weights[..., k], 0, 1)[..., None], 3, -1) for k in range(code_weights.shape[-1])]
    return panel([colorize_labels(gt_ids), colorize_labels(code_weights.argmax(-1))] + maps,
                 ["GT ids", "codes"] + [f"code {k}" for k in range(len(maps))])


def _mean_colour(views) -> np.ndarray:
    pixels = np.concatenate([v.rgb.reshape(-1, 3)[(v.valid.reshape(-1) if v.valid is not None else slice(None))]
                             for v in views])
    return pixels.astype(np.float64).mean(0) / 255.0


def _finite(obj):
    """JSON has no NaN: undefined scores (e.g. FG-ARI with no foreground in view) become null."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
