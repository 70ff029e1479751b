"""kill -9 at chosen moments of the five long commands, then the same command again (issue 18,
item 3). Shared by tests/test_crash_safety.py (a few kills) and bench/abuse.py (many)::

    inputs = build_inputs(root)                        # tiny world, videos, dataset, pairs (once)
    jobs = make_jobs(inputs)                           # name -> Job, for ingest mine reconstruct nrc train
    run_to_end(job, root / "ref")                      # the uninterrupted reference
    outcome = kill_and_resume(job, root / "k", Moment("write", nth=2), reference=root / "ref")
    outcome.problems()                                 # [] when the resumed output is the reference's

A "write" moment stops the command (SIGSTOP) when the n-th temporary file of an atomic write or
checkpoint appears in its output, tries a second writer on the same output (it must be refused
with one line), then kills it (SIGKILL): a kill during a write. A "random" moment kills it after
``seconds``. The command then runs again to the end, in a fresh process.
"""
from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ingest.runlock import LOCK_NAME, ORPHAN_PATTERNS

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}  # float sums depend on the thread count


def odin_inprocess(argv: list[str]) -> tuple[int, str]:
    """(exit code, stderr) of ``odin ARGV`` in this process (stdout discarded)."""
    from ingest.cli import main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, err.getvalue()


def _odin(*argv) -> None:
    code, err = odin_inprocess(list(argv))
    if code != 0:
        raise RuntimeError(f"`odin {' '.join(map(str, argv))}` failed ({code}): {err[-2000:]}")


@dataclass
class Inputs:
    world: Path  # synthetic world (512x256, 8 frames)
    videos: Path  # three copies of its video
    dataset: Path  # the world's video ingested at 512
    pairs: Path  # mined from the dataset
    video_id: str
    train_config: Path  # tiny Odin config: a checkpoint every 2 steps, 6 steps


def build_inputs(root: str | Path) -> Inputs:
    """The smallest inputs every command still works on (about 20 s on 2 busy cores)."""
    from odin.config import tiny_config

    root = Path(root)
    world = root / "world"
    _odin("synth", "--out", world, "--seconds", "2", "--fps", "4", "--width", "512")
    videos = root / "videos"
    videos.mkdir(exist_ok=True)
    for k in range(3):
        shutil.copy(world / "video.mp4", videos / f"clip_{k}.mp4")
    dataset = root / "dataset"
    _odin("ingest", world / "video.mp4", "--out", dataset, "--fps", "0", "--equirect-width", "512", "--views", "4",
          "--view-size", "64", "--no-progress")
    pairs = dataset / "pairs"
    _odin("mine", dataset, "--out", pairs, "--window", "2", "--analysis-width", "512")
    cfg = tiny_config(32)
    cfg.data.shuffle_buffer = 8
    for key, value in {"max_steps": 6, "checkpoint_every": 2, "sample_every": 0, "keep_checkpoints": 50,
                       "log_every": 1}.items():
        setattr(cfg.train, key, value)
    train_config = root / "odin_tiny.json"
    train_config.write_text(json.dumps(cfg.to_dict()))
    video_id = next((dataset / "parts").glob("*/*")).name
    return Inputs(world, videos, dataset, pairs, video_id, train_config)


# ------------------------------------------------------------------------------ what must match
def _sha(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:16]


def _rows(path: Path, key: str, drop=("seconds",)) -> list[dict]:
    import pyarrow.parquet as pq

    rows = [{k: v for k, v in r.items() if k not in drop} for r in pq.read_table(path).to_pylist()]
    return sorted(rows, key=lambda r: str(r[key]))


def _json(path: Path, drop=()) -> dict:
    d = json.loads(path.read_text())
    return {k: v for k, v in d.items() if k not in drop}


def _files(root: Path, skip: Callable[[Path], bool] = lambda p: False) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): _sha(p) for p in sorted(root.rglob("*"))
            if p.is_file() and not skip(p) and p.name != LOCK_NAME}


def ingest_digest(out: Path) -> dict:
    """Manifests (rows; run timings aside), every part file, each record without its timing."""
    records = {p.parent.name: {**_json(p), "video": _json(p)["video"] | {"seconds": None}}
               for p in (out / "parts").glob("*/*/record.json")}
    return {"videos": _rows(out / "videos.parquet", "video_id"), "frames": _rows(out / "frames.parquet", "frame_id"),
            "views": _rows(out / "views.parquet", "view_id"), "records": records,
            "files": _files(out / "parts", lambda p: p.name == "record.json"), "config": _json(out / "ingest_config.json")}


def mine_digest(out: Path) -> dict:
    """The pair table, the shards and per-video parts byte for byte, summaries without timings."""
    return {"pairs": _rows(out / "pairs.parquet", "pair_id"), "files": _files(out, lambda p: "summaries" in p.parts),
            "summaries": {p.name: _json(p, ("seconds",)) for p in sorted((out / "summaries").glob("*.json"))}}


def nrc_digest(out: Path) -> dict:
    """Weights, optimizer moments and occupancy byte for byte, the step, the logged steps and losses."""
    from safetensors import safe_open

    with safe_open(str(out / "checkpoint.safetensors"), "pt") as f:
        meta = f.metadata()
        tensors = {k: hashlib.sha1(f.get_tensor(k).numpy().tobytes()).hexdigest()[:16] for k in f.keys()}
    history = [(h["step"], h["loss"]) for h in json.loads(meta["history"])]
    return {"step": int(meta["step"]), "tensors": tensors, "history": history, "config": _json(out / "config.json")}


def train_digest(out: Path) -> dict:
    """Every checkpoint (weights, EMA, optimizer, stream position), the pipeline, the log's steps
    and losses, and TensorBoard's points: each step once."""
    from odin.events import logged_steps

    ckpts = out / "checkpoints"
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return {"latest": _json(ckpts / "latest.json"), "checkpoints": _files(ckpts, lambda p: p.name == "latest.json"),
            "pipeline": _files(out / "pipeline"), "log": [(r["step"], r["loss"]) for r in log],
            "tensorboard": logged_steps(out / "tensorboard")}


def _aligned_gap(A: np.ndarray, B: np.ndarray) -> tuple[float, float]:
    """(largest camera-centre gap as a fraction of the path's extent, largest rotation gap in
    degrees) between two sets of c2w after the similarity that best maps B's centres onto A's
    (SfM fixes neither the frame nor the scale)."""
    ca, cb = A[:, :3, 3], B[:, :3, 3]
    xa, xb = ca - ca.mean(0), cb - cb.mean(0)
    U, S, Vt = np.linalg.svd(xb.T @ xa)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = (U @ D @ Vt).T
    scale = (S * np.diag(D)).sum() / max((xb ** 2).sum(), 1e-12)
    pos = np.linalg.norm(scale * xb @ R.T - xa, axis=1).max() / max(np.linalg.norm(xa, axis=1).max(), 1e-12)
    cos = [(np.trace(a[:3, :3].T @ R @ b[:3, :3]) - 1) / 2 for a, b in zip(A, B)]
    return float(pos), float(np.degrees(np.arccos(np.clip(min(cos), -1, 1))))


def reconstruct_compare(ref: Path, out: Path) -> list[str]:
    """pycolmap's threads make SfM differ run to run, and its frame and scale are arbitrary
    (measured between uninterrupted runs: raw poses up to 0.26 apart; after a similarity
    alignment below 2e-4 of the path and 0.02 degrees). So: the same frames registered, the same
    views, and aligned poses within 1 % of the path and 0.5 degrees."""
    a, b = (_json(p / "transforms.json") for p in (ref, out))
    problems = []
    if [f["file_path"] for f in a["frames"]] != [f["file_path"] for f in b["frames"]]:
        problems.append("transforms.json: other frames or views")
    else:
        pos, rot = _aligned_gap(*(np.array([f["transform_matrix"] for f in t["frames"]]) for t in (a, b)))
        if pos > 0.01 or rot > 0.5:
            problems.append(f"transforms.json: aligned poses differ by {100 * pos:.2f} % of the path, {rot:.2f} deg")
    ra, rb = (_json(p / "report.json") for p in (ref, out))
    if [r["registered"] for r in ra["frames_report"]] != [r["registered"] for r in rb["frames_report"]]:
        problems.append("report.json: other frames registered")
    if _json(ref / "reconstruct_config.json") != _json(out / "reconstruct_config.json"):
        problems.append("reconstruct_config.json differs")
    return problems


def differences(a, b, prefix: str = "") -> list[str]:
    """Dotted names where two digests differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


@dataclass
class Job:
    name: str
    argv: list[str]  # "{out}" stands for the output folder
    digest: Callable[[Path], dict] | None = None
    compare: Callable[[Path, Path], list[str]] | None = None

    def command(self, out: Path) -> list[str]:
        return [a.replace("{out}", str(out)) for a in self.argv]

    def problems(self, reference: Path, out: Path) -> list[str]:
        if self.compare is not None:
            return self.compare(reference, out)
        return differences(self.digest(reference), self.digest(out))


def make_jobs(inp: Inputs) -> dict[str, Job]:
    jobs = [
        Job("ingest", ["ingest", str(inp.videos), "--out", "{out}", "--fps", "0", "--equirect-width", "128",
                       "--views", "4", "--view-size", "32", "--no-progress"], ingest_digest),
        Job("mine", ["mine", str(inp.dataset), "--out", "{out}", "--window", "2", "--analysis-width", "512"],
            mine_digest),
        Job("reconstruct", ["reconstruct", str(inp.dataset), "--video", inp.video_id, "--out", "{out}",
                            "--max-frames", "8", "--pairs", str(inp.pairs)], compare=reconstruct_compare),
        Job("nrc fit", ["nrc", "fit", str(inp.world), "--out", "{out}", "--preset", "tiny", "--steps", "20",
                        "--batch-rays", "256", "--height", "32", "--save-every", "5", "--seconds", "0",
                        "--device", "cpu"], nrc_digest),
        Job("train", ["train", str(inp.pairs), "--out", "{out}", "--config", str(inp.train_config), "--quiet"],
            train_digest),
    ]
    return {j.name: j for j in jobs}


# ------------------------------------------------------------------------------ running and killing
def _spawn(job: Job, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ingest.cli", *job.command(out)], cwd=REPO, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def run_to_end(job: Job, out: Path, inprocess: bool = False) -> tuple[int, str]:
    """(exit code, stderr) of the job run to its end, in this process or a fresh one."""
    if inprocess:
        return odin_inprocess(job.command(out))
    proc = _spawn(job, out)
    _, err = proc.communicate(timeout=600)
    return proc.returncode, err.decode(errors="replace")


def leftovers(out: Path) -> list[str]:
    """Temporary files of atomic writes and lock files anywhere under ``out``."""
    found = []
    for folder, dirs, files in os.walk(out):  # os.walk skips what vanishes under it: the command runs on
        for name in dirs + files:
            if name == LOCK_NAME or any(fnmatch.fnmatchcase(name, pat) for pat in ORPHAN_PATTERNS):
                found.append(Path(folder, name).relative_to(out).as_posix())
    return sorted(found)


@dataclass(frozen=True)
class Moment:
    kind: str  # "write": when the nth temporary file appears; "random": after `seconds`
    nth: int = 1
    seconds: float = 0.0

    def __str__(self) -> str:
        return f"temporary file #{self.nth}" if self.kind == "write" else f"{self.seconds:.2f} s"


@dataclass
class Outcome:
    job: str
    moment: str
    killed: bool = False  # False: the command ended before the moment came
    at: str = ""  # what was being written when it was killed
    orphans_after_kill: list[str] = field(default_factory=list)
    second_writer: str | None = None  # the refused second writer's stderr ("write" moments)
    resume_code: int | None = None
    resume_error: str = ""
    diffs: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # left after the re-run: must be none
    seconds: float = 0.0

    def problems(self) -> list[str]:
        out = []
        if self.resume_code != 0:
            out.append(f"re-run exited {self.resume_code}: {self.resume_error.strip()[-300:]}")
        out += [f"differs: {d}" for d in self.diffs[:8]] + [f"left behind: {o}" for o in self.orphans[:8]]
        if self.second_writer is not None:
            lines = self.second_writer.strip().splitlines()
            if len(lines) != 1 or "another odin process" not in lines[0]:
                out.append(f"second writer not refused in one line: {self.second_writer.strip()[-300:]!r}")
        return out


def _wait_for_temp(proc: subprocess.Popen, out: Path, nth: int, deadline: float) -> str | None:
    seen: list[str] = []
    while time.monotonic() < deadline and proc.poll() is None:
        for name in leftovers(out):
            if not name.endswith(LOCK_NAME) and name not in seen:
                seen.append(name)
                if len(seen) >= nth:
                    return name
        time.sleep(0.002)
    return None


def kill_and_resume(job: Job, out: Path, moment: Moment, reference: Path, second_writer: bool = True,
                    resume_inprocess: bool = False, timeout: float = 300) -> Outcome:
    """Run ``job`` into ``out``, kill -9 it at ``moment``, run it again to the end and compare
    with ``reference`` (an uninterrupted run's output)."""
    start = time.monotonic()
    outcome = Outcome(job.name, str(moment))
    proc = _spawn(job, out)
    try:
        if moment.kind == "write":
            outcome.at = _wait_for_temp(proc, out, moment.nth, start + timeout) or ""
            if outcome.at and proc.poll() is None:
                proc.send_signal(signal.SIGSTOP)  # frozen mid-write, holding the lock
                if second_writer:
                    outcome.second_writer = odin_inprocess(job.command(out))[1]
        else:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=moment.seconds)
        outcome.killed = proc.poll() is None
        if outcome.killed:
            proc.kill()
    finally:
        proc.wait()
        proc.stderr.close()
    outcome.orphans_after_kill = [o for o in leftovers(out) if not o.endswith(LOCK_NAME)]
    outcome.resume_code, outcome.resume_error = run_to_end(job, out, inprocess=resume_inprocess)
    if outcome.resume_code == 0:
        outcome.diffs = job.problems(reference, out)
    outcome.orphans = leftovers(out)
    outcome.seconds = time.monotonic() - start
    return outcome
