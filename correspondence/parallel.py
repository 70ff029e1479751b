"""Mine a whole dataset: videos in sequence, in worker processes, or as Ray tasks.

Each video is one job, :func:`mine_video_job` (dataset path, video id, pairs folder, config
dict -> summary dict): plain arguments, so it pickles for processes and Ray alike. Videos
already committed are skipped, which makes a restarted run resume where it stopped.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from correspondence.mine import FrameSource, MineConfig, VideoSummary, mine_video
from correspondence.pairs_io import consolidate, done_videos
from ingest.errors import OdinError


def open_dataset(path: str | Path):
    try:
        from ingest.dataset import Dataset
    except ImportError as e:  # the ingest reader is a sibling package still being written
        raise OdinError(f"cannot read ingested datasets: {e}", path) from e
    return Dataset(path)


def mine_video_job(dataset_path: str, video_id: str, pairs_dir: str, config: dict, progress: bool = False) -> dict:
    import cv2

    cv2.setNumThreads(1)  # one core per job: parallelism comes from the jobs
    summary = mine_video(open_dataset(dataset_path), video_id, pairs_dir, MineConfig.from_dict(config), progress)
    return dataclasses.asdict(summary)


def pending_videos(video_ids: list[str], pairs_dir: str | Path) -> list[str]:
    done = done_videos(pairs_dir)
    return [v for v in video_ids if v not in done]


def mine_dataset(dataset_path: str | Path, pairs_dir: str | Path, config: MineConfig = MineConfig(),
                 workers: int = 1, use_ray: bool = False, progress: bool = True) -> list[VideoSummary]:
    """Mine every unfinished video; returns the summaries of the videos mined in this run."""
    from tqdm import tqdm

    dataset_path, pairs_dir = str(dataset_path), str(pairs_dir)
    todo = pending_videos(list(open_dataset(dataset_path).video_ids()), pairs_dir)
    cfg = dataclasses.asdict(config)
    results: list[dict] = []
    if use_ray:
        import ray

        if not ray.is_initialized():
            ray.init(num_cpus=workers if workers > 1 else None, include_dashboard=False, log_to_driver=False)
        job = ray.remote(num_cpus=1)(mine_video_job)
        pending = [job.remote(dataset_path, v, pairs_dir, cfg) for v in todo]
        with tqdm(total=len(pending), desc="videos", unit="video", disable=not progress) as bar:
            while pending:
                finished, pending = ray.wait(pending, num_returns=1)
                results += ray.get(finished)
                bar.update(len(finished))
    elif workers > 1:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(mine_video_job, dataset_path, v, pairs_dir, cfg) for v in todo]
            for fut in tqdm(as_completed(futures), total=len(futures), desc="videos", unit="video", disable=not progress):
                results.append(fut.result())
    else:
        return mine_source(open_dataset(dataset_path), pairs_dir, config, progress)
    consolidate(pairs_dir)
    return [VideoSummary(**r) for r in results]


def mine_source(source: FrameSource, pairs_dir: str | Path, config: MineConfig = MineConfig(),
                progress: bool = True) -> list[VideoSummary]:
    """In-process mining of every unfinished video of any frame source, then consolidation."""
    from tqdm import tqdm

    todo = pending_videos(list(source.video_ids()), pairs_dir)
    summaries = [mine_video(source, v, pairs_dir, config, progress)
                 for v in tqdm(todo, desc="videos", unit="video", disable=not progress or len(todo) < 2)]
    consolidate(pairs_dir)
    return summaries
