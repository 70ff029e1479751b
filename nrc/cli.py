"""`odin nrc {fit, eval, render, export-mesh}`: radiance-field codebooks from posed 360° video."""
from __future__ import annotations

import json
import math

from ingest import argcheck as ac


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def register(subparsers) -> None:
    nrc = subparsers.add_parser("nrc", help="radiance-field codebooks: fit scenes, discover objects, render, mesh",
                                description="Neural Radiance Field Codebooks on posed (360°) images.")
    sub = nrc.add_subparsers(dest="nrc_command", required=True, metavar="SUBCOMMAND")

    fit = sub.add_parser("fit", help="fit (or resume) a run on one or more scenes",
                         description="SCENE: a transforms.json (or its folder), an LLFF folder, or a synthetic world. "
                                     "Several scenes share one codebook and decoder (each step trains on all of "
                                     "them, rays split evenly). "
                                     "Re-running with the same --out resumes from the last save.")
    fit.add_argument("scenes", nargs="+", metavar="SCENE")
    fit.add_argument("--out", required=True, type=ac.out_dir, help="run folder (config.json, checkpoint.safetensors, PNGs)")
    fit.add_argument("--preset", default=None, choices=("gpu", "cpu", "tiny"),
                     help="starting config (default: gpu on CUDA, cpu otherwise)")
    fit.add_argument("--steps", type=ac.positive_int, help="total training steps (may be raised when resuming)")
    fit.add_argument("--batch-rays", type=ac.positive_int)
    fit.add_argument("--codes", type=ac.positive_int, help="codebook size K (an upper bound: codes that do not pay their way are pruned)")
    fit.add_argument("--objects", action="store_true",
                     help="discover objects: one shaded colour per code, codes assigned by what they render "
                          "(nrc.assignment; codes that follow objects, at a cost in PSNR: 4.3 dB on fern, see README)")
    fit.add_argument("--height", type=ac.int_at_least(4), help="image height to train at (images are resized)")
    fit.add_argument("--scene-radius", type=ac.positive_float, help="foreground radius in world units (default: from the sparse "
                     "points or the cameras' viewing rays, see nrc/framing.py)")
    fit.add_argument("--scene-center", metavar="X,Y,Z", help="foreground centre in world units (default: automatic)")
    fit.add_argument("--save-every", type=ac.positive_int)
    fit.add_argument("--seconds", type=ac.nonneg_float, help="wall-clock budget, loading and the final save included "
                     "(default: the preset's; 0: no limit, train --steps)")
    fit.add_argument("--device", type=ac.device, default="auto")
    fit.add_argument("--seed", type=ac.nonneg_int)
    fit.set_defaults(func=_run_fit)

    ev = sub.add_parser("eval", help="score held-out views (PSNR, SSIM; depth, ARI, FG-ARI on synthetic worlds)")
    ev.add_argument("run")
    ev.add_argument("--out", type=ac.out_dir, help="folder for metrics.json and PNG panels (default RUN/eval)")
    ev.add_argument("--max-views", type=ac.positive_int)
    ev.add_argument("--height", type=ac.int_at_least(4), help="evaluate at this image height (default: the training height)")
    ev.add_argument("--device", type=ac.device, default="auto")
    ev.set_defaults(func=_run_eval)

    rd = sub.add_parser("render", help="render a nerfstudio camera path to MP4")
    rd.add_argument("run")
    rd.add_argument("--camera-path", required=True, help="nerfstudio camera_path.json (perspective or equirectangular)")
    rd.add_argument("--out", required=True, type=ac.out_file, help="video.mp4")
    rd.add_argument("--output", default="rgb", choices=("rgb", "depth", "codes"))
    rd.add_argument("--scene", type=ac.nonneg_int, default=0)
    rd.add_argument("--device", type=ac.device, default="auto")
    rd.set_defaults(func=_run_render)

    me = sub.add_parser("export-mesh", help="marching-cubes mesh with vertex colours (.ply, .glb, .obj)")
    me.add_argument("run")
    me.add_argument("--out", required=True, type=ac.out_file, help="mesh.ply | mesh.glb | mesh.obj")
    me.add_argument("--resolution", type=ac.int_at_least(4), default=128, help="grid vertices per side")
    me.add_argument("--level", type=ac.finite_float, help="density iso-level (default: half opacity per rendering step)")
    me.add_argument("--per-code", action="store_true", help="one object per code (separate files for .ply)")
    me.add_argument("--decimate", type=ac.int_at_least(4), metavar="FACES",
                    help="simplify each mesh to at most this many faces")
    me.add_argument("--scene", type=ac.nonneg_int, default=0)
    me.add_argument("--device", type=ac.device, default="auto")
    me.set_defaults(func=_run_export_mesh)


def _run_fit(args) -> int:
    from ingest.errors import OdinError
    from nrc.config import objects_mode, preset
    from nrc.trainer import fit

    device = _device(args.device)
    config = preset(args.preset or ("gpu" if device.startswith("cuda") else "cpu"))
    if args.objects:
        objects_mode(config)
    center = None
    if args.scene_center is not None:
        try:
            center = tuple(float(v) for v in args.scene_center.split(","))
        except ValueError:
            center = ()
        if len(center) != 3 or not all(map(math.isfinite, center)):
            raise OdinError(f"expected X,Y,Z (three finite numbers), got {args.scene_center!r}", "--scene-center")
    if args.seconds is not None:
        config.train.seconds = args.seconds or None
    overrides = {"steps": args.steps, "batch_rays": args.batch_rays, "image_height": args.height,
                 "save_every": args.save_every, "seed": args.seed}
    for key, value in overrides.items():
        if value is not None:
            setattr(config.train, key, value)
    if args.codes is not None:
        config.model.n_codes = args.codes
    result = fit(args.scenes, args.out, config, device=device, scene_radius=args.scene_radius, scene_center=center)
    print(fit_summary(result, config))
    return 0


def fit_summary(result, config) -> str:
    """One line; a run that trained no step in this call says so instead of printing NaN."""
    if not result.history:
        return f"nrc fit: step {result.step}/{config.train.steps} in {result.seconds:.1f} s (no step trained) -> {result.run_dir}"
    last = result.history[-1]
    # Over the whole call (saves, previews and the final refresh included): the last log window
    # can be a single step that paid for a save.
    rays_per_s = result.steps_trained * config.train.batch_rays / max(result.seconds, 1e-9)
    return (f"nrc fit: step {result.step}/{config.train.steps} in {result.seconds:.1f} s, "
            f"train PSNR {last['psnr']:.2f} dB (last {config.train.log_every} steps at most), "
            f"{last['active_codes']} active codes, {rays_per_s:,.0f} rays/s -> {result.run_dir}")


def _run_eval(args) -> int:
    from nrc.evaluate import evaluate_run

    report = evaluate_run(args.run, args.out, _device(args.device), args.max_views, args.height)
    for scene in report["scenes"]:
        print(f"{scene['source']}: {json.dumps({k: round(v, 4) for k, v in scene['mean'].items()})}")
    return 0


def _run_render(args) -> int:
    from nrc.video import render_camera_path

    out = render_camera_path(args.run, args.camera_path, args.out, scene=args.scene, device=_device(args.device),
                             output=args.output)
    print(f"nrc render: -> {out}")
    return 0


def _run_export_mesh(args) -> int:
    from nrc.mesh import export_mesh

    paths = export_mesh(args.run, args.out, resolution=args.resolution, level=args.level, per_code=args.per_code,
                        decimate_faces=args.decimate, scene=args.scene, device=_device(args.device))
    for p in paths:
        print(f"nrc export-mesh: -> {p}")
    return 0

