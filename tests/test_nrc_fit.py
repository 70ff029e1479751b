"""NRC end to end on the tiny synthetic world: fit, resume, eval, mesh, camera-path video, CLI, bad input."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from ingest import conventions as cv
from ingest.errors import OdinError
from nrc.config import preset

torch.set_num_threads(2)


def small_config(steps: int = 80):
    """Smallest config that still learns the room: 32x64 frames, 256 rays x 32 samples a step.
    The room is closed, so rays stop at 4 scene radii (every wall is nearer than 2)."""
    config = preset("tiny")
    config.model.hashgrid.n_levels = 6
    config.sampler.n_samples = 32
    config.sampler.far = 4.0
    config.train.steps = steps
    config.train.batch_rays = 256
    config.train.save_every = steps
    config.train.preview_every = steps
    config.train.seconds = None  # these tests count steps, not seconds
    return config


@pytest.fixture(scope="module")
def fitted_run(tiny_world, tmp_path_factory):
    from nrc.trainer import fit

    run = tmp_path_factory.mktemp("nrc") / "run"
    fit([tiny_world.root], run, small_config(), progress=False)
    return run


@pytest.mark.slow
def test_fit_beats_constant_colour_and_writes_report(fitted_run):
    from nrc.evaluate import evaluate_run

    assert (fitted_run / "loss.png").stat().st_size > 0 and (fitted_run / "psnr.png").exists()
    assert list((fitted_run / "previews").glob("step_*.png"))
    report = evaluate_run(fitted_run)
    mean = report["scenes"][0]["mean"]
    assert mean["psnr"] >= mean["baseline_psnr"] + 6.0, mean
    assert {"ssim", "depth_abs_rel", "depth_rmse", "ari", "fg_ari", "object_psnr", "object_depth_abs_rel"} <= set(mean)
    saved = json.loads((fitted_run / "eval" / "metrics.json").read_text())
    assert saved["scenes"][0]["n_views"] == 3  # frames 0, 8, 16 of 20 are held out
    assert saved["scenes"][0]["held_out_frames"] == [0, 8, 16]
    assert saved["scenes"][0]["train_frames"] == [i for i in range(20) if i % 8]
    assert len(list((fitted_run / "eval").glob("scene0_frame_*.png"))) == 3


@pytest.mark.slow
@pytest.mark.parametrize("proposal_samples,objects", [(0, False), (12, False), (0, True)])
def test_resume_after_kill_continues_exactly(tiny_world, tmp_path, proposal_samples, objects):
    from nrc.checkpoint import load_run
    from nrc.config import objects_mode
    from nrc.trainer import fit

    def config():
        c = objects_mode(small_config(steps=6)) if objects else small_config(steps=6)
        c.train.batch_rays, c.sampler.n_samples, c.train.save_every = 64, 16, 2
        c.sampler.proposal_samples = proposal_samples
        # Objects mode: E and M steps, and the pruning in colour at step 4.
        c.sampler.occupancy_warmup, c.sampler.occupancy_update_every = 2, 2
        c.train.code_restart_every = 2 if objects else 3
        return c

    fit([tiny_world.root], tmp_path / "straight", config(), progress=False)
    # Killed after step 5: the last save was at step 4, so resuming loses at most one save interval.
    killed = fit([tiny_world.root], tmp_path / "killed", config(), progress=False, stop_after=5)
    assert killed.step == 5
    from safetensors import safe_open

    with safe_open(str(tmp_path / "killed" / "checkpoint.safetensors"), "pt") as f:
        assert f.metadata()["step"] == "4"
    resumed = fit([tiny_world.root], tmp_path / "killed", config(), progress=False)
    assert resumed.step == 6
    a, _ = load_run(tmp_path / "straight")
    b, _ = load_run(tmp_path / "killed")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_fit_with_a_proposal_field_learns_the_room_from_12_samples_a_ray(tiny_world, tmp_path):
    from nrc.evaluate import evaluate_run
    from nrc.trainer import fit

    config = small_config(steps=160)  # the proposal needs ~100 steps to learn where the walls are
    config.sampler.proposal_samples, config.sampler.n_samples = 24, 12
    fit([tiny_world.root], tmp_path / "run", config, progress=False)
    mean = evaluate_run(tmp_path / "run")["scenes"][0]["mean"]
    assert mean["psnr"] >= mean["baseline_psnr"] + 6.0, mean


@pytest.mark.slow
def test_other_config_is_refused_and_nothing_overwritten(fitted_run, tiny_world, tmp_path):
    from nrc.checkpoint import CHECKPOINT_NAME, load_run
    from nrc.trainer import fit

    before = (fitted_run / CHECKPOINT_NAME).read_bytes()
    other = small_config()
    other.model.n_codes = 5
    with pytest.raises(OdinError, match=r"config\.json: run was made with another config \(model\.n_codes"):
        fit([tiny_world.root], fitted_run, other, progress=False)
    assert (fitted_run / CHECKPOINT_NAME).read_bytes() == before
    # A checkpoint copied next to a different config.json is caught when loading.
    run = tmp_path / "mixed"
    shutil.copytree(fitted_run, run)
    config = json.loads((run / "config.json").read_text())
    config["model"]["code_dim"] = 4
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(OdinError, match=r"checkpoint\.safetensors: checkpoint is from another config \(model\.code_dim"):
        load_run(run)


def test_bad_scenes_give_one_line_errors(tiny_world, tmp_path):
    from nrc.data import load_scene_data

    world = tmp_path / "nan_world"
    world.mkdir()
    shutil.copy(tiny_world.root / "scene.json", world / "scene.json")
    cams = json.loads((tiny_world.root / "cameras.json").read_text())
    cams["frames"][3]["c2w"][0][3] = float("nan")
    (world / "cameras.json").write_text(json.dumps(cams))
    with pytest.raises(OdinError, match="cameras.json: pose of frame 3 contains NaN"):
        load_scene_data(world, 16)
    transforms = tmp_path / "missing" / "transforms.json"
    transforms.parent.mkdir()
    transforms.write_text(json.dumps({"camera_model": "EQUIRECTANGULAR", "frames": [
        {"file_path": "images/none.png", "transform_matrix": np.eye(4).tolist(), "w": 64, "h": 32}]}))
    with pytest.raises(OdinError, match="none of its 1 images exist"):
        load_scene_data(transforms.parent)
    (tmp_path / "empty").mkdir()
    with pytest.raises(OdinError, match="empty: not a scene"):
        load_scene_data(tmp_path / "empty")


@pytest.mark.slow
def test_export_mesh_formats_and_per_code(fitted_run, tmp_path):
    import trimesh

    from nrc.checkpoint import load_run
    from nrc.mesh import export_mesh, sample_grid

    # 80 steps leave the walls half transparent: put the iso-level where the density is.
    model, config = load_run(fitted_run)
    frame = config.scenes[0]
    sigma, _ = sample_grid(model, 0, 24, np.array(frame.center) - frame.radius, np.array(frame.center) + frame.radius)
    level = float(np.percentile(sigma, 90))
    (ply,) = export_mesh(fitted_run, tmp_path / "scene.ply", resolution=32, level=level)
    mesh = trimesh.load(ply)
    assert len(mesh.faces) > 100
    colours = np.asarray(mesh.visual.vertex_colors)
    assert colours.shape == (len(mesh.vertices), 4) and colours[:, :3].std() > 0
    (glb,) = export_mesh(fitted_run, tmp_path / "codes.glb", resolution=32, level=level, per_code=True)
    (small,) = export_mesh(fitted_run, tmp_path / "small.glb", resolution=32, level=level, per_code=True,
                           decimate_faces=500)
    full, decimated = trimesh.load(glb), trimesh.load(small)
    assert len(full.geometry) >= 1 and set(full.geometry) == set(decimated.geometry)
    # Quadric decimation keeps open boundaries, so it may stop above the target - but it must simplify.
    assert sum(len(g.faces) for g in decimated.geometry.values()) < 0.75 * sum(len(g.faces) for g in full.geometry.values())
    with pytest.raises(OdinError, match="mesh format"):
        export_mesh(fitted_run, tmp_path / "mesh.stl")


@pytest.mark.slow
def test_render_camera_path_to_mp4(fitted_run, tiny_world, tmp_path):
    from correspondence.nerfstudio import write_camera_path
    from nrc.video import read_mp4_frames, render_camera_path

    c2ws = [tiny_world.poses[i] for i in (1, 2, 3)]
    for kind, (w, h) in (("perspective", (32, 24)), ("equirectangular", (32, 16))):
        path = write_camera_path(tmp_path / f"{kind}.json", c2ws, w, h, camera_type=kind, fps=5)
        video = render_camera_path(fitted_run, path, tmp_path / f"{kind}.mp4", progress=False)
        frames = read_mp4_frames(video)
        assert len(frames) == 3 and frames[0].shape == (h, w, 3)


@pytest.mark.slow
def test_cli_fit_then_eval(tiny_world, tmp_path, capsys):
    from ingest.cli import main

    run = tmp_path / "cli_run"
    assert main(["nrc", "fit", str(tiny_world.root), "--out", str(run), "--preset", "tiny", "--steps", "2",
                 "--batch-rays", "64", "--height", "16", "--device", "cpu", "--seconds", "0"]) == 0
    assert "nrc fit: step 2/2" in capsys.readouterr().out
    assert main(["nrc", "eval", str(run), "--max-views", "1"]) == 0
    assert "psnr" in capsys.readouterr().out
    assert main(["nrc", "export-mesh", str(run), "--out", str(tmp_path / "m.xyz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("odin: error: ") and "mesh format" in err and "\n" not in err


def test_fit_with_seconds_stops_in_time_and_prints_finite_numbers(tiny_world, tmp_path, capsys):
    """`--seconds 5` bounds the whole call (loading, steps, final occupancy refresh, save,
    preview); the summary line carries a finite training PSNR and an active-code count."""
    import re
    import time

    import nrc.trainer  # noqa: F401  (imports are the process's start-up, not the fit's budget)
    from ingest.cli import main

    start = time.perf_counter()
    assert main(["nrc", "fit", str(tiny_world.root), "--out", str(tmp_path / "run"), "--preset", "tiny",
                 "--steps", "100000", "--height", "16", "--batch-rays", "128", "--device", "cpu",
                 "--seconds", "5"]) == 0
    wall = time.perf_counter() - start
    line = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.search(r"step (\d+)/100000 in ([\d.]+) s, train PSNR ([\d.]+) dB .*, (\d+) active codes", line)
    assert match, line
    steps, seconds, train_psnr, codes = int(match[1]), float(match[2]), float(match[3]), int(match[4])
    assert steps >= 1 and math.isfinite(train_psnr) and codes >= 1
    assert seconds <= 5.25 and wall <= 5.25 + 0.5, (seconds, wall)  # + parsing and printing
    assert seconds >= 4.0, seconds  # it used the budget instead of stopping at once
