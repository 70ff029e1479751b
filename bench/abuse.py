"""Issue 18's abuse benchmark: what a careless user, a crash and a hostile web page do to Odin360.

1. Bad inputs: every case of tests/bad_inputs.py (``run_all``): the bad inputs users produce, each
   must exit 2 with one line naming the file or flag; a case with any problem counts "not one-line".
2. Kills: tests/crash_harness.py kills each long command (ingest, mine, reconstruct, nrc fit,
   train) with SIGKILL at ``--kills`` moments: every other one when a temporary file of an atomic
   write or checkpoint appears (there a second writer must be refused in one line first), the
   others at a random time. The command is run again to its end; "diverged" counts kills whose
   re-run failed, gave outputs that differ from an uninterrupted run's, or left temporary files
   or a lock behind, and those whose second writer was not refused. A moment that came after the
   command had finished is no kill and is not counted.
3. Viewer (run first, so that the RSS is the server's and not the other parts' leftovers): 20
   scripted tabs (viewer/loadtest.py) on a tiny NRC run, 8 vanishing mid-render; errors = tabs
   that broke, staying tabs without a frame after the others left, and the page not served
   afterwards; max RSS of this process (server and tabs). Traversal: the client names of
   tests/test_viewer_security.py, each refused as a file name and as a path in the run.

    python bench/abuse.py [--kills 6] [--seed 0] [--out DIR]

Ends with (checked as written):
abuse: <n> bad inputs, <f> not one-line; <k> kills, <d> diverged; viewer <c> clients, <e> errors, max RSS <m> MB; traversal refused <t>/<t>
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout
os.environ.setdefault("OMP_NUM_THREADS", "2")  # before torch: the count crash_harness gives its processes


def bad_inputs(root: Path) -> tuple[int, int]:
    from tests.bad_inputs import run_all

    results = run_all(root)
    bad = [(case, found) for case, _, found in results if found]
    for case, found in bad:
        print(f"  bad input: {case.name}: {'; '.join(found)}")
    return len(results), len(bad)


def kills(root: Path, inputs, per_command: int, seed: int) -> tuple[int, int]:
    from tests.crash_harness import Moment, kill_and_resume, make_jobs, run_to_end

    rng = random.Random(seed)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "ingest.cli", "--help"], cwd=REPO, stdout=subprocess.DEVNULL, check=True)
    startup = time.monotonic() - started  # a killed run's imports: random moments start after them
    n_killed = n_diverged = 0
    for name, job in make_jobs(inputs).items():
        reference = root / "reference" / name.replace(" ", "_")
        started = time.monotonic()
        code, err = run_to_end(job, reference, inprocess=True)
        if code != 0:
            raise SystemExit(f"reference run of {name} failed: {err[-2000:]}")
        length = time.monotonic() - started
        for i in range(per_command):
            moment = (Moment("write", nth=rng.randint(1, 6)) if i % 2 == 0
                      else Moment("random", seconds=rng.uniform(0.8 * startup, startup + length)))
            out = root / "killed" / f"{name.replace(' ', '_')}_{i}"
            outcome = kill_and_resume(job, out, moment, reference, resume_inprocess=True)
            problems = outcome.problems()
            n_killed += outcome.killed
            n_diverged += outcome.killed and bool(problems)
            state = ("killed" if outcome.killed else "finished first") + (f" writing {outcome.at}" if outcome.at else "")
            state += f", {len(outcome.orphans_after_kill)} temporaries left" if outcome.killed else ""
            print(f"  kill {name} at {moment}: {state}; {'; '.join(problems) or 'resumed to the same result'} "
                  f"({outcome.seconds:.0f} s)", flush=True)
    return n_killed, n_diverged


def viewer(root: Path, world: Path) -> tuple[int, int, float, int, int]:
    from tests.crash_harness import odin_inprocess
    from tests.test_viewer_security import TRAVERSAL_NAMES
    from ingest.errors import OdinError
    from viewer.app import ViewerApp, ViewerLimits
    from viewer.files import UploadLimits, output_path, safe_name
    from viewer.loadtest import crowd

    run = root / "nrc_run"
    code, err = odin_inprocess(["nrc", "fit", world, "--out", run, "--preset", "tiny", "--steps", "1",
                                "--batch-rays", "256", "--height", "16", "--device", "cpu"])
    if code != 0:
        raise SystemExit(f"viewer run: {err[-2000:]}")
    refused = 0
    for name in TRAVERSAL_NAMES:
        outcomes = []
        for attempt in (lambda: safe_name(name, ".json"), lambda: output_path(run, name, ".json")):
            try:
                attempt()
                outcomes.append(False)
            except OdinError:
                outcomes.append(True)
        refused += all(outcomes)
    tabs, leaving = 20, 8
    app = ViewerApp(run, host="127.0.0.1", port=0, preview_height=16, full_height=32, preview_grid=16,
                    limits=ViewerLimits(upload=UploadLimits(max_bytes=1_000_000)))
    try:
        url = f"ws://127.0.0.1:{app.server.get_port()}{app.guard.url_path().rstrip('/')}"
        report = crowd(url, tabs=tabs, leaving=leaving, leave_after=4.0, seconds=10.0)
        errors = len(report.errors) + sum(k == 0 for k in report.frames_after_leave(leaving))
        try:
            with urllib.request.urlopen(app.url, timeout=10) as r:
                errors += r.status != 200
        except OSError:
            errors += 1
    finally:
        app.close()
    for e in report.errors:
        print(f"  viewer tab: {e}")
    return tabs, errors, report.peak_rss_mb, refused, len(TRAVERSAL_NAMES)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=6, help="kill moments per command")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="work folder (default: a temporary one)")
    args = parser.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="odin_abuse_"))
    started = time.monotonic()
    print(f"abuse bench in {root}", flush=True)
    from tests.crash_harness import build_inputs

    inputs = build_inputs(root / "inputs")
    t = time.monotonic()  # the viewer first: its RSS is then the server's, not the other parts' leftovers
    c, e, rss, refused, total = viewer(root / "viewer", inputs.world)
    print(f"viewer: {c} clients, {e} errors, peak RSS {rss:.0f} MB; traversal {refused}/{total} refused "
          f"({time.monotonic() - t:.0f} s)", flush=True)
    t = time.monotonic()
    n, f = bad_inputs(root / "bad_inputs")
    print(f"bad inputs: {n} cases, {f} with problems ({time.monotonic() - t:.0f} s)", flush=True)
    t = time.monotonic()
    k, d = kills(root / "kills", inputs, args.kills, args.seed)
    print(f"kills: {k} kills, {d} diverged ({time.monotonic() - t:.0f} s); total {time.monotonic() - started:.0f} s",
          flush=True)
    print(f"abuse: {n} bad inputs, {f} not one-line; {k} kills, {d} diverged; viewer {c} clients, {e} errors, "
          f"max RSS {rss:.0f} MB; traversal refused {refused}/{total}")


if __name__ == "__main__":
    main()
