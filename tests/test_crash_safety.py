"""Crash safety of the five long commands (issue 18, item 3): kill -9 during a write, then the
same command again, gives the uninterrupted run's outputs and no temporary files; a second
writer is refused while the first holds the lock; folders made with other settings are refused;
outputs honour the umask; NRC runs store absolute scene paths and fit the same at 1 or 2 threads.

The harness (tests/crash_harness.py) is bench/abuse.py's too; there each command is killed at
many more moments.
"""
from __future__ import annotations

import json
import os

import pytest
import torch

from ingest.errors import OdinError
from tests.crash_harness import (Moment, build_inputs, kill_and_resume, leftovers, make_jobs, nrc_digest,
                                 odin_inprocess, run_to_end)

torch.set_num_threads(2)  # the killed subprocesses' count (crash_harness.ENV): Odin's float sums depend on it

# Which temporary file each command is killed at: one past the first, so that something was
# already committed (a part, a video's pairs, a checkpoint) and something was half-written.
MOMENTS = {"ingest": 3, "mine": 2, "reconstruct": 1, "nrc fit": 3, "train": 4}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return build_inputs(tmp_path_factory.mktemp("crash"))


@pytest.fixture(scope="module")
def jobs(inputs):
    return make_jobs(inputs)


@pytest.fixture(scope="module")
def references(jobs, inputs, tmp_path_factory):
    root = tmp_path_factory.mktemp("reference")
    outs = {"mine": inputs.pairs}  # mined by build_inputs with the job's own arguments
    for name, job in jobs.items():
        if name in outs:
            continue
        out = root / name.replace(" ", "_")
        code, err = run_to_end(job, out, inprocess=True)
        assert code == 0, err[-2000:]
        outs[name] = out
    return outs


@pytest.mark.parametrize("name", list(MOMENTS))
def test_kill_during_a_write_then_rerun_gives_the_uninterrupted_result(name, jobs, references, tmp_path):
    job = jobs[name]
    outcome = kill_and_resume(job, tmp_path / "out", Moment("write", nth=MOMENTS[name]), references[name],
                              resume_inprocess=True)
    assert outcome.killed, f"{name} finished before temporary file #{MOMENTS[name]} appeared"
    assert outcome.problems() == [], outcome
    # Stopped while a write was in progress (a small one may have finished between the sighting and
    # the SIGSTOP: outcome.orphans_after_kill is then empty; the planted orphans below cover cleaning).
    assert outcome.at, outcome


def test_orphans_of_killed_writers_are_cleaned_and_an_interrupted_swap_is_undone(references, jobs):
    run = references["train"]
    planted = [run / ".config.json.k3y.tmp.json", run / "checkpoints" / ".step_00000099.ab12",
               run / "tensorboard" / ".events.x.tmp"]
    for p in planted:
        p.mkdir() if p.name.startswith(".step_") else p.write_text("half")
    (run / "pipeline").rename(run / ".pipeline.old")  # killed between the two renames of a pipeline swap
    code, err = run_to_end(jobs["train"], run, inprocess=True)  # finished run: nothing to train, only to clean
    assert code == 0, err
    assert not any(p.exists() for p in planted) and (run / "pipeline" / "model_index.json").exists()
    assert leftovers(run) == []


def test_second_writer_is_refused_while_the_first_holds_the_lock(references, jobs):
    from ingest.runlock import run_lock

    run = references["nrc fit"]
    before = nrc_digest(run)
    with run_lock(run, "NRC run"):  # as a live `odin nrc fit` would hold it
        code, err = odin_inprocess(jobs["nrc fit"].command(run))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "another odin process" in err, err
    assert nrc_digest(run) == before and leftovers(run) == []


def test_a_finished_reconstruction_is_looked_at_under_its_lock(references, jobs):
    """`odin reconstruct` on a finished output: refused while another writer holds the folder (it
    may still be finishing), and the lock file of a writer killed after its last write is cleaned
    instead of left beside the result (bench/abuse.py caught both)."""
    from ingest.runlock import LOCK_NAME, run_lock

    out = references["reconstruct"]
    command = jobs["reconstruct"].command(out)
    with run_lock(out, "reconstruction"):
        code, err = odin_inprocess(command)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "another odin process" in err, err
    (out / LOCK_NAME).write_text("999999")  # what a kill -9 between the last write and the unlink leaves
    code, err = odin_inprocess(command)
    assert code == 0, err
    assert leftovers(out) == []


def test_other_settings_are_refused_not_kept(references, jobs, inputs, tmp_path):
    mine = jobs["mine"].command(references["mine"])
    code, err = odin_inprocess([a if a != "2" else "3" for a in mine])  # --window 3
    assert code == 2 and "other settings (window)" in err and len(err.strip().splitlines()) == 1, err
    rec = jobs["reconstruct"].command(references["reconstruct"])
    code, err = odin_inprocess(rec)
    assert code == 0  # the same settings: already done
    code, err = odin_inprocess([a if a != "8" else "6" for a in rec])  # --max-frames 6
    assert code == 2 and "config.max_frames" in err, err
    code, err = odin_inprocess(["train", str(inputs.pairs), "--out", str(inputs.pairs), "--tiny"])
    assert code == 2 and "--out is an input" in err, err


def test_nrc_runs_store_absolute_scene_paths_and_fit_alike_at_one_or_two_threads(references, jobs, inputs,
                                                                                 tmp_path, monkeypatch):
    config = json.loads((references["nrc fit"] / "config.json").read_text())
    assert config["scenes"][0]["source"] == str(inputs.world.resolve())
    monkeypatch.chdir(tmp_path)  # a relative scene path, resolved at fit time
    relative = os.path.relpath(inputs.world, tmp_path)
    argv = [a if a != str(inputs.world) else relative for a in jobs["nrc fit"].command(tmp_path / "one")]
    torch.set_num_threads(1)
    try:
        code, err = odin_inprocess(argv)
    finally:
        torch.set_num_threads(2)
    assert code == 0, err
    one, two = nrc_digest(tmp_path / "one"), nrc_digest(references["nrc fit"])
    assert one["tensors"] == two["tensors"] and one["step"] == two["step"]  # the weights: byte for byte
    # The logged loss is a sum whose split follows the thread count: equal to float rounding.
    assert [s for s, _ in one["history"]] == [s for s, _ in two["history"]]
    assert [loss for _, loss in one["history"]] == pytest.approx([loss for _, loss in two["history"]], rel=1e-5)


def test_outputs_honour_the_umask(inputs, tmp_path):
    from ingest.atomic import atomic_write_json, temp_dir

    old = os.umask(0o027)
    try:
        atomic_write_json(tmp_path / "a.json", {})
        folder = temp_dir(tmp_path, ".t.")
        code, err = odin_inprocess(["ingest", inputs.world / "video.mp4", "--out", tmp_path / "ds", "--fps", "0",
                                    "--equirect-width", "64", "--views", "0", "--no-progress"])
    finally:
        os.umask(old)
    assert code == 0, err
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640 and folder.stat().st_mode & 0o777 == 0o750
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in (tmp_path / "ds").rglob("*")}
    assert modes and all(m == (0o750 if (tmp_path / p).is_dir() else 0o640) for p, m in modes.items()), modes


def test_lock_refuses_out_as_input_and_leaves_no_folder_when_refused(tmp_path):
    from ingest.runlock import run_lock

    with pytest.raises(OdinError, match="--out is an input"):
        with run_lock(tmp_path, "dataset", inputs=[tmp_path]):
            pass
    with pytest.raises(RuntimeError):
        with run_lock(tmp_path / "new" / "deep", "dataset"):
            raise RuntimeError("refused later")
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OdinError, match="is a file"):
        with run_lock(tmp_path / "file" / "sub", "dataset"):
            pass
