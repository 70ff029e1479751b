"""Every `odin` subcommand on the bad inputs users actually produce (issue 18, item 2).

Each case must exit 2 with exactly one stderr line ``odin[ CMD]: error: <file or flag>: <problem>``,
no traceback, and leave what existed before byte-identical. A few inputs are unusual but valid
(unicode paths, a 1-frame video, grey/RGBA/16-bit images): those must succeed, and say so correctly.

Used by tests/test_bad_inputs.py and bench/abuse.py::

    results = run_all(root)                             # [(case, outcome, problems)], everything under root
    # or one case at a time:
    fx = Fixtures(root)                                 # inputs, built lazily and shared by the cases
    outcome = run_case(case, case_dir, fx)              # (code, stderr lines, unchanged)
    problems(case, outcome, case_dir, fx)               # [] when the case behaves
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from tests.bad_inputs_fixtures import Fixtures

__all__ = ["CASES", "Case", "Fixtures", "Outcome", "problems", "run_all", "run_case"]

ONE_LINE = re.compile(r"^odin(?: [\w-]+)*: error: (\S.*?): (\S.*)$")


@dataclass(frozen=True)
class Case:
    name: str
    # Split on spaces, then each token formatted: {fixture name}; {out}, a fresh path; {tmp}, the case
    # folder; {uni}, a fresh path with spaces and non-ASCII letters.
    argv: str
    names: str = ""  # formatted like argv: what the error line must mention (the file or the flag)
    code: int = 2
    check: Callable[[Path], str | None] | None = None  # accepted inputs: the case folder -> a problem, or None
    needs: Callable[[], bool] | None = None  # run only when this holds (e.g. "no CUDA here")


class Outcome(NamedTuple):
    code: int | None  # None: an exception escaped main
    lines: list[str]  # stderr, or the traceback
    unchanged: bool  # every file that existed before (inputs, earlier outputs) is still there, byte-identical


class _Paths(dict):
    def __init__(self, fx: Fixtures, tmp: Path):
        super().__init__(out=str(tmp / "out"), tmp=str(tmp), uni=str(tmp / "dïr ✓ x"))
        self.fx = fx

    def __missing__(self, key):
        return str(self.fx[key])


def _digest(root: Path) -> dict[str, str]:
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def argv_of(case: Case, tmp: Path, fx: Fixtures) -> list[str]:
    paths = _Paths(fx, tmp)
    return [token.format_map(paths) for token in case.argv.split()]


def run_case(case: Case, tmp: str | Path, fx: Fixtures) -> Outcome:
    """Run ``odin`` on the case in this process (stdout discarded, stderr kept) inside folder ``tmp``."""
    from ingest.cli import main

    tmp = Path(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    argv = argv_of(case, tmp, fx)  # builds the fixtures first, so that they are part of "before"
    before_fx, before_tmp = _digest(fx.root), _digest(tmp)
    err = io.StringIO()
    try:
        with _c_stderr() as c_err, contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as e:  # main returns argparse's exit code; a command that exits itself lands here
                code = e.code if isinstance(e.code, int) else 1
    except Exception:  # noqa: BLE001  (a traceback is what this table exists to find)
        return Outcome(None, traceback.format_exc().splitlines(), _same(before_fx, fx.root, before_tmp, tmp))
    text = "".join(c_err) + err.getvalue()
    lines = [ln for ln in text.replace("\r", "\n").split("\n") if ln.strip()]
    return Outcome(code, lines, _same(before_fx, fx.root, before_tmp, tmp))


@contextlib.contextmanager
def _c_stderr():
    """File descriptor 2 into a temporary file: what C libraries (OpenCV, FFmpeg) print there is
    stderr too, and a user sees it. Yields a list that holds the text once the block ends."""
    text: list[str] = []
    with tempfile.TemporaryFile() as f:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            yield text
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            text.append(f.read().decode("utf-8", "replace"))


def _same(before_fx: dict, fx_root: Path, before_tmp: dict, tmp: Path) -> bool:
    # New files are allowed (a world caches its renders beside itself); changed or deleted ones are not.
    after_fx, after_tmp = _digest(fx_root), _digest(tmp)
    return all(after_fx.get(k) == v for k, v in before_fx.items()) and \
        all(after_tmp.get(k) == v for k, v in before_tmp.items())


def problems(case: Case, outcome: Outcome, tmp: str | Path | None = None, fx: Fixtures | None = None) -> list[str]:
    """What is wrong with ``outcome`` for ``case`` (empty: the case behaves)."""
    code, lines, unchanged = outcome
    if code is None:
        return [f"traceback: {lines[-1] if lines else '?'}"]
    found = []
    if code != case.code:
        found.append(f"exit {code}, expected {case.code}")
    if case.code != 0:
        if len(lines) != 1:
            found.append(f"{len(lines)} stderr lines")
        elif not ONE_LINE.match(lines[0]):
            found.append("not 'odin: error: <file or flag>: <problem>'")
        if case.names and tmp is not None and fx is not None:
            want = case.names.format_map(_Paths(fx, Path(tmp)))
            if not any(want in ln for ln in lines):
                found.append(f"does not name {want!r}")
        if not unchanged:
            found.append("changed earlier outputs")
    elif case.check is not None and tmp is not None:
        issue = case.check(Path(tmp))
        if issue:
            found.append(issue)
    return found


def run_all(root: str | Path) -> list[tuple[Case, Outcome, list[str]]]:
    """Every case that applies here, each in its own folder under ``root``: (case, outcome, problems).
    bench/abuse.py counts ``len(result)`` bad inputs and those with problems as "not one-line"."""
    root = Path(root)
    fx = Fixtures(root / "fixtures")
    results = []
    for i, case in enumerate(CASES):
        if case.needs is None or case.needs():
            outcome = run_case(case, root / f"case_{i:03d}", fx)
            results.append((case, outcome, problems(case, outcome, root / f"case_{i:03d}", fx)))
    return results


# --------------------------------------------------------------------------- checks of accepted inputs
def _no_cuda() -> bool:
    import torch

    return not torch.cuda.is_available()


def _has(*names: str) -> Callable[[Path], str | None]:
    return lambda tmp: None if all((tmp / "out" / n).exists() for n in names) else f"no out/{', '.join(names)}"


def _source_mean(expected: float) -> Callable[[Path], str | None]:
    """generate's source.png is the image as the model saw it: its mean must be the 8-bit one."""
    def check(tmp: Path) -> str | None:
        from PIL import Image

        path = tmp / "out" / "source.png"
        if not path.exists():
            return "no out/source.png"
        mean = float(np.asarray(Image.open(path).convert("L"), np.float64).mean())
        return None if abs(mean - expected) < 12 else f"source.png mean {mean:.0f}, expected about {expected:.0f}"
    return check


# --------------------------------------------------------------------------- the table
_GEN = "generate --run {odin_run} --image {rgb_png} --pose-ypr 5,0,0,0,0,0.1 --out {out} --steps 1 --device cpu"
_GEN_PATH = "generate --run {odin_run} --image {rgb_png} --out {out} --steps 1 --device cpu --camera-path"
_EVAL = "eval {odin_run} {pairs} --out {out} --steps 1 --device cpu --split all --max-pairs 1 --no-pose-following"
_FIT = "nrc fit --out {out} --preset tiny --steps 1 --device cpu --height 16 --batch-rays 64 --seconds 0"
_FITW = _FIT.replace("nrc fit", "nrc fit {world}")
_NEVAL = "nrc eval {nrc_run} --out {out} --device cpu"
_RENDER = "nrc render {nrc_run} --out {out}.mp4 --device cpu --camera-path"
_MESH = "nrc export-mesh {nrc_run} --out {out}/m.ply --device cpu --resolution 8"
_INGEST = "ingest --out {out} --no-progress"
_SYNTH = "synth --out {out} --seconds 1 --fps 2 --width 64"
_TRAIN = "train {pairs} --out {out} --tiny --max-steps 1 --resolution 32 --quiet"
_MINE = "mine {dataset} --out {out} --estimator reference"
_RECON = "reconstruct {dataset} --video v --out {out}"
_IMPORT = "import-poses --out {out}"

_TF = ("tf_nan", "tf_scaled", "tf_3x3", "tf_fl0", "tf_zero", "tf_noimg", "tf_binary", "tf_malformed")
_CP = ("cp_malformed", "cp_binary", "cp_empty", "cp_nan", "cp_scaled", "cp_strings", "cp_size0")
_BAD_VIDEOS = ("empty_mp4", "corrupt_mp4", "truncated_mp4", "jpeg_mp4", "four_three_mp4")


def _flags(prefix: str, base: str, flags: list[tuple[str, str]]) -> list[Case]:
    """One case per bad flag value; the error must name the flag."""
    return [Case(f"{prefix}{flag}={value}", f"{base} {flag} {value}", flag) for flag, value in flags]


CASES: list[Case] = [
    # ingest: videos users have
    Case("ingest missing file", f"{_INGEST} {{tmp}}/missing.mp4", "missing.mp4"),
    Case("ingest missing unicode path", f"{_INGEST} {{missing_unicode}}", "{missing_unicode}"),
    *[Case(f"ingest {v}", f"{_INGEST} {{{v}}}", f"{{{v}}}") for v in _BAD_VIDEOS],
    Case("ingest every input bad", f"{_INGEST} {{empty_mp4}} {{corrupt_mp4}}", "{out}"),
    Case("ingest nothing given", _INGEST, "VIDEO"),
    Case("ingest unicode path", f"{_INGEST} {{unicode_mp4}} --fps 0 --equirect-width 64 --views 0", code=0,
         check=_has("videos.parquet")),
    Case("ingest 1-frame video", f"{_INGEST} {{one_frame_mp4}} --equirect-width 64 --views 0", code=0,
         check=_has("videos.parquet")),
    Case("ingest --out under a file", "ingest {video} --out {a_file}/sub", "{a_file}"),
    Case("ingest --out is a file", "ingest {video} --out {a_file}", "{a_file}"),
    Case("ingest missing file into a dataset", "ingest {tmp}/missing.mp4 --out {dataset} --no-progress", "missing.mp4"),
    Case("ingest bad flag into a dataset", "ingest {video} --out {dataset} --no-progress --jpeg-quality 0",
         "--jpeg-quality"),
    Case("ingest --mask corrupt", f"{_INGEST} {{video}} --mask {{corrupt_png}}", "{corrupt_png}"),
    *_flags("ingest ", f"{_INGEST} {{video}}", [
        ("--equirect-width", "0"), ("--equirect-width", "127"), ("--view-size", "0"), ("--fps", "-1"),
        ("--fps", "nan"), ("--workers", "0"), ("--jpeg-quality", "101"), ("--fov", "0"), ("--fov", "nan"),
        ("--views", "abc"), ("--blur-threshold", "nan")]),
    # synth
    *_flags("synth ", _SYNTH, [
        ("--seconds", "nan"), ("--seconds", "0"), ("--seconds", "-1"), ("--fps", "0"), ("--fps", "nan"),
        ("--width", "0"), ("--width", "127"), ("--objects", "13"), ("--objects", "-1"), ("--cut-at", "nan"),
        ("--speed", "nan")]),
    Case("synth --out under a file", "synth --out {a_file}/sub --seconds 1 --fps 2 --width 64", "{a_file}"),
    # mine
    Case("mine missing dataset", "mine {tmp}/none --out {out}", "none"),
    Case("mine an .mp4 as dataset", "mine {video} --out {out}", "{video}"),
    Case("mine an empty folder", "mine {tmp} --out {out}", "{tmp}"),
    Case("mine truncated shard", "mine {dataset_trunc} --out {out} --estimator reference", ".tar"),
    Case("mine bad flag into earlier pairs", "mine {dataset} --out {pairs} --window 0", "--window"),
    Case("mine --out under a file", "mine {dataset} --out {a_file}/sub", "{a_file}"),
    *_flags("mine ", _MINE, [("--window", "0"), ("--analysis-width", "0"), ("--workers", "0")]),
    # reconstruct
    Case("reconstruct missing dataset", "reconstruct {tmp}/none --video v --out {out}", "none"),
    Case("reconstruct an .mp4 as dataset", "reconstruct {video} --video v --out {out}", "{video}"),
    Case("reconstruct unknown video", "reconstruct {dataset} --video nope --out {out}", "{dataset}"),
    Case("reconstruct --out under a file", "reconstruct {dataset} --video v --out {a_file}/sub", "{a_file}"),
    *_flags("reconstruct ", _RECON, [("--max-frames", "-1"), ("--overlap", "0"), ("--shot", "-1"),
                                     ("--mapper-threads", "0"), ("--mask", "{corrupt_png}")]),
    # import-poses
    *[Case(f"import-poses {t}", f"{_IMPORT} {{{t}}}", "transforms.json") for t in _TF],
    Case("import-poses an .mp4", f"{_IMPORT} {{video}}", "{video}"),
    Case("import-poses missing", f"{_IMPORT} {{tmp}}/none.json", "none.json"),
    Case("import-poses --out under a file", "import-poses {tf_good} --out {a_file}/sub", "{a_file}"),
    # train
    Case("train missing pairs", "train {tmp}/none --out {out} --tiny", "none"),
    Case("train an .mp4 as pairs", "train {video} --out {out} --tiny", "{video}"),
    Case("train truncated shard", "train {pairs_trunc} --out {out} --tiny --max-steps 1 --resolution 32 --quiet",
         ".tar"),
    Case("train --out under a file", "train {pairs} --out {a_file}/sub --tiny", "{a_file}"),
    Case("train --config binary", f"{_TRAIN} --config {{tf_binary}}", "{tf_binary}"),
    Case("train --config not a config", f"{_TRAIN} --config {{cp_good}}", "{cp_good}"),
    *_flags("train ", _TRAIN, [
        ("--resolution", "0"), ("--resolution", "33"), ("--batch-size", "0"), ("--max-steps", "-1"),
        ("--max-minutes", "nan"), ("--val-fraction", "nan"), ("--val-fraction", "1.5")]),
    # generate
    Case("generate missing run", _GEN.replace("{odin_run}", "{tmp}/none"), "none"),
    Case("generate an .mp4 as run", _GEN.replace("{odin_run}", "{video}"), "{video}"),
    Case("generate an NRC run", _GEN.replace("{odin_run}", "{nrc_run}"), "{nrc_run}"),
    Case("generate missing image", _GEN.replace("{rgb_png}", "{tmp}/none.png"), "none.png"),
    Case("generate corrupt image", _GEN.replace("{rgb_png}", "{corrupt_png}"), "{corrupt_png}"),
    Case("generate an .mp4 as image", _GEN.replace("{rgb_png}", "{video}"), "{video}"),
    Case("generate 4x4 image", _GEN.replace("{rgb_png}", "{tiny_png}"), "{tiny_png}"),
    Case("generate --out under a file", _GEN.replace("{out}", "{a_file}/sub"), "{a_file}"),
    Case("generate --out is a file", _GEN.replace("{out}", "{a_file}"), "{a_file}"),
    Case("generate --pose NaN", _GEN.replace("--pose-ypr 5,0,0,0,0,0.1", "--pose 1,0,0,0,1,0,0,0,1,nan,0,0"), "--pose"),
    Case("generate --pose scaled", _GEN.replace("--pose-ypr 5,0,0,0,0,0.1", "--pose 2,0,0,0,2,0,0,0,2,0,0,0"), "--pose"),
    Case("generate --pose 3 numbers", _GEN.replace("--pose-ypr 5,0,0,0,0,0.1", "--pose 1,2,3"), "--pose"),
    Case("generate --pose-ypr NaN", _GEN.replace("5,0,0,0,0,0.1", "nan,0,0,0,0,0"), "--pose-ypr"),
    *_flags("generate ", _GEN, [("--guidance", "nan"), ("--scale", "0"), ("--scale", "nan"), ("--steps", "0"),
                                ("--steps", "-1"), ("--fov", "0"), ("--fov", "180"), ("--fov", "nan")]),
    *_flags("generate path ", f"{_GEN_PATH} {{cp_good}}", [("--anchor-weight", "2"), ("--fps", "0")]),
    *[Case(f"generate {c}", f"{_GEN_PATH} {{{c}}}", "camera_path.json") for c in _CP],
    Case("generate --device cuda", _GEN.replace("cpu", "cuda"), "--device", needs=_no_cuda),
    Case("generate grey image", _GEN.replace("{rgb_png}", "{gray_png}"), code=0, check=_source_mean(127)),
    Case("generate RGBA image", _GEN.replace("{rgb_png}", "{rgba_png}"), code=0, check=_has("generated.png")),
    Case("generate 16-bit image", _GEN.replace("{rgb_png}", "{png16}"), code=0, check=_source_mean(127)),
    Case("generate unicode paths", _GEN.replace("{out}", "{uni}"), code=0,
         check=lambda tmp: None if (tmp / "dïr ✓ x" / "generated.png").exists() else "no generated.png"),
    # eval
    Case("eval missing run", _EVAL.replace("{odin_run}", "{tmp}/none"), "none"),
    Case("eval missing pairs", _EVAL.replace("{pairs}", "{tmp}/none"), "none"),
    Case("eval an .mp4 as pairs", _EVAL.replace("{pairs}", "{video}"), "{video}"),
    Case("eval truncated shard", _EVAL.replace("{pairs}", "{pairs_trunc}").replace("--max-pairs 1", ""), ".tar"),
    Case("eval --out under a file", _EVAL.replace("{out}", "{a_file}/sub"), "{a_file}"),
    Case("eval default --out, bad pairs", "eval {odin_run} {tmp}/none --device cpu", "none"),
    Case("eval --world an .mp4", f"{_EVAL} --world {{video}}", "{video}"),
    Case("eval --device cuda", _EVAL.replace("cpu", "cuda"), "--device", needs=_no_cuda),
    *_flags("eval ", _EVAL, [("--batch-size", "0"), ("--max-pairs", "0"), ("--steps", "0"), ("--guidance", "nan")]),
    # nrc fit
    Case("nrc fit an .mp4 as scene", f"{_FIT} {{video}}", "{video}"),
    Case("nrc fit missing scene", f"{_FIT} {{tmp}}/none", "none"),
    Case("nrc fit an empty folder", f"{_FIT} {{tmp}}", "{tmp}"),
    *[Case(f"nrc fit {t}", f"{_FIT} {{{t}}}", "transforms.json") for t in _TF],
    Case("nrc fit --out under a file", _FITW.replace("{out}", "{a_file}/sub"), "{a_file}"),
    Case("nrc fit other config into a run", _FITW.replace("{out}", "{nrc_run}") + " --codes 3", "{nrc_run}"),
    Case("nrc fit --device cuda", _FITW.replace("cpu", "cuda"), "--device", needs=_no_cuda),
    Case("nrc fit --device unknown", _FITW.replace("cpu", "tpu"), "--device"),
    *_flags("nrc fit ", _FITW, [
        ("--steps", "0"), ("--steps", "-1"), ("--batch-rays", "0"), ("--codes", "0"), ("--height", "0"),
        ("--height", "-8"), ("--seconds", "nan"), ("--seconds", "-1"), ("--scene-radius", "0"),
        ("--scene-radius", "nan"), ("--scene-center", "nan,0,0"), ("--save-every", "0"), ("--seed", "-1")]),
    # nrc eval
    Case("nrc eval missing run", _NEVAL.replace("{nrc_run}", "{tmp}/none"), "none"),
    Case("nrc eval an .mp4 as run", _NEVAL.replace("{nrc_run}", "{video}"), "{video}"),
    Case("nrc eval an Odin run", _NEVAL.replace("{nrc_run}", "{odin_run}"), "{odin_run}"),
    Case("nrc eval default --out, bad flag", "nrc eval {nrc_run} --height 0", "--height"),
    Case("nrc eval --out under a file", _NEVAL.replace("{out}", "{a_file}/sub"), "{a_file}"),
    Case("nrc eval --out is a file", _NEVAL.replace("{out}", "{a_file}"), "{a_file}"),
    Case("nrc eval --device cuda", _NEVAL.replace("cpu", "cuda"), "--device", needs=_no_cuda),
    *_flags("nrc eval ", _NEVAL, [("--max-views", "0"), ("--height", "0")]),
    # nrc render
    *[Case(f"nrc render {c}", f"{_RENDER} {{{c}}}", "camera_path.json") for c in _CP],
    Case("nrc render missing path", f"{_RENDER} {{tmp}}/none.json", "none.json"),
    Case("nrc render --out under a file", f"{_RENDER} {{cp_good}}".replace("{out}.mp4", "{a_file}/x.mp4"), "{a_file}"),
    Case("nrc render --out a folder", f"{_RENDER} {{cp_good}}".replace("{out}.mp4", "{tmp}"), "{tmp}"),
    Case("nrc render --device cuda", f"{_RENDER} {{cp_good}}".replace("cpu", "cuda"), "--device", needs=_no_cuda),
    *_flags("nrc render ", f"{_RENDER} {{cp_good}}", [("--scene", "5"), ("--scene", "-1")]),
    # nrc export-mesh
    Case("nrc export-mesh missing run", _MESH.replace("{nrc_run}", "{tmp}/none"), "none"),
    Case("nrc export-mesh --out under a file", _MESH.replace("{out}/m.ply", "{a_file}/m.ply"), "{a_file}"),
    Case("nrc export-mesh .stl", _MESH.replace("m.ply", "m.stl"), "m.stl"),
    Case("nrc export-mesh --device cuda", _MESH.replace("cpu", "cuda"), "--device", needs=_no_cuda),
    *_flags("nrc export-mesh ", _MESH, [("--resolution", "0"), ("--resolution", "1"), ("--level", "nan"),
                                        ("--decimate", "0"), ("--scene", "3")]),
    # demo
    Case("demo --out under a file", "demo --out {a_file}/sub", "{a_file}"),
    Case("demo --out is a file", "demo --out {a_file}", "{a_file}"),
    Case("demo --out holds something else", "demo --out {nrc_run}", "{nrc_run}"),
    Case("demo missing video", "demo --out {out} --video {tmp}/none.mp4", "none.mp4"),
    *[Case(f"demo {v}", f"demo --out {{out}} --video {{{v}}}", f"{{{v}}}") for v in _BAD_VIDEOS],
    # view (never one that could start serving: each fails before the server starts)
    Case("view --port 70000", "view {nrc_run} --port 70000", "--port"),
    Case("view missing run", "view {tmp}/none", "none"),
    Case("view an .mp4 as run", "view {video}", "{video}"),
    Case("view an empty folder", "view {tmp}", "{tmp}"),
    Case("view --odin missing", "view {nrc_run} --odin {tmp}/none", "none"),
    *_flags("view ", "view {nrc_run}", [("--preview-height", "0"), ("--full-height", "100000")]),
]
