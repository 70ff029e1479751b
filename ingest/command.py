"""`odin ingest`: arguments and their translation into an IngestConfig run."""
from __future__ import annotations

from ingest import argcheck as ac
from ingest.errors import OdinError

_DESCRIPTION = """Turn 360° videos (files, folders, text lists of paths, or a 360-1M metadata Parquet with
--from-list) into a dataset of equirectangular frames and perspective views: Parquet manifest +
WebDataset tar shards. Re-running resumes: finished videos are skipped, interrupted ones redone."""


def add_ingest_parser(subparsers) -> None:
    p = subparsers.add_parser("ingest", help="build a frames + views dataset from 360° videos",
                              description=_DESCRIPTION)
    p.add_argument("videos", nargs="*", metavar="VIDEO", help="video/image files, folders, or .txt lists of paths")
    p.add_argument("--out", required=True, type=ac.out_dir, help="dataset folder (created; re-use it to resume)")
    p.add_argument("--from-list", metavar="PARQUET", help="360-1M metadata Parquet (id, width, height, fps, "
                   "duration, format); rows that are not equirectangular are skipped without opening them")
    p.add_argument("--video-dir", help="where --from-list videos are, named ID.mp4 (or another video suffix)")
    p.add_argument("--fps", type=float, default=1.0, help="frames sampled per second (0 = every frame)")
    p.add_argument("--no-seek", action="store_true", help="decode every frame instead of seeking between samples")
    p.add_argument("--equirect-width", type=int, default=2048, help="width of stored equirect frames (height/2)")
    p.add_argument("--views", default="8", help="yaw/pitch grid: N (N yaws on the horizon) or N@PITCH,... "
                   "e.g. 8@0,4@45,4@-45; 0 = no views")
    p.add_argument("--view-size", type=int, default=512, help="view width = height, pixels")
    p.add_argument("--fov", type=float, default=90.0, help="view horizontal field of view, degrees")
    p.add_argument("--jpeg-quality", type=int, default=95)
    p.add_argument("--no-filter", action="store_true", help="keep black, blurred and duplicate frames")
    p.add_argument("--blur-threshold", type=float, default=None, help="Laplacian variance below which a frame "
                   "is 'blurred' (default 40)")
    p.add_argument("--duplicate-threshold", type=float, default=None, help="mean grey difference to the last "
                   "kept frame below which a frame is a 'duplicate' (default 1.5)")
    p.add_argument("--layout", choices=("mono", "squeezed", "top-bottom", "side-by-side"), default=None,
                   help="take every input as this layout instead of detecting it (stereo: the top/left eye "
                   "is kept; any eye aspect is resampled to 2:1)")
    p.add_argument("--mask", metavar="FILE", help="rig mask image for every video (any 2:1 resolution, white = "
                   "rig, resized) instead of the automatic one")
    p.add_argument("--no-rig-mask", action="store_true", help="do not detect a rig mask automatically")
    p.add_argument("--no-cuts", action="store_true", help="do not detect shot cuts (the whole video is one shot)")
    p.add_argument("--workers", type=ac.positive_int, default=1, help="parallel processes (one video each)")
    p.add_argument("--ray", metavar="ADDRESS", help="run the per-video tasks on a Ray cluster (address, 'auto', "
                   "or 'local' for a local Ray with --workers CPUs); --out must be on storage every node sees")
    p.add_argument("--retry-failed", action="store_true", help="retry videos recorded as failed")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_ingest_command)


def config_from_args(args):
    from dataclasses import replace

    from ingest.decode import SamplingConfig
    from ingest.filters import FilterConfig
    from ingest.pipeline import IngestConfig
    from ingest.rigmask import RigMaskConfig
    from ingest.shots import CutConfig
    from ingest.views import ViewsConfig

    filters = FilterConfig(enabled=not args.no_filter)
    if args.blur_threshold is not None:
        filters = replace(filters, blur_min_laplacian_var=args.blur_threshold)
    if args.duplicate_threshold is not None:
        filters = replace(filters, duplicate_max_diff=args.duplicate_threshold)
    mask_file = None
    if args.mask:
        from pathlib import Path

        from ingest.rigmask import load_mask_file

        load_mask_file(args.mask)  # refuse a bad file now, with one line, before any video is touched
        mask_file = str(Path(args.mask).resolve())
    return IngestConfig(sampling=SamplingConfig(fps=args.fps, seek=not args.no_seek, skip_nonref=not args.no_seek),
                        filters=filters, views=ViewsConfig.parse(args.views, args.fov, args.view_size),
                        rig_mask=RigMaskConfig(enabled=not args.no_rig_mask), cuts=CutConfig(enabled=not args.no_cuts),
                        equirect_width=args.equirect_width, jpeg_quality=args.jpeg_quality, layout=args.layout,
                        mask_file=mask_file)


def run_ingest_command(args) -> int:
    from pathlib import Path

    from ingest.inputs import plan_from_list, resolve_inputs
    from ingest.run import format_summary, run_ingest

    missing = [v for v in args.videos if not Path(v).exists()]
    if missing:  # a typo, not a video to record as failed in the dataset
        raise OdinError("no such file or folder", missing[0])
    config = config_from_args(args)
    items = resolve_inputs(args.videos)
    if args.from_list:
        if not args.video_dir:
            raise OdinError("needs --video-dir (where the videos named ID.mp4 are)", "--from-list")
        items += plan_from_list(args.from_list, args.video_dir)
    if not items:
        raise OdinError("nothing to ingest: give video files, folders, lists, or --from-list", "VIDEO")
    folders = [v for v in args.videos if Path(v).is_dir()] + ([args.video_dir] if args.video_dir else [])
    summary = run_ingest(items, Path(args.out), config, workers=args.workers, ray_address=args.ray,
                         retry_failed=args.retry_failed, progress=not args.no_progress, inputs=folders)
    print(format_summary(summary))
    print(f"summary: {Path(args.out) / 'summary.json'}")
    if not summary["videos_done"] and not summary["videos_already_done"]:
        raise nothing_ingested(summary, args.out)
    return 0


def nothing_ingested(summary: dict, out) -> OdinError:
    """The one line for a run where every input failed or was skipped: the input's own reason when
    there was one input, else the counts and the first reason."""
    reasons = {**summary["failures"], **summary["skipped"]}
    if len(reasons) == 1:
        (path, reason), = reasons.items()
        return OdinError(reason, path)
    first = next(iter(reasons.items()), None)
    return OdinError(f"no video ingested: {summary['videos_failed']} failed, {summary['videos_skipped']} skipped"
                     + (f" (first: {first[0]}: {first[1]})" if first else "") + "; see summary.json", out)
