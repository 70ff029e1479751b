"""`odin mine`, `odin reconstruct` and `odin import-poses` (registered via entry points)."""
from __future__ import annotations

from pathlib import Path

from ingest import argcheck as ac
from ingest.errors import OdinError


def _add_mine(subparsers) -> None:
    p = subparsers.add_parser("mine", help="mine training pairs with relative poses from an ingested dataset",
                              description="Compare kept 360° frames inside a sliding window, estimate relative poses, "
                                          "pick perspective views and write PAIRS (pairs.parquet + WebDataset shards). "
                                          "Resumable per video.")
    p.add_argument("dataset", help="ingested dataset folder (`odin ingest` output)")
    p.add_argument("--out", type=ac.out_dir, help="PAIRS folder (default: DATASET/pairs)")
    p.add_argument("--window", type=ac.positive_int, default=20, help="kept frames compared with each frame")
    p.add_argument("--analysis-width", type=ac.int_at_least(16), default=1024, help="equirect width used for features")
    p.add_argument("--refine-views", action="store_true", help="re-aim views at the shared inliers instead of the grid")
    p.add_argument("--no-long-range", action="store_true", help="skip correspondence propagation beyond the window")
    p.add_argument("--estimator", choices=["pycolmap", "reference"], default="pycolmap")
    p.add_argument("--workers", type=ac.positive_int, default=1, help="videos mined in parallel processes")
    p.add_argument("--ray", metavar="ADDRESS", help="run videos as Ray tasks on a cluster (address, 'auto', or "
                   "'local' for a local Ray with --workers CPUs); --out must be on storage every node sees")
    p.set_defaults(func=_run_mine)


def _run_mine(args) -> int:
    from correspondence.mine import MineConfig
    from correspondence.parallel import mine_dataset
    from correspondence.twoview import TwoViewConfig

    out = Path(args.out) if args.out else Path(args.dataset) / "pairs"
    config = MineConfig(window=args.window, analysis_width=args.analysis_width, refine_views=args.refine_views,
                        long_range=not args.no_long_range, twoview=TwoViewConfig(estimator=args.estimator))
    summaries = mine_dataset(args.dataset, out, config, workers=args.workers, ray_address=args.ray)
    for s in summaries:
        print(s.line())
    print(f"pairs: {out / 'pairs.parquet'} ({sum(s.pairs for s in summaries)} new pairs from {len(summaries)} videos)")
    _refuse_empty_result(out)
    return 0


def _refuse_empty_result(out: Path) -> None:
    """Exit 2 when the whole pairs folder (this run and earlier ones) holds no pair: nothing downstream can
    use it, and the outcomes say why."""
    from correspondence.mine import load_summaries

    every = load_summaries(out)
    if every and not any(s.pairs for s in every):
        outcomes: dict[str, int] = {}
        for s in every:
            for status, n in s.reasons.items():
                outcomes[status] = outcomes.get(status, 0) + n
        common = ", ".join(f"{status} {n}" for status, n in sorted(outcomes.items(), key=lambda kv: -kv[1])[:3])
        raise OdinError(f"no frame pair kept in {len(every)} video(s) ({common or 'no frame pair to try'}); "
                        "low_parallax: the camera barely moves; too_few_*: frames share too little "
                        "(ingest at a higher --fps, or check the rig mask)", out)


def _add_reconstruct(subparsers) -> None:
    from correspondence.sfm import SfmConfig

    p = subparsers.add_parser("reconstruct", help="pose one video with COLMAP SfM -> transforms.json (+ sparse points)",
                              description="Structure from motion on the kept 360° frames of one shot of a video, "
                                          "seeded with mining's verified pairs and masked where the rig moves with "
                                          "the camera. Writes transforms.json (perspective views), points.ply, "
                                          "report.json (every frame: registered or why not) and trajectory.png.")
    p.add_argument("dataset", help="ingested dataset folder")
    p.add_argument("--video", required=True, help="video id inside the dataset")
    p.add_argument("--out", required=True, type=ac.out_dir, help="output folder")
    p.add_argument("--max-frames", type=ac.int_at_least(2), default=200, help="evenly subsample the shot's frames to at most this many")
    p.add_argument("--route", choices=["rig", "equirect"], default=SfmConfig.route,
                   help="rig: virtual pinhole cameras as one COLMAP rig per frame; equirect: native 360° camera")
    p.add_argument("--mapper", choices=["incremental", "global"], default=SfmConfig.mapper,
                   help="global (GLOMAP: rotation averaging, then positions) or incremental COLMAP")
    p.add_argument("--shot", type=ac.nonneg_int, help="which shot to pose (default: the longest)")
    p.add_argument("--mask", metavar="PNG", help="rig mask for every frame (white = moves with the camera); "
                   "default: the mask ingest detected")
    p.add_argument("--pairs", metavar="PAIRS", help="`odin mine` output whose verified pairs seed matching "
                   "(default: DATASET/pairs when it exists)")
    p.add_argument("--no-mined-pairs", action="store_true", help="match temporal neighbours only")
    p.add_argument("--overlap", type=ac.positive_int, default=SfmConfig.sequential_overlap,
                   help="temporal neighbours matched with each frame")
    p.add_argument("--mask-features", action="store_true",
                   help="extract no features under the rig mask, instead of dropping the matches that keep their "
                        "pixel position between two frames (the default)")
    p.add_argument("--mapper-threads", type=ac.positive_int, default=SfmConfig.mapper_threads,
                   help="threads of the mapper; above 1 it is faster on many cores, but poses differ from run "
                        "to run (default 1: the same frames give the same poses)")
    p.set_defaults(func=_run_reconstruct)


def _run_reconstruct(args) -> int:
    from correspondence.parallel import open_dataset
    from correspondence.reconstruct import ReconstructConfig, already_done, reconstruct_settings, reconstruct_video
    from correspondence.sfm import SfmConfig
    from ingest.rigmask import load_mask_file
    from ingest.runlock import run_lock

    mask = load_mask_file(args.mask) if args.mask else None  # a bad file is refused before any work
    source = open_dataset(args.dataset)
    if args.video not in source.video_ids():
        raise OdinError(f"no video {args.video!r} in the dataset (it has: {', '.join(source.video_ids()) or 'none'})",
                        args.dataset)
    pairs = Path(args.pairs) if args.pairs else Path(args.dataset) / "pairs"
    pairs = pairs if pairs.is_dir() else None
    config = ReconstructConfig(max_frames=args.max_frames, shot=args.shot, use_mined_pairs=not args.no_mined_pairs,
                               sfm=SfmConfig(route=args.route, mapper=args.mapper, sequential_overlap=args.overlap,
                                             mapper_threads=args.mapper_threads, mask_features=args.mask_features))
    inputs = [args.dataset] + ([pairs] if pairs else [])
    # Looked at under the folder's lock: a writer still finishing is refused rather than reported
    # done, and the lock file of one killed after its last write is cleaned (bench/abuse.py).
    with run_lock(args.out, "reconstruction", inputs=inputs):
        done = already_done(args.out, reconstruct_settings(args.video, config, pairs, mask))
    if done:
        print(f"{args.out}: already reconstructed with these settings (transforms.json exists); remove it to redo")
        return 0
    result = reconstruct_video(source, args.video, args.out, config, pairs_dir=pairs, user_mask=mask, inputs=inputs)
    print(result.line())
    return 0


def _add_import(subparsers) -> None:
    p = subparsers.add_parser("import-poses", help="import posed images (transforms.json, cameras.npz, COLMAP, LLFF) "
                                                   "as transforms.json",
                              description="Read nerfstudio/instant-ngp transforms.json (missing images are skipped "
                                          "with a warning), IDR/NeuS/MonoSDF cameras.npz, a COLMAP sparse model "
                                          "(.bin or .txt) or an LLFF folder with poses_bounds.npy, and write a "
                                          "nerfstudio transforms.json in OUT. Images stay where they are; lens "
                                          "distortion, camera model and masks are kept; a dataparser_transforms.json "
                                          "beside the source is copied, else the one nerfstudio's defaults will "
                                          "give OUT is written (camera paths for OUT are written in that frame).")
    p.add_argument("source", help="transforms.json, cameras.npz, a COLMAP model folder (or cameras.bin/.txt), or a "
                                  "folder holding any of them (sparse/0 too), or an LLFF folder")
    p.add_argument("--out", required=True, type=ac.out_dir,
                   help="output folder for transforms.json (not the source's folder)")
    p.add_argument("--images", help="image folder of a COLMAP model (default: images/ beside the model or above it)")
    p.set_defaults(func=_run_import)


def _run_import(args) -> int:
    from correspondence.imports import load_any
    from correspondence.imports_dataparser import carry_dataparser
    from correspondence.nerfstudio import write_transforms
    from ingest.errors import OdinError

    source, out = Path(args.source), Path(args.out)
    src_dir = source if source.is_dir() else source.parent
    if out.resolve() == src_dir.resolve():
        raise OdinError("--out is the source's folder; import-poses never rewrites its input, choose another folder",
                        args.out)
    scene = load_any(source, images_dir=args.images)
    path = write_transforms(scene, out / "transforms.json")
    frame = carry_dataparser(src_dir, scene, out)
    distorted = sum(f.distortion is not None for f in scene.frames)
    print(f"imported {len(scene.frames)} posed frames from {scene.source} -> {path}"
          + (f" ({distorted} with lens distortion, kept)" if distorted else "") + f"; {frame}")
    return 0


def register(subparsers) -> None:
    _add_mine(subparsers)
    _add_reconstruct(subparsers)
    _add_import(subparsers)
