"""Issue 18, item 2: every subcommand on the bad inputs users produce exits 2 with one line that names
the file or flag, prints no traceback and leaves what existed before byte-identical (tests/bad_inputs.py)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.bad_inputs import CASES, ONE_LINE, Fixtures, argv_of, problems, run_case


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return Fixtures(tmp_path_factory.mktemp("bad_inputs"))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_gives_one_line(case, fx, tmp_path):
    if case.needs is not None and not case.needs():
        pytest.skip("does not apply on this machine")
    outcome = run_case(case, tmp_path, fx)
    assert problems(case, outcome, tmp_path, fx) == [], "\n".join(outcome.lines[-8:])


# In a real process, where C libraries' stderr, logging's last-resort handler and interpreter
# shutdown all show: one line each, no traceback, and no hang after the error (`view --port`).
_IN_A_PROCESS = ("view --port 70000", "ingest --mask corrupt", "nrc render cp_scaled")


def test_one_line_in_a_real_process(fx, tmp_path):
    by_name = {c.name: c for c in CASES}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = {}
    for i, name in enumerate(_IN_A_PROCESS):  # together: each is mostly imports
        (tmp_path / str(i)).mkdir()
        argv = argv_of(by_name[name], tmp_path / str(i), fx)
        procs[name] = subprocess.Popen([sys.executable, "-m", "ingest.cli", *argv], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True, env=env)
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and ONE_LINE.match(lines[0]), (name, err[-2000:])
