"""Run ingest over many videos: plan, skip finished ones, execute (serial, processes or Ray), summarise."""
from __future__ import annotations

import collections
import json
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ingest.atomic import atomic_write_json
from ingest.errors import OdinError
from ingest.manifest import check_config, consolidate, iter_parts, read_record
from ingest.pipeline import IngestConfig, WorkItem, ingest_video
from ingest.runlock import run_lock


def _worker_init():
    # One OpenCV thread per process: processes already use every core, nested pools only thrash.
    import cv2

    cv2.setNumThreads(1)


def _run_serial(items, root, config, retry_failed) -> Iterator[dict]:
    for item in items:
        yield ingest_video(item, root, config, retry_failed)


def _run_processes(items, root, config, retry_failed, workers: int) -> Iterator[dict]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")  # fork after PyAV/OpenCV threads start is unsafe
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init) as pool:
        yield from _bounded(lambda it: pool.submit(ingest_video, it, root, config, retry_failed), items,
                            2 * workers, lambda fs: wait(fs, return_when=FIRST_COMPLETED)[0], lambda f: f.result())


def connect_ray(address: str, workers: int):
    """The ``ray`` module, connected: ``address`` "local" starts a ``workers``-CPU Ray here,
    anything else ("auto", "ray://host:port") joins a cluster. Shared by ingest and mining."""
    try:
        import ray
    except ImportError as e:
        raise OdinError("--ray needs Ray: pip install 'odin360[ray]'") from e
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=max(1, workers), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
    return ray


def _run_ray(items, root, config, retry_failed, address: str, workers: int) -> Iterator[dict]:
    ray = connect_ray(address, workers)
    task = ray.remote(num_cpus=1)(_ray_task)
    n_slots = max(2, int(ray.cluster_resources().get("CPU", 2)) * 2)

    def done(refs):
        ready, _ = ray.wait(list(refs), num_returns=1)
        return ready

    yield from _bounded(lambda it: task.remote(it, str(root), config, retry_failed), items, n_slots, done, ray.get)


def _ray_task(item, root, config, retry_failed):
    _worker_init()
    return ingest_video(item, root, config, retry_failed)


def _bounded(submit: Callable, items: Iterable, limit: int, wait_some: Callable, result: Callable) -> Iterator[dict]:
    """Keep at most ``limit`` tasks in flight (a million-video plan is never submitted at once)."""
    inflight = set()
    for item in items:
        inflight.add(submit(item))
        while len(inflight) >= limit:
            for f in wait_some(inflight):
                inflight.discard(f)
                yield result(f)
    while inflight:
        for f in wait_some(inflight):
            inflight.discard(f)
            yield result(f)


def finished_ids(root: Path, retry_failed: bool) -> set[str]:
    done = set()
    for part in iter_parts(root):
        record = read_record(part)
        if record is not None and not (retry_failed and record["video"]["status"] == "failed"):
            done.add(part.name)
    return done


def run_ingest(items: list[WorkItem], root: str | Path, config: IngestConfig, workers: int = 1,
               ray_address: str | None = None, retry_failed: bool = False, progress: bool = True,
               inputs: list[str | Path] = ()) -> dict:
    """Ingest ``items`` into ``root``; returns (and writes as summary.json) the run's summary.
    ``root`` is locked for the run (ingest.runlock); ``inputs``: folders it must not be."""
    # Killed parts are hidden folders in the buckets (ingest.manifest), cleaned with the lock held.
    with run_lock(root, "dataset", inputs=inputs, clean=("", "parts/*")):
        return _run_ingest(items, Path(root), config, workers, ray_address, retry_failed, progress)


def _run_ingest(items, root: Path, config: IngestConfig, workers, ray_address, retry_failed, progress) -> dict:
    from tqdm import tqdm

    check_config(root, config.identity())
    done = finished_ids(root, retry_failed)
    todo = [it for it in items if it.video_id not in done]
    started = time.perf_counter()
    counts = collections.Counter()
    rows = []
    bar = tqdm(total=len(todo), unit="video", desc="ingest", disable=not progress, dynamic_ncols=True)
    if ray_address:
        results = _run_ray(todo, root, config, retry_failed, ray_address, workers)
    elif workers > 1:
        results = _run_processes(todo, root, config, retry_failed, workers)
    else:
        results = _run_serial(todo, root, config, retry_failed)
    try:
        for row in results:
            rows.append(row)
            counts["frames"] += row.get("n_sampled") or 0
            bar.update(1)
            elapsed = max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(frames_per_s=f"{counts['frames'] / elapsed:.1f}", failed=sum(
                r["status"] == "failed" for r in rows), refresh=False)
    finally:
        bar.close()
    tables = consolidate(root)
    summary = summarize(rows, len(items) - len(todo), time.perf_counter() - started, tables)
    atomic_write_json(root / "summary.json", summary)
    return summary


def summarize(rows: list[dict], already_done: int, seconds: float, tables: dict) -> dict:
    dropped = collections.Counter()
    for r in rows:
        dropped.update(json.loads(r.get("dropped") or "{}"))
    by_status = collections.Counter(r["status"] for r in rows)
    kept = sum(r.get("n_kept") or 0 for r in rows)
    sampled = sum(r.get("n_sampled") or 0 for r in rows)
    return {
        "videos_processed": len(rows),
        "videos_already_done": already_done,
        "videos_done": by_status["done"],
        "videos_failed": by_status["failed"],
        "videos_skipped": by_status["skipped"],
        "failed_by_reason": dict(collections.Counter(r["error_kind"] for r in rows if r["status"] == "failed")),
        # Refusals are few distinct sentences: counted by the whole reason, never a truncated kind.
        "skipped_by_reason": dict(collections.Counter(r["error"] for r in rows if r["status"] == "skipped")),
        "failures": {r["path"]: r["error"] for r in rows if r["status"] == "failed"},
        "skipped": {r["path"]: r["error"] for r in rows if r["status"] == "skipped"},
        "frames_sampled": sampled,
        "frames_kept": kept,
        "frames_dropped_by_reason": dict(dropped),
        "views_written": sum(r.get("n_views") or 0 for r in rows),
        "seconds": round(seconds, 3),
        "videos_per_s": round(len(rows) / seconds, 3) if seconds > 0 else None,
        "frames_per_s": round(sampled / seconds, 3) if seconds > 0 else None,
        "manifest_rows": tables,
    }


def format_summary(summary: dict) -> str:
    lines = [f"videos: {summary['videos_done']} done, {summary['videos_failed']} failed, "
             f"{summary['videos_skipped']} skipped, {summary['videos_already_done']} already done "
             f"({summary['seconds']:.1f} s, {summary['videos_per_s'] or 0:.2f} videos/s, "
             f"{summary['frames_per_s'] or 0:.1f} frames/s)",
             f"frames: {summary['frames_kept']} kept of {summary['frames_sampled']} sampled; dropped "
             + (", ".join(f"{k} {v}" for k, v in sorted(summary["frames_dropped_by_reason"].items())) or "none"),
             f"views:  {summary['views_written']}"]
    for path, error in sorted(summary["failures"].items()):
        lines.append(f"failed: {path}: {error}")
    for kind, n in sorted(summary["skipped_by_reason"].items()):
        lines.append(f"skipped: {n} x {kind}")
    return "\n".join(lines)

