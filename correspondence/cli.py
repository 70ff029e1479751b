"""`odin mine`, `odin reconstruct` and `odin import-poses` (registered via entry points)."""
from __future__ import annotations

from pathlib import Path


def _add_mine(subparsers) -> None:
    p = subparsers.add_parser("mine", help="mine training pairs with relative poses from an ingested dataset",
                              description="Compare kept 360° frames inside a sliding window, estimate relative poses, "
                                          "pick perspective views and write PAIRS (pairs.parquet + WebDataset shards). "
                                          "Resumable per video.")
    p.add_argument("dataset", help="ingested dataset folder (`odin ingest` output)")
    p.add_argument("--out", help="PAIRS folder (default: DATASET/pairs)")
    p.add_argument("--window", type=int, default=20, help="kept frames compared with each frame")
    p.add_argument("--analysis-width", type=int, default=1024, help="equirect width used for features")
    p.add_argument("--refine-views", action="store_true", help="re-aim views at the shared inliers instead of the grid")
    p.add_argument("--no-long-range", action="store_true", help="skip correspondence propagation beyond the window")
    p.add_argument("--estimator", choices=["pycolmap", "reference"], default="pycolmap")
    p.add_argument("--workers", type=int, default=1, help="videos mined in parallel processes")
    p.add_argument("--ray", metavar="ADDRESS", help="run videos as Ray tasks on a cluster (address, 'auto', or "
                   "'local' for a local Ray with --workers CPUs); --out must be on storage every node sees")
    p.set_defaults(func=_run_mine)


def _run_mine(args) -> int:
    from correspondence.mine import MineConfig
    from correspondence.parallel import mine_dataset
    from correspondence.twoview import TwoViewConfig
    from ingest.errors import OdinError

    if args.window < 1 or args.workers < 1:
        raise OdinError(f"--window and --workers must be >= 1, got {args.window}, {args.workers}")
    out = Path(args.out) if args.out else Path(args.dataset) / "pairs"
    config = MineConfig(window=args.window, analysis_width=args.analysis_width, refine_views=args.refine_views,
                        long_range=not args.no_long_range, twoview=TwoViewConfig(estimator=args.estimator))
    summaries = mine_dataset(args.dataset, out, config, workers=args.workers, ray_address=args.ray)
    for s in summaries:
        print(s.line())
    print(f"pairs: {out / 'pairs.parquet'} ({sum(s.pairs for s in summaries)} new pairs from {len(summaries)} videos)")
    return 0


def _add_reconstruct(subparsers) -> None:
    p = subparsers.add_parser("reconstruct", help="pycolmap SfM of one video -> transforms.json (+ sparse points PLY)",
                              description="Structure from motion on one video's kept 360° frames; writes a "
                                          "nerfstudio transforms.json of perspective views and points.ply.")
    p.add_argument("dataset", help="ingested dataset folder")
    p.add_argument("--video", required=True, help="video id inside the dataset")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--max-frames", type=int, default=200, help="evenly subsample the kept frames to at most this many")
    p.set_defaults(func=_run_reconstruct)


def _run_reconstruct(args) -> int:
    from correspondence.parallel import open_dataset
    from correspondence.reconstruct import ReconstructConfig, reconstruct_video

    if (Path(args.out) / "transforms.json").exists():
        print(f"{args.out}: already reconstructed (transforms.json exists); remove it to redo")
        return 0
    result = reconstruct_video(open_dataset(args.dataset), args.video, args.out,
                               ReconstructConfig(max_frames=args.max_frames))
    print(result.line())
    return 0


def _add_import(subparsers) -> None:
    p = subparsers.add_parser("import-poses", help="import posed images (transforms.json, LLFF) as transforms.json",
                              description="Read nerfstudio/instant-ngp transforms.json (missing images are skipped "
                                          "with a warning) or an LLFF folder with poses_bounds.npy, and write a "
                                          "nerfstudio transforms.json in OUT.")
    p.add_argument("source", help="transforms.json, a folder holding one, or an LLFF folder")
    p.add_argument("--out", required=True, help="output folder for transforms.json")
    p.set_defaults(func=_run_import)


def _run_import(args) -> int:
    from correspondence.nerfstudio import load_scene, write_transforms

    scene = load_scene(args.source)
    path = write_transforms(scene, Path(args.out) / "transforms.json")
    print(f"imported {len(scene.frames)} posed frames from {scene.source} -> {path}")
    return 0


def register(subparsers) -> None:
    _add_mine(subparsers)
    _add_reconstruct(subparsers)
    _add_import(subparsers)
