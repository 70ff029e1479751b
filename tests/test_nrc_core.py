"""NRC building blocks: each fast path against its reference, plus the metrics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ingest import conventions as cv
from nrc.codebook import Codebook, assignment_logits, nearest_code_reference
from nrc.config import SceneFrame, preset
from nrc.data import Camera, camera_rays, pixel_solid_angle_weights
from nrc.field import NRCModel, spherical_harmonics_deg2
from nrc.metrics import (adjusted_rand_index, adjusted_rand_index_reference, chamfer_distance, foreground_ari,
                         kmeans_labels, psnr)
from nrc.rendering import (distortion_loss, distortion_loss_reference, march_rays, render_rays, render_view,
                           volume_weights, volume_weights_reference)
from nrc.sampling import OccupancyGrid, contract, s_from_t, sample_along_rays, t_from_s, uncontract

torch.set_num_threads(2)


def tiny_model(seed: int = 0, **sampler) -> NRCModel:
    torch.manual_seed(seed)
    config = preset("tiny")
    config.model.hashgrid.n_levels = 4
    for k, v in sampler.items():
        setattr(config.sampler, k, v)
    config.scenes = [SceneFrame("test", [0.0, 0.0, 0.0], 2.0)]
    return NRCModel(config, backend="torch")


def test_volume_weights_match_front_to_back_loop():
    g = torch.Generator().manual_seed(0)
    sigma = torch.rand(64, 40, generator=g) * torch.tensor([0.0, 5.0, 50.0]).repeat_interleave(64 // 3 + 1)[:64, None]
    deltas = torch.rand(64, 40, generator=g) * 0.1
    fast, ref = volume_weights(sigma, deltas), volume_weights_reference(sigma, deltas)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
    assert float(fast.sum(1).max()) <= 1 + 1e-5
    # An opaque first sample takes all the weight.
    opaque = volume_weights(torch.tensor([[1e4, 1.0, 1.0]]), torch.ones(1, 3))
    torch.testing.assert_close(opaque, torch.tensor([[1.0, 0.0, 0.0]]))


def test_distortion_loss_matches_double_sum_and_prefers_compact_weights():
    g = torch.Generator().manual_seed(0)
    edges = torch.sort(torch.rand(16, 25, generator=g), -1).values
    weights = torch.rand(16, 24, generator=g) / 24
    torch.testing.assert_close(distortion_loss(weights, edges), distortion_loss_reference(weights, edges))
    uniform_edges = torch.linspace(0, 1, 25).expand(1, 25)
    spread = torch.full((1, 24), 1 / 24)
    compact = torch.zeros(1, 24)
    compact[0, 10] = 1.0
    assert float(distortion_loss(compact, uniform_edges)) < float(distortion_loss(spread, uniform_edges)) / 5


def test_gate_cost_charges_only_rarely_used_codes():
    book = Codebook(n_codes=4, code_dim=2)
    usage = torch.tensor([0.6, 0.39, 0.01, 0.0])
    cost = book.gate_cost(usage, min_share=0.02)
    cost.backward()
    grad = book.gate_logits.grad
    assert float(grad[0]) == 0 and float(grad[1]) == 0  # codes that render enough are free
    assert 0 < float(grad[2]) < float(grad[3])  # the less used, the more a code pays
    torch.testing.assert_close(cost, book.gates()[2] * 0.5 + book.gates()[3])


def test_contraction_is_inverted_and_bounded():
    x = torch.randn(2000, 3, dtype=torch.float64) * torch.logspace(-2, 3, 2000, dtype=torch.float64)[:, None]
    y = contract(x)
    assert float(y.abs().max()) < 2
    inner = x.abs().amax(-1) <= 1
    torch.testing.assert_close(y[inner], x[inner])
    ok = y.abs().amax(-1) < 1.999  # far points lose precision near the cube's edge
    torch.testing.assert_close(uncontract(y[ok]), x[ok], rtol=1e-6, atol=1e-9)


def test_s_space_samples_are_ordered_and_reach_far():
    t = torch.logspace(-3, 3, 100, dtype=torch.float64)
    torch.testing.assert_close(t_from_s(s_from_t(t)), t, rtol=1e-5, atol=0)
    edges, mids = sample_along_rays(8, 16, 0.01, 1000.0, stratified=True, generator=torch.Generator().manual_seed(1))
    assert torch.all(edges[:, 1:] > edges[:, :-1])
    assert torch.all((mids > edges[:, :-1]) & (mids < edges[:, 1:]))
    assert math.isclose(float(edges[0, 0]), 0.01, rel_tol=1e-5) and math.isclose(float(edges[0, -1]), 1000.0, rel_tol=1e-3)
    # Linear in distance inside the foreground, linear in disparity outside: half the samples each.
    assert int((mids[0] <= 1).sum()) in (7, 8, 9)


def test_assignment_logits_match_per_code_reference():
    g = torch.Generator().manual_seed(2)
    h, codes, log_gates = torch.randn(100, 8, generator=g), torch.randn(6, 8, generator=g), -torch.rand(6, generator=g)
    torch.testing.assert_close(assignment_logits(h, codes, log_gates, 0.5),
                               nearest_code_reference(h, codes, log_gates, 0.5), rtol=1e-4, atol=1e-4)


def test_codebook_straight_through_and_gates():
    torch.manual_seed(0)
    book = Codebook(n_codes=5, code_dim=4, variation_dim=2)
    surface = book.codes.detach()[:5]
    h = surface[torch.tensor([0, 1, 2, 3, 4, 2])] + 0.01 * torch.randn(6, 4)
    h = torch.cat([h, book.codes.detach()[5:] + 0.01 * torch.randn(1, 4)])  # the last point sits on the empty code
    h.requires_grad_(True)
    book.train()
    out = book(h)
    assert out.index[:6].tolist() == [0, 1, 2, 3, 4, 2]  # nearest code wins
    assert out.empty.tolist() == [False] * 6 + [True]
    # Forward: exactly one hard code per point; the variation is bounded.
    torch.testing.assert_close(out.probs.detach(), torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3, 4, 2, 5]), 6).float())
    assert out.variation.shape == (7, 3) and float(out.variation.detach().abs().max()) <= 1
    # ... and gradients reach the features, the codes and the gates through the soft path.
    (out.probs @ torch.arange(6.0) + out.variation.sum(-1)).sum().backward()
    assert h.grad is not None and float(h.grad.abs().sum()) > 0
    assert float(book.gate_logits.grad.abs().sum()) > 0
    # A closed gate never wins, even for a feature sitting on its code; nor does a pruned code.
    with torch.no_grad():
        book.gate_logits[2] = -10.0
    book.closed[4] = True
    book.eval()
    index = book(h.detach()).index.tolist()
    assert 2 not in index and 4 not in index
    assert int(book.active().sum()) == 3


def test_fast_codebook_and_decoder_match_their_written_out_forms():
    """The straight-through one-hot, the factored density exp and the per-ray view term give the
    values and gradients of the plain formulas: hard + soft - soft.detach(); sum_k p_k exp(a_k + v);
    view_head(cat([geo, sh(d)])) per point."""
    model = tiny_model(3)
    model.train()
    book, decoder = model.codebook, model.decoder
    book.closed[1] = True
    h = (0.3 * torch.randn(400, book.codes.shape[1])).requires_grad_(True)
    rays = torch.randint(0, 50, (400,))
    d = torch.nn.functional.normalize(torch.randn(50, 3), dim=-1)

    def plain(features):
        logits = assignment_logits(features, book.codes, book.log_gates(), book.temperature)
        shut = torch.cat([book.closed, book.closed.new_zeros(1)])
        slot = logits.masked_fill(~book.open_mask(), float("-inf")).argmax(-1)
        hard = torch.nn.functional.one_hot(slot, len(book.codes)).float()
        soft = torch.softmax(logits.masked_fill(shut, float("-inf")), -1)
        probs = hard + soft - soft.detach()
        variation = torch.tanh(book.variation(features))
        table = decoder.code_table(book.codes[:-1])
        log_sigma = table[:, 0] + 1.0 + decoder.density_variation * variation[:, :1]
        sigma = (probs[:, :-1] * torch.exp(log_sigma)).sum(-1)
        geo = torch.cat([probs[:, :-1] @ table[:, 1:], variation[:, 1:]], -1)
        view = decoder.view_head(torch.cat([geo[:, :decoder.geo_dim], spherical_harmonics_deg2(d[rays])], -1))
        rgb = torch.sigmoid(decoder.color_mlp(geo) + decoder.view_dependence * torch.tanh(view))
        return probs, sigma, rgb

    def fast(features):
        a = book(features)
        sigma, geo = decoder.density(a, decoder.code_table(book.codes[:-1]))
        return a.probs, sigma, decoder.color(geo, d, rays)

    weights = [torch.randn(400, len(book.codes)), torch.rand(400), torch.randn(400, 3)]
    results = []
    for fn in (plain, fast):
        model.zero_grad()
        h.grad = None
        outs = fn(h)
        sum((w * o).sum() for w, o in zip(weights, outs)).backward()
        results.append(([o.detach() for o in outs], h.grad.clone(), [p.grad.clone() for p in model.parameters()
                                                                      if p.grad is not None]))
    (ref_out, ref_h, ref_p), (out, grad_h, grad_p) = results
    for a, b in zip(ref_out + [ref_h] + ref_p, out + [grad_h] + grad_p):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_codes_read_only_the_coarse_levels_and_the_variation_reads_all():
    """With code_levels, a change in a fine level's table moves the variation, never the code features."""
    torch.manual_seed(0)
    config = preset("tiny")
    config.model.code_levels = 2
    config.scenes = [SceneFrame("test", [0.0, 0.0, 0.0], 2.0)]
    encoder = NRCModel(config).encoders[0]
    x = torch.rand(300, 3) * 2 - 1
    code, detail = encoder(x)
    assert code.shape == detail.shape == (300, config.model.code_dim)
    spec = encoder.hashgrid.spec
    with torch.no_grad():  # the finest level's entries
        encoder.hashgrid.table[spec.offsets[-2] * spec.n_features_per_level:] += 0.5
    code2, detail2 = encoder(x)
    torch.testing.assert_close(code2, code)
    assert float((detail2 - detail).detach().abs().max()) > 1e-3
    config.model.code_levels = None  # every level: one feature tensor for both
    code, detail = NRCModel(config).encoders[0](x)
    assert code is detail
    saved = config.to_dict()
    saved["model"]["code_levels"] = 99  # a hand-edited config.json: refused when read, not at model build
    with pytest.raises(ValueError, match="code_levels must be in 1..8"):
        type(config).from_dict(saved)


def test_assignment_in_fp32_under_bf16_autocast():
    """Under CPU bf16 autocast the assignment equals fp32's; the same distances computed with
    autocast on (the old code) flip some, so this data can tell the two apart."""
    g = torch.Generator().manual_seed(0)
    book = Codebook(n_codes=16, code_dim=16)
    with torch.no_grad():
        book.codes.copy_(torch.randn(17, 16, generator=g))
    h = book.codes.detach()[torch.randint(17, (50_000,), generator=g)] + torch.randn(50_000, 16, generator=g)
    book.eval()
    with torch.no_grad():
        reference = book(h)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = book(h)
            naive = (-(h**2).sum(-1, keepdim=True) + 2 * h @ book.codes.T - (book.codes**2).sum(-1)).argmax(-1)
    slot = torch.where(reference.empty, 16, reference.index)
    assert torch.equal(mixed.index, reference.index) and torch.equal(mixed.empty, reference.empty)
    assert int((naive != slot).sum()) > 0  # bf16 distances do flip assignments


def test_occupancy_culling_matches_full_evaluation():
    model = tiny_model(n_samples=32, occupancy_resolution=16).eval()
    query = model.query

    def ball_only(scene, x, directions):  # density only inside a ball: most cells are empty
        out = query(scene, x, directions)
        out.sigma = out.sigma * (x.norm(dim=-1) < 0.5)
        return out

    model.query = ball_only
    torch.manual_seed(0)
    origins = torch.randn(128, 3) * 0.2
    dirs = torch.nn.functional.normalize(torch.randn(128, 3), dim=-1)
    with torch.no_grad():
        full = render_rays(model, 0, origins, dirs, use_occupancy=False, outputs=("rgb", "depth", "codes"))
        grid = model.encoders[0].occupancy
        _, t_mid = sample_along_rays(128, 32, model.config.sampler.near, model.config.sampler.far, stratified=False)
        pts = (model.encoders[0].normalise(origins)[:, None] + dirs[:, None] * t_mid[..., None]).reshape(-1, 3)
        occupied = torch.zeros_like(grid.occupied)
        occupied[grid.cell_index(contract(pts))[model.density(0, pts) > 0]] = True
        grid.occupied.copy_(occupied)
        culled = render_rays(model, 0, origins, dirs, outputs=("rgb", "depth", "codes"))
    assert culled["n_evaluated"] < full["n_evaluated"] / 2
    for k in ("rgb", "depth", "codes"):
        torch.testing.assert_close(culled[k], full[k], rtol=1e-5, atol=1e-6)


def test_early_termination_matches_full_march_and_skips_hidden_samples():
    model = tiny_model(n_samples=48, occupancy_resolution=16).eval()
    query = model.query

    def opaque_ball(scene, x, directions):  # a dense ball: rays that hit it are done
        out = query(scene, x, directions)
        out.sigma = out.sigma * 0.01 + 500.0 * (x.norm(dim=-1) < 0.4)
        return out

    model.query = opaque_ball
    torch.manual_seed(1)
    origins = model.encoders[0].center + torch.tensor([0.0, 0.0, -0.9]) * model.encoders[0].radius
    origins = origins.expand(256, 3)
    dirs = torch.nn.functional.normalize(torch.randn(256, 3) * 0.1 + torch.tensor([0.0, 0.0, 1.0]), dim=-1)
    outputs = ("rgb", "depth", "codes")
    with torch.no_grad():
        full = render_rays(model, 0, origins, dirs, use_occupancy=False, outputs=outputs)
        marched = march_rays(model, 0, origins, dirs, outputs=outputs, min_transmittance=1e-4)
    assert marched["n_evaluated"] < full["n_evaluated"] / 2
    for k in outputs:
        torch.testing.assert_close(marched[k], full[k], rtol=1e-3, atol=2e-3 * (model.encoders[0].radius if k == "depth" else 1))


def test_baked_preview_matches_full_render_of_a_smooth_field():
    from nrc.baked import bake

    model = tiny_model(n_samples=48, occupancy_resolution=16).eval()
    query = model.query

    def soft_ball(scene, x, directions):  # smooth density and colour: a grid can hold them
        out = query(scene, x, directions)
        out.sigma = 20.0 * torch.sigmoid(10 * (0.5 - x.norm(dim=-1)))
        out.rgb = torch.sigmoid(x * 2).expand_as(out.rgb) if out.rgb is not None else None
        return out

    model.query = soft_ball
    center, radius = model.encoders[0].center, float(model.encoders[0].radius)
    c2w = cv.make_pose(np.eye(3), (center + torch.tensor([0.0, 0.0, -0.95 * radius])).numpy())
    K = cv.Intrinsics.from_fov(24, 24, 60)
    full = render_view(model, c2w, K, ("rgb", "depth", "codes"))
    coarse = render_view(model, c2w, K, ("rgb", "depth", "codes"), baked=bake(model, 0, 16))
    fine = render_view(model, c2w, K, ("rgb", "depth", "codes"), baked=bake(model, 0, 64))
    assert psnr(fine["rgb"], full["rgb"]) > 30
    assert psnr(fine["rgb"], full["rgb"]) > psnr(coarse["rgb"], full["rgb"])
    assert float(np.median(np.abs(fine["depth"] - full["depth"]) / full["depth"])) < 0.03
    assert fine["segmentation"].shape == (24, 24)


def test_occupancy_update_marks_dense_cells():
    grid = OccupancyGrid(8)
    # Density only inside the unit ball of normalised space.
    grid.update(lambda x: (x.norm(dim=-1) < 1.0).float() * 100, step_size=0.02, alpha_threshold=0.01, decay=0.95,
                generator=torch.Generator().manual_seed(0))
    assert bool(grid.query(torch.zeros(1, 3))[0])
    assert not bool(grid.query(torch.tensor([[5.0, 5.0, 5.0]]))[0])
    assert 0 < grid.occupied_fraction() < 0.2


def test_render_view_is_chunk_invariant_and_shaped():
    model = tiny_model(n_samples=16)
    c2w = cv.make_pose(cv.rotation_from_ypr(np.float64(0.3), np.float64(0.1), np.float64(0)), np.array([0.1, 0, 0]))
    a = render_view(model, c2w, 8, chunk=37)
    b = render_view(model, c2w, (8, 16), chunk=10_000)
    assert a["rgb"].shape == (8, 16, 3) and a["depth"].shape == (8, 16) and a["codes"].shape == (8, 16, 8)
    assert a["segmentation"].shape == (8, 16)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5)
    K = cv.Intrinsics.from_fov(12, 10, 60)
    assert render_view(model, c2w, K, outputs=("rgb",))["rgb"].shape == (10, 12, 3)
    with pytest.raises(ValueError, match="unknown outputs"):
        render_view(model, c2w, 8, outputs=("normals",))


def test_equirect_rays_follow_conventions():
    cam = Camera.equirect(np.eye(4), 4)
    origins, dirs = camera_rays(cam)
    np.testing.assert_allclose(dirs.reshape(4, 8, 3), cv.equirect_directions(4, 8), atol=1e-12)
    w = pixel_solid_angle_weights(cam).reshape(4, 8)
    assert w[0, 0] < w[1, 0] and np.allclose(w[0], w[3])  # poles weigh less, symmetric about the equator


def test_ari_matches_pair_counting_reference():
    rng = np.random.default_rng(0)
    for _ in range(5):
        a, b = rng.integers(0, 4, 60), rng.integers(0, 3, 60)
        assert math.isclose(adjusted_rand_index(a, b), adjusted_rand_index_reference(a, b), abs_tol=1e-12)
    a = rng.integers(0, 5, 200)
    assert adjusted_rand_index(a, (a + 3) % 5) == pytest.approx(1.0)  # label names do not matter
    assert abs(adjusted_rand_index(a, rng.integers(0, 5, 200))) < 0.1
    ids = np.array([0, 0, 0, 1, 1, 2, 2])
    assert foreground_ari(ids, np.array([5, 6, 7, 1, 1, 2, 2])) == pytest.approx(1.0)  # background ignored


def test_kmeans_finds_separated_clusters_and_is_seeded():
    """The bench's appearance reference (bench/nrc_objects.py): blobs far apart come out as they were
    drawn, the same seed gives the same labels, and k is an upper bound."""
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 400)
    centres = np.array([[0.1, 0.1, 0.1], [0.9, 0.2, 0.2], [0.2, 0.9, 0.3], [0.3, 0.3, 0.9]])
    points = centres[truth] + rng.normal(0, 0.02, (400, 3))
    labels = kmeans_labels(points, 4, seed=3)
    assert adjusted_rand_index(truth, labels) == pytest.approx(1.0)
    np.testing.assert_array_equal(labels, kmeans_labels(points, 4, seed=3))
    assert len(np.unique(kmeans_labels(np.zeros((10, 3)), 4))) == 1  # one distinct value: one cluster


def _bench_module(name: str):
    import importlib.util
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "bench"
    sys.path.insert(0, str(bench))  # the cues script imports its sibling nrc_objects
    try:
        spec = importlib.util.spec_from_file_location(name, bench / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(bench))
    return module


def test_object_cues_see_curvature_and_pool_instances():
    """bench/nrc_objects_cues.py: the true-curvature cue is 0 on a plane and not on a sphere, and
    colour pooled over instances tells types apart by hue, not by brightness."""
    from types import SimpleNamespace

    cues = _bench_module("nrc_objects_cues")
    camera = Camera.equirect(np.eye(4), 16)
    _, directions = camera_rays(camera)
    down = directions[:, 1].reshape(16, 32)  # ingest.conventions: +y points down
    floor = SimpleNamespace(camera=camera, depth=np.where(down > 0.05, 1 / down.clip(0.05), 20.0))
    sphere = SimpleNamespace(camera=camera, depth=np.full((16, 32), 2.0))
    assert np.abs(cues.normal_spread(floor)[11:14, 2:-2]).max() < 1e-6
    assert cues.normal_spread(sphere)[4:12].min() > 1e-3

    ids = np.zeros((4, 6), np.int64)
    ids[:, 0:2], ids[:, 2:4], ids[:, 4:6] = 1, 2, 3

    def frame(colours):
        rgb = np.zeros((4, 6, 3), np.uint8)
        for t, colour in colours.items():
            rgb[ids == t] = colour
        return SimpleNamespace(ids=ids, rgb=rgb)

    red, blue, dark_blue, green = (200, 40, 40), (40, 40, 200), (20, 20, 100), (40, 200, 40)
    assert cues.instance_pooled([frame({1: red, 2: blue, 3: green})] * 3) == pytest.approx(1.0)
    merged = foreground_ari(ids, ids.clip(max=2))  # the two blues as one type
    assert cues.instance_pooled([frame({1: red, 2: blue, 3: dark_blue})] * 3) == pytest.approx(merged)
    assert merged < 0.6


def test_psnr_and_chamfer():
    img = np.zeros((4, 4, 3))
    assert psnr(img + 0.1, img) == pytest.approx(20 * np.log10(255 / 26))  # 0.1 is saved as level 26
    a = np.stack(np.meshgrid(*[np.arange(8) * 0.1] * 3, indexing="ij"), -1).reshape(-1, 3)
    assert chamfer_distance(a, a) == 0.0
    assert chamfer_distance(a, a + [0.01, 0, 0]) == pytest.approx(0.01, rel=1e-6)
