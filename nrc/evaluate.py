"""Held-out evaluation of a run: PSNR, SSIM, and on synthetic worlds depth error, ARI and
FG-ARI of the code segmentation against the ground-truth object ids; JSON + PNG panels.

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
from nrc.metrics import adjusted_rand_index, depth_errors, foreground_ari, psnr, ssim
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
    for scene_index, frame in enumerate(config.scenes):
        data = load_scene_data(frame.source, height, k, part="held_out")
        held_out = data.views
        if not held_out:
            raise OdinError("no held-out views to evaluate (the scene has fewer than 2 frames)", frame.source)
        train_frames, held_out_frames = data.split_frames(k)
        # The baseline's mean colour barely depends on resolution: read the training views small.
        mean_colour = _mean_colour(load_scene_data(frame.source, min(height or 32, 32), k, part="train").views)
        rows = []
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
                images += [colorize_labels(view.ids), colorize_labels(out["segmentation"])]
                labels += ["GT ids", "codes"]
            else:
                images.append(colorize_labels(out["segmentation"]))
                labels.append("codes")
            rows.append(row)
            write_png(out_dir / f"scene{scene_index}_{view.name}.png", panel(images, labels))
        summary = {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0] if k != "view"}
        report["scenes"].append({"source": frame.source, "n_views": len(rows), "image_height": height,
                                 "holdout_every": k, "held_out_frames": held_out_frames, "train_frames": train_frames,
                                 "active_codes": int(model.codebook.active().sum()), "mean": summary, "views": rows})
    atomic_write_json(out_dir / "metrics.json", _finite(report))
    return report


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
