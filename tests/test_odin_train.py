"""Odin end to end on the tiny synthetic world: training, exact resume, latent mode, CLI, eval."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ingest.errors import OdinError

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def pairs(tiny_world, tmp_path_factory):
    from correspondence.synthetic_pairs import synthetic_gt_pairs

    out = tmp_path_factory.mktemp("odin") / "pairs"
    # Short frame gaps, so that the time split (the last 20 % of the frames held out) keeps most pairs.
    synthetic_gt_pairs(tiny_world, out, 32, view_size=32, seed=0, max_frame_gap=3)
    return out


def _cfg(**train):
    from odin.config import tiny_config

    cfg = tiny_config(32)
    cfg.data.shuffle_buffer = 8
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def _fixed_loss(run, pairs, cfg) -> float:
    """Loss of the raw weights on fixed val pairs, with fixed noise (what 'the loss falls' compares)."""
    from odin.checkpoint import latest_checkpoint, load_weights
    from odin.data import first_pairs
    from odin.models import OdinDenoiser, PixelCodec
    from odin.schedulers import training_scheduler
    from odin.splits import load_split
    from odin.training import diffusion_loss

    meta = json.loads((latest_checkpoint(run) / "odin.json").read_text())
    model = OdinDenoiser.from_config(meta["denoiser_config"])
    load_weights(model, latest_checkpoint(run) / "model.safetensors")
    batch = first_pairs(pairs, load_split(pairs).val, 8, 32, 32)
    losses = []
    with torch.no_grad():
        for seed in range(4):
            _, stats = diffusion_loss(model, PixelCodec(), training_scheduler(cfg.diffusion), batch, cfg.diffusion,
                                      torch.Generator().manual_seed(seed))
            losses.append(stats["mse"].item())
    return float(np.mean(losses))


def test_training_loss_falls_and_writes_run(pairs, tmp_path):
    from odin.trainer import train

    cfg = _cfg(max_steps=40, checkpoint_every=40, sample_every=40, log_every=10)
    run = tmp_path / "run"
    train(pairs, run, _cfg(max_steps=1, checkpoint_every=1, sample_every=0), progress=False)
    before = _fixed_loss(run, pairs, cfg)
    train(pairs, run, cfg, progress=False)
    after = _fixed_loss(run, pairs, cfg)
    assert after < 0.8 * before, (before, after)
    assert (run / "samples" / "step_00000040.png").exists()
    assert list((run / "tensorboard").glob("events.*"))
    ckpt = run / "checkpoints" / "step_00000040"
    assert {p.name for p in ckpt.iterdir()} == {"odin.json", "model.safetensors", "ema.safetensors",
                                                "optimizer.safetensors"}
    split = json.loads((run / "split.json").read_text())
    assert split["rule"] == "time" and split["val"] and not set(split["val"]) & set(split["train"])
    steps = [json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 10, 20, 30, 40]  # the 1-step run, then the resumed one


def test_resume_is_exact(pairs, tmp_path):
    from odin.trainer import train

    cfg = _cfg(max_steps=6, checkpoint_every=3, sample_every=0, grad_accum=2)
    train(pairs, tmp_path / "straight", cfg, progress=False)
    killed = tmp_path / "killed"
    train(pairs, killed, cfg, progress=False, stop_after_steps=3)
    assert json.loads((killed / "checkpoints" / "latest.json").read_text())["step"] == 3
    train(pairs, killed, cfg, progress=False)
    for name in ("model", "ema", "optimizer"):
        a = load_file(tmp_path / "straight" / "checkpoints" / "step_00000006" / f"{name}.safetensors")
        b = load_file(killed / "checkpoints" / "step_00000006" / f"{name}.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}:{k} differs after resume"
    meta_a = json.loads((tmp_path / "straight" / "checkpoints" / "step_00000006" / "odin.json").read_text())
    meta_b = json.loads((killed / "checkpoints" / "step_00000006" / "odin.json").read_text())
    assert (meta_a["epoch"], meta_a["index"]) == (meta_b["epoch"], meta_b["index"])


def test_cli_train_generate_eval(pairs, tiny_world, tmp_path, capsys):
    from correspondence.nerfstudio import write_camera_path
    from ingest import conventions as cv
    from ingest.cli import main
    from ingest.shards import encode_image

    run = tmp_path / "run"
    assert main(["train", str(pairs), "--out", str(run), "--tiny", "--max-steps", "4", "--quiet"]) == 0

    image = tmp_path / "img.png"
    (image).write_bytes(encode_image(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8), "png"))
    out = tmp_path / "gen"
    assert main(["generate", "--run", str(run), "--image", str(image), "--pose-ypr", "10,0,0,0.1,0,0",
                 "--out", str(out), "--steps", "2", "--sampler", "dpm"]) == 0
    assert (out / "generated.png").exists() and (out / "motion_mask.png").exists()

    c2ws = [cv.make_pose(cv.rotation_from_ypr(np.radians(a), np.float64(0), np.float64(0)), np.array([0.05 * a, 0, 0]))
            for a in range(3)]
    path = write_camera_path(tmp_path / "camera_path.json", c2ws, 32, 32, fov_y_deg=90, fps=4)
    traj = tmp_path / "traj"
    assert main(["generate", "--run", str(run), "--image", str(image), "--camera-path", str(path),
                 "--out", str(traj), "--steps", "2"]) == 0
    assert len(list(traj.glob("frame_*.png"))) == 3 and (traj / "trajectory.mp4").stat().st_size > 0

    assert main(["eval", str(run), str(pairs), "--world", str(tiny_world.root), "--steps", "2",
                 "--max-pairs", "3", "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert report["pairs"] == 3
    for key in ("psnr", "ssim", "psnr_copy", "ssim_copy", "psnr_plane", "ssim_plane", "psnr_warp", "ssim_warp",
                "rot_err", "rot_err_gt"):
        assert key in report
    # The GT-depth warp uses the exact pose and geometry: it must beat copying the source.
    assert report["psnr_warp"]["mean"] > report["psnr_copy"]["mean"]
    assert (tmp_path / "eval" / "eval_grid.png").exists()

    capsys.readouterr()
    assert main(["generate", "--run", str(run), "--image", str(image), "--pose", "1,0,0,0,1,0,0,0,-1,0,0,0",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--pose: pose is not a rotation" in err and len(err.splitlines()) == 1
    (tmp_path / "notimage.png").write_text("hello")
    assert main(["generate", "--run", str(run), "--image", str(tmp_path / "notimage.png"), "--pose-ypr",
                 "0,0,0,0,0,0", "--out", str(out)]) == 2
    assert "notimage.png: not an image file" in capsys.readouterr().err

    other = tmp_path / "other.json"
    other.write_text(json.dumps({"model": {"resolution": 32, "block_out_channels": [8, 16], "norm_num_groups": 8,
                                           "attention_levels": [False, False], "layers_per_block": 1}}))
    assert main(["train", str(pairs), "--out", str(run), "--config", str(other), "--quiet"]) == 2
    assert "another model config" in capsys.readouterr().err

    # synthetic_gt_pairs records val pairs at random inside one world: not held out, so refused.
    leaky = tmp_path / "leaky"
    assert main(["train", str(pairs), "--out", str(leaky), "--tiny", "--split-by", "recorded", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pairs.parquet: " in err and "share a frame with training pairs" in err and len(err.splitlines()) == 1
    assert not leaky.exists()


def test_empty_pairs_are_refused(tmp_path):
    from correspondence.pairs_io import PairsWriter
    from odin.trainer import train

    writer = PairsWriter(tmp_path / "empty")
    writer.commit_video("v")
    writer.close()
    with pytest.raises(OdinError, match="no pair shards|no pairs"):
        train(tmp_path / "empty", tmp_path / "run", _cfg(max_steps=1), progress=False)


def test_latent_mode_from_sd_unet_trains_generates_and_loads_in_diffusers(pairs, tmp_path):
    """--pretrained with a tiny random SD-architecture checkpoint (UNet2DConditionModel + AutoencoderKL),
    written here with save_pretrained; the run's pipeline folder loads back through diffusers."""
    from tests.test_odin import _write_tiny_pretrained

    from ingest.cli import main
    from odin.checkpoint import load_for_inference
    from odin.data import first_pairs
    from odin.pipeline import OdinPipeline, ViewCondition, load_pipeline

    _write_tiny_pretrained(tmp_path / "sd", "UNet2DConditionModel")
    run = tmp_path / "run"
    assert main(["train", str(pairs), "--out", str(run), "--tiny", "--pretrained", str(tmp_path / "sd"),
                 "--max-steps", "2", "--quiet"]) == 0
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 2
    model, cfg, info = load_for_inference(run)
    assert cfg.model.latent and info["denoiser_config"]["unet_class"] == "UNet2DConditionModel"
    assert info["denoiser_config"]["unet_config"]["in_channels"] == 4 + 4 + 4 + 6  # noisy, source, reprojected source latents + Plücker
    assert main(["eval", str(run), str(pairs), "--steps", "2", "--max-pairs", "2", "--no-pose-following",
                 "--out", str(tmp_path / "eval")]) == 0

    index = json.loads((run / "pipeline" / "model_index.json").read_text())
    assert index["_class_name"] == "OdinPipeline" and index["vae"] == ["diffusers", "AutoencoderKL"]
    from_run, _ = load_pipeline(run, "cpu")
    hub = OdinPipeline.from_pretrained(run / "pipeline")
    b = first_pairs(pairs, None, 2, 32, 16)
    cond = ViewCondition.from_batch(b)
    x, _ = from_run([cond], steps=2, generator=torch.Generator().manual_seed(0))
    y, _ = hub([cond], steps=2, generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 3, 32, 32) and torch.equal(x, y)  # the same EMA weights, the same sampler


def test_killed_process_resumes_exactly(pairs, tmp_path):
    """SIGKILL a real `odin train` after a checkpoint; the resumed run matches an uninterrupted one."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from odin.trainer import train

    cfg = _cfg(max_steps=10_000, checkpoint_every=2, sample_every=0, keep_checkpoints=50)
    config = tmp_path / "config.json"
    config.write_text(json.dumps(cfg.to_dict()))
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "ingest.cli", "train", str(pairs), "--out", str(killed),
                             "--config", str(config), "--quiet"], env={**os.environ, "OMP_NUM_THREADS": "2"},
                            # Same thread count as this process: float sums depend on it.
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pointer = killed / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if pointer.exists() and json.loads(pointer.read_text())["step"] >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert pointer.exists(), proc.stderr.read().decode()[-2000:]
    resumed_from = json.loads(pointer.read_text())["step"]
    target = resumed_from + 2
    cfg.train.max_steps = target
    train(pairs, killed, cfg, progress=False)
    train(pairs, tmp_path / "straight", cfg, progress=False)
    name = f"step_{target:08d}"
    for part in ("model", "ema", "optimizer"):
        a = load_file(tmp_path / "straight" / "checkpoints" / name / f"{part}.safetensors")
        b = load_file(killed / "checkpoints" / name / f"{part}.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), f"{part} differs after kill and resume"


def test_out_of_memory_names_the_batch_size(pairs, tmp_path, monkeypatch):
    import odin.trainer

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(odin.trainer, "diffusion_loss", oom)
    with pytest.raises(OdinError, match="train.batch_size=4; lower train.batch_size"):
        odin.trainer.train(pairs, tmp_path / "run", _cfg(max_steps=1, sample_every=0), config_source="c.json",
                           progress=False)


def test_a_briefly_trained_model_follows_the_pose(pairs, tmp_path):
    """300 steps on the tiny world: on held-out (later) pairs the view generated at the true pose is
    closer to the target than the one generated, from the same noise, with the pose zeroed.  (A model
    that ignored its pose inputs would score the same twice; bench/odin_quality.py measures the
    full-size version of this on held-out rooms.)"""
    from ingest import conventions as cv
    from ingest.image_metrics import psnr
    from odin.data import first_pairs, tensor_image
    from odin.pipeline import ViewCondition, load_pipeline
    from odin.splits import load_split
    from odin.trainer import train

    run = tmp_path / "run"
    train(pairs, run, _cfg(max_steps=300, checkpoint_every=300, sample_every=0, log_every=100), progress=False)
    pipe, _ = load_pipeline(run, "cpu")
    batch = first_pairs(pairs, load_split(pairs).val, 16, 32, 32)
    n = len(batch)
    posed = ViewCondition.from_batch(batch)
    zeroed = ViewCondition(batch.source, torch.eye(3, dtype=torch.float64).expand(n, 3, 3),
                           torch.zeros(n, 3, dtype=torch.float64), posed.scale)
    scores = {}
    for name, cond in (("posed", posed), ("zeroed", zeroed)):
        images, _ = pipe([cond], [cv.Intrinsics.from_fov(32, 32, 90)] * n, steps=10,
                         generator=torch.Generator().manual_seed(0))
        scores[name] = np.mean([psnr(tensor_image(a), tensor_image(b)) for a, b in zip(images, batch.target)])
    assert n >= 6 and scores["posed"] > scores["zeroed"] + 0.4, scores


def test_logged_steps_follow_the_order_files_were_opened_not_their_names(tmp_path):
    """A run killed and resumed within one second writes two event files whose names differ only
    after the seconds (host, pid): the resumed file may sort first by name."""
    import os

    from torch.utils.tensorboard import SummaryWriter

    from odin.events import drop_events_after, logged_steps

    names = []
    for steps in ((1, 2, 3), (3, 4)):
        writer = SummaryWriter(str(tmp_path))
        for step in steps:
            writer.add_scalar("train/loss", float(step), step)
        writer.close()
        names += sorted(set(os.listdir(tmp_path)) - set(names))
        if steps[0] == 1:
            assert drop_events_after(tmp_path, 2) == 1  # the killed run's step 3 goes
    first, second = names
    seconds = first.split(".tfevents.")[1].split(".")[0]
    os.rename(tmp_path / second, tmp_path / f"events.out.tfevents.{seconds}.0.0.0")  # same second, sorts first
    assert sorted(os.listdir(tmp_path))[0] != first
    assert logged_steps(tmp_path) == {"train/loss": [1, 2, 3, 4]}
