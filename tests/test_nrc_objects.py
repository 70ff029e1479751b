"""The codebook carries the scene (issue 15): a family of rooms reusing object types, K=1 vs K=8,
codes pruned below K, two scenes trained together, the family's ground truth and CLI."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ingest.synth import CameraPathConfig, SynthConfig, generate_family
from nrc.config import preset

torch.set_num_threads(2)

STEPS = 160


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    """Two rooms sharing two object types (both in each room), 10 frames each (0 and 8 held out)."""
    config = SynthConfig(seconds=2.0, fps=5.0, width=128, seed=1, n_objects=2, n_types=2,
                         path=CameraPathConfig(radius_x=0.8, radius_z=0.6, speed=0.3))
    return generate_family(tmp_path_factory.mktemp("family"), config, 2, progress=False)


def family_config(n_codes: int):
    config = preset("tiny")
    config.model.n_codes = n_codes
    config.model.hashgrid.n_levels = 6
    config.sampler.n_samples, config.sampler.far, config.sampler.occupancy_update_every = 24, 4.0, 16
    config.train.steps, config.train.seconds, config.train.batch_rays = STEPS, None, 192
    config.train.image_height = 24
    config.train.save_every = config.train.preview_every = STEPS
    return config


@pytest.fixture(scope="module")
def fits(family, tmp_path_factory):
    """K=8 and K=1 fitted on both rooms together, same config otherwise; held-out reports."""
    from nrc.evaluate import evaluate_run
    from nrc.trainer import fit

    out = {}
    for k in (8, 1):
        run = tmp_path_factory.mktemp("runs") / f"k{k}"
        result = fit([w.root for w in family], run, family_config(k), progress=False)
        out[k] = (result, evaluate_run(run))
    return out


def test_family_rooms_reuse_object_types(family):
    from ingest.synth import object_types

    types = {t.id: t for t in object_types(1, 2)}
    seen = {}
    for world in family:
        for obj in world.scene.objects:
            proto = types[obj.id]  # an object's id is its type id ...
            assert (obj.kind, obj.size, obj.texture) == (proto.kind, proto.size, proto.texture)  # ... same shape, texture
            seen.setdefault(obj.id, []).append(obj.center)
        _, ids = world.ground_truth(3)
        assert set(np.unique(ids)) <= {0} | {o.id for o in world.scene.objects}
    assert all(len(c) == 2 for c in seen.values()) and len(seen) == 2  # every type in both rooms ...
    assert family[0].scene.objects[0].center != family[1].scene.objects[0].center  # ... elsewhere
    assert not np.allclose(family[0].poses[0], family[1].poses[0])  # another camera path
    assert family[0].scene.light_direction != family[1].scene.light_direction


@pytest.mark.slow
def test_one_code_renders_clearly_worse_than_eight(fits):
    """The codebook matters: with one code (same variation bottleneck) held-out PSNR drops."""
    k8 = np.mean([s["mean"]["psnr"] for s in fits[8][1]["scenes"]])
    k1 = np.mean([s["mean"]["psnr"] for s in fits[1][1]["scenes"]])
    assert k8 >= k1 + 1.5, (k8, k1)


@pytest.mark.slow
def test_codes_are_pruned_below_k(fits):
    """Two object types and a room do not need eight codes: some are closed for good."""
    result, report = fits[8]
    assert 2 <= report["active_codes"] < 8, report["active_codes"]
    assert result.history[-1]["active_codes"] == report["active_codes"]


@pytest.mark.slow
def test_two_scenes_trained_together_keep_their_codes(fits):
    """Scene-balanced batches, usage and restarts: each room still renders with several codes,
    and the recurring types are scored across rooms."""
    result, report = fits[8]
    assert all(n >= 2 for n in result.history[-1]["codes_per_scene"]), result.history[-1]
    for scene in report["scenes"]:
        assert scene["mean"]["psnr"] >= scene["mean"]["baseline_psnr"] + 5, scene["mean"]
    assert report["recurring_types"] == 2 and math.isfinite(report["cross_scene"])


def test_cross_scene_consistency_counts_recurring_types():
    from nrc.metrics import cross_scene_consistency, majority_codes

    room_a = majority_codes(np.array([0, 1, 1, 2, 2, 2]), np.array([5, 3, 3, 4, 4, 0]))
    room_b = majority_codes(np.array([1, 1, 1, 3, 2]), np.array([3, 3, 0, 7, 1]))
    assert room_a == {1: 3, 2: 4} and room_b == {1: 3, 2: 1, 3: 7}
    assert cross_scene_consistency([room_a, room_b]) == (0.5, 2)  # type 1 agrees, type 2 does not, 3 is seen once
    assert math.isnan(cross_scene_consistency([room_a])[0])


def test_cli_synth_family_and_fit_on_several_scenes(tmp_path, capsys):
    from ingest.cli import main

    assert main(["synth", "--out", str(tmp_path / "fam"), "--types", "3", "--rooms", "2", "--objects", "2",
                 "--seconds", "0.4", "--fps", "5", "--width", "64"]) == 0
    assert capsys.readouterr().out.count("synthetic room:") == 2
    rooms = [str(tmp_path / "fam" / f"room_{k}") for k in range(2)]
    assert main(["nrc", "fit", *rooms, "--out", str(tmp_path / "run"), "--preset", "tiny", "--steps", "2",
                 "--batch-rays", "64", "--height", "16", "--device", "cpu", "--seconds", "0", "--objects"]) == 0
    assert "nrc fit: step 2/2" in capsys.readouterr().out
    from nrc.checkpoint import read_config
    saved = read_config(tmp_path / "run")
    assert saved.model.colour_variation == "brightness" and saved.train.assignment_loss > 0
    assert main(["synth", "--out", str(tmp_path / "bad"), "--types", "2", "--objects", "3"]) == 2
    assert "at most one object per type" in capsys.readouterr().err
