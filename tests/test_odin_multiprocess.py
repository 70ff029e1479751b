"""Odin training on two processes (gloo, CPU): agreement with one process, stop at the time limit, resume.

The launcher is `accelerate launch --multi_gpu --num_processes 2`: on a machine without CUDA the
trainer asks accelerate for its CPU path, which joins the two processes in a gloo group
(`accelerate launch --cpu --num_processes N` starts one process unless given an MPI hostfile).
This file is also the script both processes run (see the ``__main__`` block).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

torch.set_num_threads(2)
pytestmark = pytest.mark.slow
ACCELERATE = Path(sys.executable).with_name("accelerate")


def _cfg(**train):
    from odin.config import tiny_config

    cfg = tiny_config(32)
    cfg.data.shuffle_buffer = 8
    for k, v in {"batch_size": 2, "max_steps": 6, "checkpoint_every": 1, "keep_checkpoints": 50, "sample_every": 0,
                 "log_every": 1, **train}.items():
        setattr(cfg.train, k, v)
    return cfg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(pairs, run, cfg, reports, wait: bool = True):
    config = Path(run).with_suffix(".json")
    config.write_text(json.dumps(cfg.to_dict()))
    cmd = [str(ACCELERATE), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           __file__, str(pairs), str(run), str(config), str(reports)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    log = Path(run).with_suffix(".log")
    with log.open("ab") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err)
    if wait:
        try:
            proc.wait(timeout=120)  # a hang (ranks out of step) ends here
        except subprocess.TimeoutExpired:
            _kill_tree(proc)
            pytest.fail("two-process training hung")
        assert proc.returncode == 0, log.read_text()[-3000:]
    return proc


def _reports(folder) -> list[dict]:
    return [json.loads((Path(folder) / f"rank{r}.json").read_text()) for r in range(2)]


def _losses(run) -> list[float]:
    return [json.loads(line)["loss"] for line in (Path(run) / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def pairs(tiny_world, tmp_path_factory):
    from correspondence.synthetic_pairs import synthetic_gt_pairs

    out = tmp_path_factory.mktemp("odin_mp") / "pairs"
    synthetic_gt_pairs(tiny_world, out, 48, view_size=32, seed=0, max_frame_gap=3)
    return out


def _kill_tree(proc) -> None:
    """SIGKILL the launcher and every process under it (torch's launcher starts workers in new sessions)."""
    import psutil

    procs = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=30)


def test_two_processes_match_one_stop_together_and_resume_after_kill(pairs, tmp_path):
    """Two processes with batch 2 are killed after a checkpoint, resumed with a time limit that is
    over after one step, and compared with one process with batch 4 run straight through."""
    from odin.trainer import train

    run, reports = tmp_path / "two", tmp_path / "reports"
    proc = _launch(pairs, run, _cfg(max_steps=10_000), reports, wait=False)
    pointer = run / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if pointer.exists() and json.loads(pointer.read_text())["step"] >= 3:
            break
        time.sleep(0.05)
    _kill_tree(proc)
    assert pointer.exists(), run.with_suffix(".log").read_text()[-3000:]
    assert not reports.exists()  # killed: no process got to the end
    resumed_from = json.loads(pointer.read_text())["step"]
    # Rank 0's clock alone decides: both ranks checkpoint and leave after the same (first) step.
    _launch(pairs, run, _cfg(max_steps=10_000, max_minutes=1e-6), reports)
    step = resumed_from + 1
    ranks = _reports(reports)
    assert [r["world"] for r in ranks] == [2, 2] and [r["step"] for r in ranks] == [step, step]
    assert ranks[0]["weights"] == ranks[1]["weights"]  # DDP kept the replicas identical

    # One process with the same global batch (2 x 2 = 4) draws the same samples and the same noise,
    # so the loss curve (killed run + resumed run) and the weights agree up to float rounding.
    # Within the first epoch only: N processes skip an epoch's last incomplete chunk of N samples.
    single = tmp_path / "single"
    train(pairs, single, _cfg(batch_size=4, max_steps=step), progress=False)
    two, one = _losses(run), _losses(single)
    assert json.loads((single / "checkpoints" / "latest.json").read_text())["step"] == step
    assert len(two) == len(one) == step and len(set(one)) == step  # the curve moves: not constants
    assert max(abs(a - b) / abs(b) for a, b in zip(two, one)) < 1e-3, (two, one)
    name = f"step_{step:08d}"
    for part in ("model", "ema"):
        a = load_file(run / "checkpoints" / name / f"{part}.safetensors")
        b = load_file(single / "checkpoints" / name / f"{part}.safetensors")
        worst = max(((a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-8)).item() for k in a)
        assert worst < 1e-3, (part, worst)


def _digest(model) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _main(pairs, run, config, reports) -> None:
    from odin.config import OdinConfig
    from odin.trainer import train

    def report(model, accel, step):
        Path(reports).mkdir(parents=True, exist_ok=True)
        (Path(reports) / f"rank{accel.process_index}.json").write_text(json.dumps(
            {"world": accel.num_processes, "step": step, "weights": _digest(model)}))

    train(pairs, run, OdinConfig.load(config), progress=False, on_finish=report)


if __name__ == "__main__":
    _main(*sys.argv[1:5])
