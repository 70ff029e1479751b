"""GPU proof in one call: every GPU claim of README.md measured by one prepared script (issue 17).

    python bench/gpu_check.py [--out DIR] [--budget 470] [--nrc-seconds 150] [--dry-run]
    make gpu-check

Each step runs in its own process group under its own time cap, and the whole run under
``--budget`` seconds (8 minutes at most on a bare CUDA machine, set-up included). After every step
``gpu_report.json`` is rewritten atomically (a run killed half-way still returns every finished
step) and ``gpu_report.md`` beside it gets the table for README's performance section.

Python: the first of this interpreter, ``.venv/bin/python`` and ``python3`` whose torch sees CUDA.
When none does, or the project's dependencies are missing, the wheels placed in ``wheels/`` (an
ignored folder of the checkout) that are not installed yet go into a private folder with
``pip install --no-index --no-deps --target`` (GPU machines often have no package index).

Before running anything, every step is resolved in one process: bench scripts are imported and
their own argparse parses the exact flags passed here (stopped right after parsing), the
measurements below check the project APIs they call, and pytest collects the GPU tests. Without
CUDA (or with --dry-run) that is all: every step is reported as skipped.

What no bench script offers is measured by ``bench/gpu_measures.py`` through the project's public
APIs: NRC for a fixed wall clock on the synthetic world (held-out PSNR on whole held-out frames,
rays/s, 512x512 render ms, bf16 vs fp32 code agreement), Odin bf16 training losses, the environment.
bench/nrc.py is not called: its own fit cannot be shared with the bf16 agreement, and two fits do not fit
in the budget.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

THIS = Path(__file__).resolve()
REPO = THIS.parents[1]
sys.path.insert(0, str(REPO))
WHEELS = REPO / "wheels"
MEASURES = "bench/gpu_measures.py"


@dataclass
class Step:
    key: str
    title: str
    cap_s: float
    script: str | None = None  # repo-relative; None: pytest
    flags: list[str] = field(default_factory=list)
    status: str = "pending"
    reason: str = ""
    argv: list[str] = field(default_factory=list)
    seconds: float | None = None
    metrics: dict = field(default_factory=dict)
    output_tail: list[str] = field(default_factory=list)


def plan(nrc_seconds: float) -> list[Step]:
    return [
        Step("environment", "GPU, driver, torch/triton versions", 60, MEASURES, ["environment"]),
        Step("gpu-tests", "pytest -m gpu -x (Triton vs reference; tcnn if importable)", 150),
        Step("hashgrid", "hash grid M pts/s: reference, torch.compile, triton (+ block sweep)", 150,
             "bench/hashgrid.py", ["--sizes", "18", "21", "--sweep-block"]),
        Step("nrc", f"NRC gpu preset, synthetic world, {nrc_seconds:g} s of training", nrc_seconds + 120, MEASURES,
             ["nrc", "--seconds", f"{nrc_seconds:g}"]),
        Step("odin", "Odin 128 px: train samples/s, images/s (50 DDIM steps)", 120, "bench/odin.py",
             ["--device", "cuda"]),
        Step("odin-bf16", "Odin 128 px bf16 training losses finite", 90, MEASURES, ["odin-bf16"]),
        Step("viewer", "viewer frame ms (128 and 512 px)", 120, "bench/viewer.py"),
    ]


# ---------------------------------------------------------------- resolution (one process, no work done)

class _Parsed(BaseException):  # not an Exception: a bench's own `except Exception` must not swallow it
    """Raised by the patched parse_args once a bench script has parsed its flags: nothing runs."""


def resolve_script(script: str, flags: list[str]) -> str:
    """'' when ``script`` imports and its argparse accepts ``flags``; else the problem, one line."""
    path = REPO / script
    if not path.is_file():
        return f"{script} not found"
    if "parse_args(" not in path.read_text():
        return f"{script} has no argparse to check flags against"
    original, saved_path, saved_argv = argparse.ArgumentParser.parse_args, list(sys.path), sys.argv

    def parse_then_stop(self, args=None, namespace=None):
        original(self, args, namespace)
        raise _Parsed

    err = io.StringIO()
    argparse.ArgumentParser.parse_args = parse_then_stop
    sys.argv = [str(path), *flags]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            runpy.run_path(str(path), run_name="__main__")
        return f"{script} finished without parsing its arguments"
    except _Parsed:
        return ""
    except SystemExit:
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        return f"{script} rejects {' '.join(flags)}: {lines[-1] if lines else 'exit'}"
    except Exception as error:  # an import that fails is the answer
        return f"{script} does not import: {error!r}"[:300]
    finally:
        argparse.ArgumentParser.parse_args, sys.path[:], sys.argv = original, saved_path, saved_argv


def gpu_test_files() -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                  if re.search(r"pytest\.mark\.gpu\b", p.read_text()))


def pytest_argv() -> list[str]:
    return ["-m", "pytest", "-m", "gpu", "-x", "-q", "-p", "no:cacheprovider", *gpu_test_files()]


def resolve_gpu_tests() -> str:
    import pytest

    files = gpu_test_files()
    if not files:
        return "no test file marks a test with pytest.mark.gpu"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = pytest.main(["--collect-only", "-q", "-m", "gpu", "-p", "no:cacheprovider", "--rootdir", str(REPO),
                            *[str(REPO / f) for f in files]])
    n = sum("::" in line for line in out.getvalue().splitlines())
    return "" if code == 0 and n else f"pytest collected {n} GPU tests (exit {int(code)})"


def resolve_all(steps: list[Step]) -> dict[str, str]:
    """step key -> '' (resolvable) or the problem."""
    problems = {}
    for step in steps:
        try:
            problems[step.key] = resolve_script(step.script, step.flags) if step.script else resolve_gpu_tests()
            if step.script == MEASURES and not problems[step.key]:
                spec = importlib.util.spec_from_file_location("gpu_measures", REPO / MEASURES)
                module = sys.modules["gpu_measures"] = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                module.resolve(step.flags[0])
        except Exception as error:
            problems[step.key] = f"{type(error).__name__}: {error}"[:300]
    return problems


# ---------------------------------------------------------------- running steps and reporting

def run_capped(argv: list[str], timeout: float, log: Path, env: dict) -> tuple[int | None, float]:
    """(exit code or None on timeout, seconds). Its own process group, killed whole at the cap."""
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    return code, time.perf_counter() - start


def tagged_result(text: str) -> dict:
    """The last ``GPU_CHECK_RESULT {json}`` line that bench/gpu_measures.py printed."""
    lines = [ln for ln in text.splitlines() if ln.startswith("GPU_CHECK_RESULT ")]
    return json.loads(lines[-1].split(" ", 1)[1]) if lines else {}


def parse_metrics(step: Step, text: str) -> dict:
    """What a step measured, from its output (bench scripts print lines; measurements here a tagged JSON)."""
    if step.script == MEASURES:
        return tagged_result(text)
    if step.key == "gpu-tests":
        found = re.findall(r"^=*\s*(\d+ (?:passed|failed|skipped|deselected|errors?)\b.*?)(?: in [\d.]+s)?\s*=*$", text, re.M)
        return {"summary": found[-1]} if found else {}
    if step.key == "hashgrid":
        jsons = [ln for ln in text.splitlines() if ln.startswith("{")]
        return json.loads(jsons[-1]) if jsons else {}
    if step.key == "odin":
        train = re.findall(r"training\s+([\d.]+) samples/s\s+\(batch (\d+), (\w+)\)", text)
        gen = re.findall(r"generation\s+([\d.]+) images/s\s+\(batch (\d+), (\w+)\)", text)
        out = {f"train_samples_per_s_{p}": float(r) for r, _, p in train}
        out.update({f"images_per_s_{p}": float(r) for r, _, p in gen})
        return out
    if step.key == "viewer":
        return {f"{label} {size}px {where}": float(ms) for label, size, where, ms in
                re.findall(r"viewer (baked preview|full field) (\d+)x\d+ on (.+?): (\d+) ms", text)}
    return {}


def readme_rows(steps: list[Step]) -> list[tuple[str, str, str]]:
    """(what, measured, goal) for README's performance table, from whatever was measured."""
    m = defaultdict(dict, {s.key: s.metrics for s in steps})
    rows = []
    for name in ("triton fp16", "triton fp32", "compiled", "reference"):
        for kind in ("uniform", "rays"):
            r = m["hashgrid"].get(f"{name} N=2^21 {kind}")
            if r:
                ratio = m["hashgrid"].get(f"{name} / compiled N=2^21 {kind}")
                extra = f" ({ratio['fwd']}x / {ratio['fwdbwd']}x compiled)" if ratio else ""
                rows.append((f"hash grid {name}, 2^21 {kind} points, 16x2, T=2^19",
                             f"fwd {r['fwd']:.0f} M pts/s, fwd+bwd {r['fwdbwd']:.0f} M pts/s{extra}",
                             "fwd >= 1200, fwd+bwd >= 600 M pts/s" if name.startswith("triton") else "—"))
    n = m["nrc"]
    if "heldout_psnr" in n:
        rows += [(f"NRC gpu preset, synthetic world {n['world']}, {n['train_seconds']:g} s ({n['steps']} steps)",
                  f"held-out PSNR {n['heldout_psnr']:.2f} dB vs constant colour {n['baseline_psnr']:.2f} dB, "
                  f"SSIM {n['heldout_ssim']:.3f}; {n['rays_per_s'] or 0:,.0f} rays/s", ">= 28 dB in 5 min"),
                 (f"NRC render, {n['render_px']}x{n['render_px']}", f"{n['render_ms']:.1f} ms", "<= 50 ms at 512"),
                 ("NRC bf16 vs fp32, held-out views", f"code agreement {100 * n['bf16_fp32_code_agreement']:.2f}%, "
                  f"bf16 render vs fp32 render {n['bf16_vs_fp32_render_psnr']:.1f} dB PSNR", "—")]
    o = m["odin"]
    if o:
        rows.append(("Odin 128 px (`bench/odin.py`)", ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in o.items()), "—"))
    b = m["odin-bf16"]
    if b:
        rows.append(("Odin bf16 training, 128 px, batch 16", f"{b['steps']} steps, losses finite: {b['bf16_losses_finite']} "
                     f"({b['first_loss']:.4f} -> {b['last_loss']:.4f})", "finite"))
    rows += [(f"viewer {k}", f"{v:.0f} ms", "<= 50 ms" if "512" in k else "<= 300 ms")
             for k, v in m["viewer"].items() if "CPU" not in k]
    if m["gpu-tests"]:
        rows.append(("GPU tests (`pytest -m gpu`)", m["gpu-tests"]["summary"], "all pass"))
    return rows


def write_report(out: Path, steps: list[Step], header: dict) -> None:
    from ingest.atomic import atomic_write_json, atomic_write_text

    atomic_write_json(out / "gpu_report.json", {**header, "steps": [asdict(s) for s in steps]})
    env = next((s.metrics for s in steps if s.key == "environment"), {})
    gpu = env.get("gpu") or "no GPU"
    lines = [f"# GPU check: {gpu}", "", f"driver {env.get('driver')}, torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), "
             f"triton {env.get('triton')}; {header['started']}", "",
             "| step | status | seconds (cap) | note |", "|---|---|---|---|"]
    lines += [f"| {s.key}: {s.title} | {s.status} | {'' if s.seconds is None else f'{s.seconds:.0f}'} ({s.cap_s:.0f}) "
              f"| {s.reason} |" for s in steps]
    lines += ["", f"| what | where | measured | goal |", "|---|---|---|---|"]
    try:
        lines += [f"| {what} | {gpu} | {measured} | {goal} |" for what, measured, goal in readme_rows(steps)]
    except (KeyError, TypeError, ValueError) as error:  # a format change must not cost the JSON report
        lines.append(f"(table incomplete: {error!r}; the numbers are in gpu_report.json)")
    atomic_write_text(out / "gpu_report.md", "\n".join(lines) + "\n")


def prepare_python(candidates: list[str], log_dir: Path, install: bool) -> tuple[str, dict, dict]:
    """(python, its environment probe, env for steps). Installs missing wheels from wheels/ if asked."""
    wheels = sorted(WHEELS.glob("*.whl")) if WHEELS.is_dir() else []
    dists = sorted({w.name.split("-")[0].lower().replace("_", "-") for w in wheels} | {"torch", "triton", "odin360"})
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}

    def probe(python: str) -> dict:
        log = log_dir / "probe.log"
        code, _ = run_capped([python, str(REPO / MEASURES), "environment", "--dists", ",".join(dists)], 90, log, env)
        return tagged_result(log.read_text()) if code == 0 else {}

    probes = []
    for python in candidates:  # stop at the first whose torch sees CUDA
        probes.append((python, probe(python)))
        if probes[-1][1].get("cuda"):
            break
    usable = [(p, info) for p, info in probes if info.get("torch")]
    if not usable:
        return candidates[0], {"python": candidates[0], "cuda": False, "torch": None}, env
    python, info = next(((p, i) for p, i in usable if i.get("cuda")), usable[0])
    if not install:
        return python, info, env
    site = Path(tempfile.gettempdir()) / "odin360_gpu_site"
    picks = [w for w in wheels if w.name.split("-")[0].lower().replace("_", "-") not in info["installed"]
             or (not info.get("cuda") and w.name.lower().startswith(("torch-", "triton-")))]
    if picks:
        print(f"gpu_check: installing {len(picks)} wheels from wheels/ into {site}", flush=True)
        run_capped([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--upgrade",
                    "--target", str(site), *map(str, picks)], 180, log_dir / "pip.log", env)
    if picks or "odin360" not in info["installed"]:
        env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)])
        if "odin360" not in info["installed"]:  # entry points of `odin` subcommands, without installing the package
            site.mkdir(parents=True, exist_ok=True)
            run_capped([python, "-c", "from setuptools import setup; setup()", "egg_info", "--egg-base", str(site)], 60,
                       log_dir / "egg_info.log", env)
        info = probe(python) or info
    return python, info, env


def run_steps(steps: list[Step], out: Path, header: dict, env: dict, deadline: float, skip_reason: str | None) -> None:
    """Run (or skip, with ``skip_reason``) each resolved step within its cap and before ``deadline``
    (a perf_counter time); the report is rewritten after every step."""
    log_dir = out / "gpu_check_logs"
    for i, step in enumerate(steps, 1):
        left = deadline - time.perf_counter()
        if step.status == "unresolved":
            pass
        elif skip_reason or left < 15:
            step.status, step.reason = "skipped", skip_reason or "total budget spent"
        else:
            log = log_dir / f"{step.key}.log"
            code, step.seconds = run_capped(step.argv, min(step.cap_s, left), log, env)
            text = log.read_text(errors="replace")
            step.output_tail = text.splitlines()[-40:]
            with contextlib.suppress(ValueError, KeyError, IndexError):
                step.metrics = parse_metrics(step, text) or step.metrics
            step.status = "ok" if code == 0 else "timeout" if code is None else "failed"
            step.reason = "" if code == 0 else f"exit {code}" if code is not None else f"time cap {min(step.cap_s, left):.0f} s"
        took = "" if step.seconds is None else f" in {step.seconds:.0f} s"
        print(f"[{i}/{len(steps)}] {step.key}: {step.status}{f' ({step.reason})' if step.reason else ''}{took}", flush=True)
        write_report(out, steps, header)


def summary_line(steps: list[Step], skip_reason: str | None, report: str) -> str:
    count = {s: sum(step.status == s for step in steps) for s in ("ok", "failed", "timeout", "skipped", "unresolved")}
    ran = count["ok"] + count["failed"] + count["timeout"]
    bad = f" ({count['failed']} failed, {count['timeout']} timed out)" if count["failed"] + count["timeout"] else ""
    why = f" ({skip_reason or 'total budget spent'})" if count["skipped"] else ""
    unresolved = f", {count['unresolved']} unresolved" if count["unresolved"] else ""
    return f"gpu_check: {len(steps)} steps, {ran} run{bad}, {count['skipped']} skipped{why}{unresolved} -> {report}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".", help="folder for gpu_report.json / .md and the step logs (default: here)")
    ap.add_argument("--budget", type=float, default=470.0, help="seconds for the whole run, set-up included")
    ap.add_argument("--nrc-seconds", type=float, default=150.0, help="NRC training wall clock")
    ap.add_argument("--dry-run", action="store_true", help="resolve every step, run none")
    ap.add_argument("--resolve", metavar="JSON", help=argparse.SUPPRESS)  # internal: the resolver process
    args = ap.parse_args()
    deadline = time.perf_counter() + args.budget
    steps = plan(args.nrc_seconds)
    if args.resolve:
        Path(args.resolve).write_text(json.dumps(resolve_all(steps)))
        return 0

    out = Path(args.out).resolve()
    log_dir = out / "gpu_check_logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    candidates = list(dict.fromkeys(p for p in (sys.executable, str(REPO / ".venv/bin/python"), shutil.which("python3"))
                                    if p and Path(p).exists()))
    python, probe, env = prepare_python(candidates, log_dir, install=not args.dry_run)
    skip_reason = "no CUDA" if not probe.get("cuda") else "dry run" if args.dry_run else None
    header = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "mode": "run" if skip_reason is None else "dry-run",
              "python": python, "budget_s": args.budget, "probe": probe}
    steps[0].metrics = probe
    resolved = log_dir / "resolve.json"
    code, _ = run_capped([python, str(THIS), "--resolve", str(resolved), "--nrc-seconds", f"{args.nrc_seconds:g}"],
                         300, log_dir / "resolve.log", env)
    problems = json.loads(resolved.read_text()) if code == 0 and resolved.exists() else {
        s.key: f"resolver failed (exit {code}); see {log_dir / 'resolve.log'}" for s in steps}
    for step in steps:
        step.argv = [python, *([step.script, *step.flags] if step.script else pytest_argv())]
        if problems.get(step.key):
            step.status, step.reason = "unresolved", problems[step.key]
            print(f"gpu_check: {step.key}: {step.reason}", file=sys.stderr)
    write_report(out, steps, header)
    run_steps(steps, out, header, env, deadline, skip_reason)
    print(summary_line(steps, skip_reason, "gpu_report.json" if args.out == "." else str(Path(args.out) / "gpu_report.json")))
    return 0 if all(s.status in ("ok", "skipped") for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
