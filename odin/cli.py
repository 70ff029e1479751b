"""`odin train`, `odin generate`, `odin eval`."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from ingest import argcheck as ac
from ingest.errors import OdinError


def register(subparsers) -> None:
    _add_train(subparsers)
    _add_generate(subparsers)
    _add_eval(subparsers)


# --------------------------------------------------------------------------- train
def _add_train(subparsers) -> None:
    p = subparsers.add_parser("train", help="train the pose-conditioned diffusion model on a PAIRS folder",
                              description="Train (or resume) an Odin run. Re-running with the same --out resumes "
                                          "from its latest checkpoint exactly. Several processes: `accelerate "
                                          "launch --multi_gpu --num_processes N -m ingest.cli train ...`, or "
                                          "`torchrun --nproc_per_node N -m ingest.cli train ...` (one srun task "
                                          "per node under SLURM); without CUDA the processes join over gloo.")
    p.add_argument("pairs", help="PAIRS folder (pairs.parquet + shards/)")
    p.add_argument("--out", required=True, type=ac.out_dir, help="RUN folder (checkpoints, samples, tensorboard)")
    p.add_argument("--config", help="JSON OdinConfig (sections model, diffusion, data, train); default: built-in")
    p.add_argument("--pretrained", help="local diffusers folder with vae/ and unet/: train in latent space")
    p.add_argument("--resolution", type=ac.int_at_least(8), help="override model.resolution (pixels)")
    p.add_argument("--batch-size", type=ac.positive_int, help="override train.batch_size (per process)")
    p.add_argument("--max-steps", type=ac.positive_int, help="override train.max_steps")
    p.add_argument("--max-minutes", type=ac.positive_float, help="override train.max_minutes (stop after a checkpoint)")
    p.add_argument("--split-by", choices=("auto", "video", "time", "recorded"),
                   help="override data.split_by: how val pairs are held out (whole videos/rooms or time ranges)")
    p.add_argument("--val-fraction", type=ac.unit_float, help="override data.val_fraction")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--tiny", action="store_true", help="start from the tiny config (tests, smoke runs)")
    start.add_argument("--cpu", action="store_true",
                       help="start from the CPU quality config (a UNet sized for 2 cores at 32-64 px)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_train)


def _load_config(args):
    from odin.config import OdinConfig, cpu_config, tiny_config

    run_config = Path(args.out) / "config.json"
    if args.config:
        cfg = OdinConfig.load(args.config)
    elif run_config.exists():  # resuming: the run's own config
        cfg = OdinConfig.load(run_config)
    else:
        cfg = tiny_config() if args.tiny else cpu_config() if args.cpu else OdinConfig()
    if args.pretrained:
        cfg.model.pretrained = str(Path(args.pretrained).resolve())
    for name, section, key in (("resolution", cfg.model, "resolution"), ("batch_size", cfg.train, "batch_size"),
                               ("max_steps", cfg.train, "max_steps"), ("max_minutes", cfg.train, "max_minutes"),
                               ("split_by", cfg.data, "split_by"), ("val_fraction", cfg.data, "val_fraction")):
        if getattr(args, name) is not None:
            setattr(section, key, getattr(args, name))
    return cfg


def _run_train(args) -> int:
    from odin.trainer import train

    cfg = _load_config(args)
    ckpt = train(args.pairs, args.out, cfg, config_source=args.config, progress=not args.quiet)
    print(f"odin train: latest checkpoint {ckpt}")
    return 0


# --------------------------------------------------------------------------- shared inference options
def _add_sampling(p) -> None:
    from odin.schedulers import SAMPLERS

    p.add_argument("--steps", type=ac.positive_int, default=50, help="denoising steps")
    p.add_argument("--sampler", choices=SAMPLERS, default="ddim", help="ddim or dpm (DPM-Solver++)")
    p.add_argument("--guidance", type=ac.finite_float, default=2.0, help="classifier-free guidance scale (1 = none)")
    p.add_argument("--seed", type=ac.nonneg_int, default=0)
    p.add_argument("--device", type=ac.device, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA weights")


def _pipeline(run: str, args):
    from odin.pipeline import load_pipeline

    return load_pipeline(run, None if args.device == "auto" else args.device, use_ema=not args.raw_weights)


def _sample_kwargs(args) -> dict:
    import torch

    return {"steps": args.steps, "sampler": args.sampler, "guidance": args.guidance,
            "generator": torch.Generator("cpu").manual_seed(args.seed)}


@contextlib.contextmanager
def _oom_hint(what: str):
    import torch

    try:
        yield
    except torch.OutOfMemoryError as e:
        raise OdinError(f"out of GPU memory; {what}") from e


# --------------------------------------------------------------------------- generate
def _add_generate(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate the view from a relative pose, or a camera trajectory",
                              description="One image + a relative pose -> the target view; or + a nerfstudio "
                                          "camera_path.json -> frames and an MP4 (the image is the view of the "
                                          "path's first camera).")
    p.add_argument("--run", required=True, help="RUN folder (latest checkpoint) or a checkpoint folder")
    p.add_argument("--image", required=True, help="source image (any size/mode: converted to square RGB)")
    pose = p.add_mutually_exclusive_group(required=True)
    pose.add_argument("--pose", help="T_tgt_from_src as 12 comma-separated numbers: R row-major (9), t (3)")
    pose.add_argument("--pose-ypr", help="target camera in the source frame: yaw,pitch,roll (degrees),x,y,z")
    pose.add_argument("--camera-path", help="nerfstudio camera_path.json (trajectory mode)")
    p.add_argument("--out", required=True, type=ac.out_dir, help="output folder")
    p.add_argument("--fov", type=ac.fov_degrees, help="horizontal field of view of --image in degrees "
                                             "(default: the training config's data.fov_deg)")
    p.add_argument("--scale", type=ac.positive_float, default=1.0,
                   help="scene depth that translations are divided by (the pairs' `scale`); 1 = t is normalised")
    p.add_argument("--anchor-weight", type=ac.unit_float, default=0.5,
                   help="trajectory mode: weight of the original image vs the previous frame (0..1)")
    p.add_argument("--fps", type=ac.positive_float, help="MP4 frame rate (default: the camera path's)")
    _add_sampling(p)
    p.set_defaults(func=_run_generate)


def parse_pose(text: str, ypr: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) of T_tgt_from_src from --pose or --pose-ypr text; refuses non-rotations."""
    from ingest import conventions as cv
    from odin.conditioning import check_rotation

    flag = "--pose-ypr" if ypr else "--pose"
    try:
        values = np.array([float(v) for v in text.replace(" ", "").split(",")], np.float64)
    except ValueError:
        raise OdinError(f"must be comma-separated numbers, got {text!r}", flag) from None
    if not np.all(np.isfinite(values)):
        raise OdinError(f"must be finite numbers, got {text!r}", flag)
    if ypr:
        if values.size != 6:
            raise OdinError(f"needs 6 numbers (yaw,pitch,roll,x,y,z), got {values.size}", flag)
        R_c = cv.rotation_from_ypr(*np.radians(values[:3]))
        T = cv.invert_pose(cv.make_pose(R_c, values[3:]))  # camera pose in the source frame -> T_tgt_from_src
        return T[:3, :3], T[:3, 3]
    if values.size != 12:
        raise OdinError(f"needs 12 numbers (R row-major, then t), got {values.size}", flag)
    R = values[:9].reshape(3, 3)
    check_rotation(R, "--pose")
    return R, values[9:]


def _load_image(path: str, resolution: int):
    from PIL import Image, UnidentifiedImageError

    from odin.data import image_tensor, to_rgb_square

    try:
        with Image.open(path) as im:
            im.load()
            size = im.size
            rgb, cropped = to_rgb_square(im, resolution, path)
    except UnidentifiedImageError:
        raise OdinError("not an image file PIL can read", path) from None
    if cropped:
        print(f"odin generate: {path} is {size[0]}x{size[1]}; using its centred square crop")
    return image_tensor(rgb), size


def _run_generate(args) -> int:
    import torch
    from tqdm import tqdm

    from ingest import conventions as cv
    from odin.data import intrinsics_after_load, tensor_image
    from ingest.media import save_png, write_mp4
    from odin.pipeline import ViewCondition, trajectory

    pipe, cfg = _pipeline(args.run, args)
    image, (w, h) = _load_image(args.image, cfg.model.resolution)
    out = Path(args.out)
    fov = args.fov or cfg.data.fov_deg
    K_image = cv.Intrinsics.from_fov(w, h, fov)
    with _oom_hint("use --device cpu or a smaller model"):
        if args.camera_path:
            from correspondence.nerfstudio import load_camera_path

            path = load_camera_path(args.camera_path)
            if path.camera_type != "perspective":
                raise OdinError("only perspective camera paths can be generated", args.camera_path)
            Ks = [intrinsics_after_load(path.intrinsics(i), pipe.work_resolution) for i in range(len(path.c2ws))]
            with tqdm(total=len(path.c2ws) - 1, desc="odin generate", unit="frame") as bar:
                frames = trajectory(pipe, image, path.c2ws, Ks, scale=args.scale, anchor_weight=args.anchor_weight,
                                    progress=bar, **_sample_kwargs(args))
            rgb = [tensor_image(f) for f in frames]
            for i, f in enumerate(rgb):
                save_png(out / f"frame_{i:05d}.png", f)
            video = write_mp4(out / "trajectory.mp4", rgb, fps=args.fps or path.fps)
            print(f"odin generate: {len(rgb)} frames and {video}")
            return 0
        R, t = parse_pose(args.pose_ypr or args.pose, ypr=bool(args.pose_ypr))
        K_tgt = intrinsics_after_load(K_image, pipe.work_resolution)
        cond = ViewCondition(image[None], torch.from_numpy(R)[None], torch.from_numpy(t / args.scale)[None],
                             torch.tensor([args.scale], dtype=torch.float64))
        images, masks = pipe([cond], [K_tgt], **_sample_kwargs(args))
    save_png(out / "source.png", tensor_image(image))
    save_png(out / "generated.png", tensor_image(images[0]))
    save_png(out / "motion_mask.png", (masks[0, 0].clamp(0, 1) * 255).byte().cpu().numpy())
    print(f"odin generate: {out / 'generated.png'}")
    return 0


# --------------------------------------------------------------------------- eval
def _add_eval(subparsers) -> None:
    p = subparsers.add_parser("eval", help="PSNR/SSIM and pose following on held-out pairs, with baselines",
                              description="Generate the targets of held-out pairs and compare with the truth, "
                                          "the copy-source baseline and (with --world) the GT-depth warp baseline.")
    p.add_argument("run", help="RUN folder or checkpoint folder")
    p.add_argument("pairs", help="PAIRS folder")
    p.add_argument("--out", type=ac.out_dir, help="where eval.json and eval_grid.png go (default: RUN/eval)")
    p.add_argument("--split", default="val", choices=("val", "train", "all"),
                   help="which pairs, held out by the run's data.split_by rule (default: val)")
    p.add_argument("--max-pairs", type=ac.positive_int, help="evaluate at most this many pairs")
    p.add_argument("--world", help="synthetic world the pairs come from: adds the GT-depth warp baseline")
    p.add_argument("--batch-size", type=ac.positive_int, default=8)
    p.add_argument("--no-pose-following", action="store_true", help="skip the two-view pose estimation")
    _add_sampling(p)
    p.set_defaults(func=_run_eval)


def _run_eval(args) -> int:
    from odin.evaluate import evaluate

    pipe, cfg = _pipeline(args.run, args)
    world = None
    if args.world:
        from ingest.synth import SyntheticWorld

        world = SyntheticWorld(args.world)
    out = Path(args.out) if args.out else Path(args.run) / "eval"
    with _oom_hint(f"lower --batch-size (now {args.batch_size})"):
        report = evaluate(pipe, args.pairs, out, split=args.split, max_pairs=args.max_pairs, world=world,
                          steps=args.steps, sampler=args.sampler, guidance=args.guidance, batch_size=args.batch_size,
                          seed=args.seed, pose_following=not args.no_pose_following, split_by=cfg.data.split_by,
                          val_fraction=cfg.data.val_fraction)
    _print_report(report)
    print(f"odin eval: {out / 'eval.json'}, {out / 'eval_grid.png'}")
    return 0


def _print_report(report: dict) -> None:
    def fmt(key):
        v = report.get(key)
        return "-" if not v or v["mean"] is None else f"{v['mean']:.3f}"

    print(f"pairs: {report['pairs']}")
    print(f"PSNR  generated {fmt('psnr')}  copy-source {fmt('psnr_copy')}  plane-reprojection {fmt('psnr_plane')}  "
          f"gt-depth-warp {fmt('psnr_warp')}")
    print(f"SSIM  generated {fmt('ssim')}  copy-source {fmt('ssim_copy')}  plane-reprojection {fmt('ssim_plane')}  "
          f"gt-depth-warp {fmt('ssim_warp')}")
    if "rot_err" in report:
        med = lambda k: "-" if report[k]["median"] is None else f"{report[k]['median']:.2f}"  # noqa: E731
        print(f"pose following (median deg): rotation {med('rot_err')} translation {med('trans_err')} "
              f"(failed {report['rot_err']['failed']}); on true targets: rotation {med('rot_err_gt')} "
              f"translation {med('trans_err_gt')} (failed {report['rot_err_gt']['failed']})")
