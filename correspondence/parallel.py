"""Mine a whole dataset: videos in sequence, in worker processes, or as Ray tasks.

Each video is one job, :func:`mine_video_job` (dataset path, video id, pairs folder, config
dict -> summary dict): plain arguments, so it pickles for processes and Ray alike. Videos
already committed are skipped, which makes a restarted run resume where it stopped.
"""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Iterator

from correspondence.mine import FrameSource, MineConfig, VideoSummary, mine_video
from correspondence.pairs_io import SETTINGS, consolidate, done_videos
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
                 workers: int = 1, ray_address: str | None = None, progress: bool = True) -> list[VideoSummary]:
    """Mine every unfinished video; returns the summaries of the videos mined in this run.

    ``ray_address``: a Ray cluster address, ``"auto"``, or ``"local"`` (a local Ray with
    ``workers`` CPUs), as for ``odin ingest --ray``; otherwise ``workers`` > 1 uses processes.
    """
    dataset_path, pairs_dir = str(dataset_path), str(pairs_dir)
    dataset = open_dataset(dataset_path)  # a missing dataset is refused before any folder is made
    with pairs_lock(pairs_dir, config, inputs=[dataset_path]):
        if not ray_address and workers <= 1:
            return _mine_source(dataset, pairs_dir, config, progress)
        return _mine_jobs(dataset_path, pairs_dir, config, workers, ray_address, progress)


def _mine_jobs(dataset_path: str, pairs_dir: str, config: MineConfig, workers: int, ray_address: str | None,
               progress: bool) -> list[VideoSummary]:
    from tqdm import tqdm

    todo = pending_videos(list(open_dataset(dataset_path).video_ids()), pairs_dir)
    jobs = [(dataset_path, v, pairs_dir, dataclasses.asdict(config)) for v in todo]
    run = _run_ray(jobs, ray_address, workers) if ray_address else _run_processes(jobs, workers)
    results = list(tqdm(run, total=len(jobs), desc="videos", unit="video", disable=not progress))
    consolidate(pairs_dir)
    return [VideoSummary(**r) for r in results]


def _run_processes(jobs: list[tuple], workers: int) -> Iterator[dict]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # Spawn, not fork: a process forked after OpenCV/pycolmap started their thread pools
    # inherits locks held by threads that do not exist in the child, and hangs.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        for fut in as_completed([pool.submit(mine_video_job, *job) for job in jobs]):
            yield fut.result()


def _run_ray(jobs: list[tuple], address: str, workers: int) -> Iterator[dict]:
    from ingest.run import connect_ray

    ray = connect_ray(address, workers)
    task = ray.remote(num_cpus=1)(mine_video_job)
    pending = [task.remote(*job) for job in jobs]
    while pending:
        finished, pending = ray.wait(pending, num_returns=1)
        yield from ray.get(finished)


def mine_source(source: FrameSource, pairs_dir: str | Path, config: MineConfig = MineConfig(),
                progress: bool = True) -> list[VideoSummary]:
    """In-process mining of every unfinished video of any frame source, then consolidation."""
    with pairs_lock(pairs_dir, config):
        return _mine_source(source, pairs_dir, config, progress)


@contextlib.contextmanager
def pairs_lock(pairs_dir: str | Path, config: MineConfig, inputs=()):
    """Hold the pairs folder's write lock (ingest.runlock) and check its settings: videos mined
    with other settings are never kept as if they were this run's (a re-run used to report
    "0 new pairs" and keep them)."""
    from ingest.runlock import claim_settings, run_lock

    with run_lock(pairs_dir, "pairs folder", inputs=inputs, clean=("", "parts", "shards", "summaries")):
        claim_settings(pairs_dir, SETTINGS, config.identity(), "pairs folder")
        yield


def _mine_source(source: FrameSource, pairs_dir: str | Path, config: MineConfig, progress: bool) -> list[VideoSummary]:
    from tqdm import tqdm

    todo = pending_videos(list(source.video_ids()), pairs_dir)
    summaries = [mine_video(source, v, pairs_dir, config, progress)
                 for v in tqdm(todo, desc="videos", unit="video", disable=not progress or len(todo) < 2)]
    consolidate(pairs_dir)
    return summaries
