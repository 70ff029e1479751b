"""Proposal sampling: the interval arithmetic against written-out references, and a proposal that
knows the surface lets a few radiance-field samples render what many uniform ones do."""
from __future__ import annotations

import math

import pytest
import torch

from nrc.config import SceneFrame, preset
from nrc.field import NRCModel
from nrc.proposal import covering_weights, covering_weights_reference, interlevel_loss, pdf_edges
from nrc.rendering import march_rays, render_rays

torch.set_num_threads(2)


def random_intervals(generator, rays: int, n: int, closed: bool = False) -> torch.Tensor:
    edges = torch.sort(torch.rand(rays, n + 1, generator=generator), -1).values
    if closed:
        edges[:, 0], edges[:, -1] = 0.0, 1.0
    return edges


def test_covering_weights_match_the_pairwise_overlap_reference():
    g = torch.Generator().manual_seed(0)
    for n, m in [(7, 11), (16, 48), (40, 8)]:
        edges, env = random_intervals(g, 64, n), random_intervals(g, 64, m, closed=True)
        w = torch.rand(64, m, generator=g)
        torch.testing.assert_close(covering_weights(edges, env, w), covering_weights_reference(edges, env, w))
        torch.testing.assert_close(covering_weights(env, env, w), w)  # an interval covers itself, no more


def test_pdf_edges_are_ordered_stay_in_range_and_crowd_where_the_weight_is():
    g = torch.Generator().manual_seed(1)
    edges = torch.linspace(0, 1, 49).expand(32, 49)
    weights = torch.full((32, 48), 1e-4)
    weights[:, 30] = 1.0  # all the mass in [30/48, 31/48]
    for stratified in (False, True):
        drawn = pdf_edges(edges, weights, 16, stratified=stratified, generator=g)
        assert drawn.shape == (32, 17)
        assert bool((drawn[:, 1:] >= drawn[:, :-1]).all()) and bool(((drawn >= 0) & (drawn <= 1)).all())
        inside = ((drawn >= 30 / 48) & (drawn <= 31 / 48)).float().mean()
        assert inside > 0.8, inside
    uniform = pdf_edges(edges, torch.ones(32, 48), 16, stratified=False)
    torch.testing.assert_close(uniform, ((torch.arange(17) + 0.5) / 17).expand(32, 17))


def test_interlevel_loss_is_zero_when_covered_and_only_trains_the_proposal():
    g = torch.Generator().manual_seed(2)
    env = torch.linspace(0, 1, 33).expand(8, 33)
    env_w = torch.rand(8, 32, generator=g).requires_grad_()
    fine = pdf_edges(env, env_w, 12, stratified=True, generator=g)
    target = torch.rand(8, 12, generator=g) * 1e-3  # far below what the envelope holds
    assert float(interlevel_loss(fine, target, env, env_w).detach().abs().max()) == 0.0
    target = torch.rand(8, 12, generator=g).requires_grad_()
    missing = torch.zeros(8, 32, requires_grad=True)  # a proposal that saw nothing
    loss = interlevel_loss(fine, target, env, missing).sum()
    assert loss > 0
    loss.backward()
    assert target.grad is None and missing.grad is not None and float(missing.grad.abs().sum()) > 0


def ball_model(proposal_samples: int, n_samples: int, proposal_knows: bool = True) -> NRCModel:
    """A tiny model whose radiance field is a small opaque ball (a tenth of the scene
    radius: uniform samples a few per radius apart land in it late), and whose proposal (when it
    has one) knows the ball's density exactly, or is an untrained ``ProposalField``."""
    torch.manual_seed(0)
    config = preset("tiny")
    config.model.hashgrid.n_levels = 4
    config.sampler.n_samples, config.sampler.proposal_samples = n_samples, proposal_samples
    config.scenes = [SceneFrame("test", [0.0, 0.0, 0.0], 2.0)]
    model = NRCModel(config).eval()
    query = model.query

    def ball(x):
        return 300.0 * torch.sigmoid(80 * (0.1 - (x - torch.tensor([0.02, 0.0, 0.2])).norm(dim=-1)))

    def ball_field(scene, x, directions):  # the untrained model's colours and codes
        out = query(scene, x, directions)
        out.sigma = ball(x)
        return out

    model.query = ball_field
    if proposal_samples and proposal_knows:
        model.encoders[0].proposal.forward = ball
    return model


def ball_rays(n: int = 256):
    g = torch.Generator().manual_seed(3)
    origins = torch.tensor([0.0, 0.0, -1.8]).expand(n, 3)
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=g) * 0.1 + torch.tensor([0.0, 0.0, 1.0]), dim=-1)
    return origins, dirs


def test_a_proposal_that_knows_the_surface_needs_few_radiance_samples():
    origins, dirs = ball_rays()
    outputs = ("depth", "accumulation")
    with torch.no_grad():
        reference = render_rays(ball_model(0, 512), 0, origins, dirs, use_occupancy=False, outputs=outputs)
        uniform = render_rays(ball_model(0, 16), 0, origins, dirs, use_occupancy=False, outputs=outputs)
        proposed = render_rays(ball_model(24, 16), 0, origins, dirs, use_occupancy=False, outputs=outputs)
    hit = reference["accumulation"] > 0.99
    assert 0.2 < float(hit.float().mean()) < 0.95
    assert float(proposed["accumulation"][hit].mean()) > 0.95
    error = {name: float((out["depth"] - reference["depth"])[hit].abs().median())
             for name, out in (("uniform", uniform), ("proposed", proposed))}
    assert error["proposed"] < 0.005 < 0.05 < error["uniform"], error  # world units; the scene radius is 2
    assert proposed["n_evaluated"] == uniform["n_evaluated"] == 256 * 16


def test_the_interlevel_loss_teaches_the_proposal_where_the_surface_is():
    origins, dirs = ball_rays()
    with torch.no_grad():
        reference = render_rays(ball_model(0, 512), 0, origins, dirs, use_occupancy=False, outputs=("depth", "accumulation"))
    hit = reference["accumulation"] > 0.99
    model = ball_model(24, 16, proposal_knows=False).train()
    proposal = model.encoders[0].proposal
    optimizer = torch.optim.Adam(proposal.parameters(), lr=1e-2)

    def depth_error() -> float:
        with torch.no_grad():
            depth = render_rays(model, 0, origins, dirs, use_occupancy=False, outputs=("depth",))["depth"]
        return float((depth - reference["depth"])[hit].abs().median())

    before = depth_error()
    g = torch.Generator().manual_seed(4)
    for _ in range(60):
        out = render_rays(model, 0, origins, dirs, stratified=True, generator=g, use_occupancy=False,
                          outputs=("interlevel",))
        optimizer.zero_grad()
        out["interlevel"].mean().backward()
        optimizer.step()
    after = depth_error()
    assert after < 0.005 < 0.05 < before, (before, after)  # world units; the scene radius is 2


def test_marching_with_a_proposal_matches_its_full_render():
    origins, dirs = ball_rays()
    model = ball_model(64, 24)
    outputs = ("rgb", "depth", "codes")
    with torch.no_grad():
        full = render_rays(model, 0, origins, dirs, use_occupancy=False, outputs=outputs)
        marched = march_rays(model, 0, origins, dirs, outputs=outputs, min_transmittance=1e-4)
    for k in outputs:
        torch.testing.assert_close(marched[k], full[k], rtol=1e-3, atol=2e-3 * (2.0 if k == "depth" else 1))



def test_a_field_trained_without_the_grid_renders_without_it():
    """With a proposal field training leaves the occupancy grid out, so by default rendering does
    too: an empty grid changes nothing then, and culls everything when asked to."""
    origins, dirs = ball_rays()
    model = ball_model(64, 24)
    assert not model.config.sampler.culls_in_training
    model.encoders[0].occupancy.occupied.zero_()
    with torch.no_grad():
        default = march_rays(model, 0, origins, dirs, outputs=("rgb", "depth"))
        full = render_rays(model, 0, origins, dirs, use_occupancy=False, outputs=("rgb", "depth"))
        culled = march_rays(model, 0, origins, dirs, outputs=("rgb", "depth"), use_occupancy=True)
    torch.testing.assert_close(default["depth"], full["depth"], rtol=1e-3, atol=4e-3)
    assert culled["accumulation"].max() == 0 and default["accumulation"].max() > 0.5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_gpu_preset_fits_and_renders_on_cuda(tiny_world, tmp_path):
    """The gpu preset's path (Triton hash grids, the proposal field, bf16 autocast) on a GPU: a few
    steps give finite numbers and a held-out evaluation."""
    from nrc.evaluate import evaluate_run
    from nrc.trainer import fit

    config = preset("gpu")
    assert config.sampler.proposal_samples > 0
    config.train.steps, config.train.seconds, config.train.batch_rays, config.train.image_height = 20, None, 1024, 32
    result = fit([tiny_world.root], tmp_path / "run", config, device="cuda", progress=False)
    assert result.step == 20 and all(math.isfinite(h["psnr"]) for h in result.history if "psnr" in h)
    mean = evaluate_run(tmp_path / "run", device="cuda")["scenes"][0]["mean"]
    assert math.isfinite(mean["psnr"]) and mean["psnr"] > mean["baseline_psnr"] - 3
