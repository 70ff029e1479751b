"""bench/gpu_check.py without a GPU: the dry run resolves every step, and the runner caps and reports
each step as it finishes (exercised with plain Python commands standing in for the GPU steps)."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check():
    return _load("gpu_check")


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.slow
def test_dry_run_without_cuda_resolves_every_step(tmp_path):
    if _has_cuda():
        pytest.skip("this machine has CUDA: the no-CUDA last line does not apply")
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "gpu_report.json").read_text())
    n = len(report["steps"])
    assert proc.stdout.splitlines()[-1] == f"gpu_check: {n} steps, 0 run, {n} skipped (no CUDA) -> gpu_report.json"
    assert n >= 7 and {s["status"] for s in report["steps"]} == {"skipped"}
    assert {s["reason"] for s in report["steps"]} == {"no CUDA"}
    assert {"gpu-tests", "hashgrid", "nrc", "odin", "odin-bf16", "viewer", "environment"} <= {s["key"] for s in report["steps"]}
    assert report["probe"]["cuda"] is False and report["probe"]["torch"]
    table = (tmp_path / "gpu_report.md").read_text()
    assert table.count("| skipped |") == n and "| what | where | measured | goal |" in table


def test_resolver_refuses_flags_scripts_and_apis_that_would_not_run(gpu_check, monkeypatch):
    assert gpu_check.resolve_script("bench/gpu_measures.py", ["nrc", "--seconds", "150"]) == ""
    bad_flag = gpu_check.resolve_script("bench/gpu_measures.py", ["nrc", "--no-such-flag"])
    assert bad_flag.startswith("bench/gpu_measures.py rejects") and "--no-such-flag" in bad_flag
    assert "invalid float value" in gpu_check.resolve_script("bench/gpu_measures.py", ["nrc", "--seconds", "x"])
    assert gpu_check.resolve_script("bench/no_such_bench.py", []) == "bench/no_such_bench.py not found"
    assert "no argparse" in gpu_check.resolve_script("bench/synth.py", [])

    measures = _load("gpu_measures")
    measures.resolve("nrc")
    import nrc.trainer

    monkeypatch.setattr(nrc.trainer, "fit", lambda scene_paths, run_dir, config, *, device="cpu": None)
    with pytest.raises(TypeError, match="max_seconds"):
        measures.resolve("nrc")


def test_gpu_tests_step_selects_the_marked_files(gpu_check):
    files = gpu_check.gpu_test_files()
    assert "tests/test_hashgrid_triton.py" in files and "tests/test_gpu_check.py" not in files
    assert gpu_check.pytest_argv()[:4] == ["-m", "pytest", "-m", "gpu"]


def _step(gpu_check, key, code: str, cap: float = 60, script=None):
    step = gpu_check.Step(key, key, cap, script)
    step.argv = [sys.executable, "-c", code]
    return step


def test_steps_are_capped_and_reported_as_each_finishes(gpu_check, tmp_path):
    (tmp_path / "gpu_check_logs").mkdir()
    pid_file = tmp_path / "grandchild.pid"
    sleeper = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
               f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(120)")
    reader = (f"import json; r = json.load(open({str(tmp_path / 'gpu_report.json')!r})); "
              "print('GPU_CHECK_RESULT ' + json.dumps({'seen': [s['status'] for s in r['steps']]}))")
    steps = [_step(gpu_check, "first", "print('hello')"), _step(gpu_check, "slow", sleeper, cap=3),
             _step(gpu_check, "reader", reader, script=gpu_check.MEASURES), _step(gpu_check, "broken", "raise SystemExit(3)")]
    start = time.perf_counter()
    gpu_check.run_steps(steps, tmp_path, {"started": "now"}, dict(os.environ), start + 120, None)
    assert time.perf_counter() - start < 60
    assert [s.status for s in steps] == ["ok", "timeout", "ok", "failed"]
    assert steps[0].output_tail == ["hello"] and steps[3].reason == "exit 3"
    # The report on disk already held the finished steps when the third one started.
    assert steps[2].metrics == {"seen": ["ok", "timeout", "pending", "pending"]}
    # The cap kills the whole process group, grandchildren too.
    pid = int(pid_file.read_text())
    time.sleep(0.5)
    status = Path(f"/proc/{pid}/status")
    assert not status.exists() or "zombie" in status.read_text()
    on_disk = json.loads((tmp_path / "gpu_report.json").read_text())
    assert [s["status"] for s in on_disk["steps"]] == ["ok", "timeout", "ok", "failed"]
    assert gpu_check.summary_line(steps, None, "gpu_report.json") == (
        "gpu_check: 4 steps, 4 run (1 failed, 1 timed out), 0 skipped -> gpu_report.json")

    late = [_step(gpu_check, "late", "print(1)")]
    gpu_check.run_steps(late, tmp_path, {"started": "now"}, dict(os.environ), time.perf_counter() + 5, None)
    assert (late[0].status, late[0].reason) == ("skipped", "total budget spent")


def test_environment_measure_runs_without_cuda():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_measures.py"), "environment", "--dists", "torch,numpy"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("GPU_CHECK_RESULT ")
    info = json.loads(line.split(" ", 1)[1])
    import torch

    assert info["torch"] == torch.__version__ and info["cuda"] == torch.cuda.is_available()
    assert set(info["installed"]) == {"torch", "numpy"}
