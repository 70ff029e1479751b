"""Object discovery (nrc.assignment): codes with one shaded colour, the E step's targets and
pull, the M step, and objects mode's config."""
from __future__ import annotations

import pytest
import torch

from nrc.assignment import assignment_terms, code_colours, matching_error, most_redundant_code
from nrc.config import NRCConfig, SceneFrame, objects_mode, preset
from nrc.field import SHADE_OCTAVES, NRCModel

torch.set_num_threads(2)


def objects_model(seed: int = 0) -> NRCModel:
    torch.manual_seed(seed)
    config = objects_mode(preset("tiny"))
    config.model.hashgrid.n_levels = 4
    config.scenes = [SceneFrame("test", [0.0, 0.0, 0.0], 2.0)]
    return NRCModel(config, backend="torch")


def test_matching_picks_the_hue_not_the_shade():
    grey, red, green = (0.5, 0.5, 0.5), (0.8, 0.2, 0.2), (0.2, 0.7, 0.3)
    colours = torch.tensor([grey, red, green]).repeat_interleave(4, 0).reshape(3, 4, 3)
    # a dark red, a bright grey, a dark green and a red 4x darker than the red code (within 8x)
    target = torch.tensor([(0.4, 0.1, 0.1), (0.95, 0.95, 0.95), (0.05, 0.175, 0.075), (0.2, 0.05, 0.05)])
    error = matching_error(colours, target)
    assert error.shape == (4, 3)
    assert error.argmin(1).tolist() == [1, 0, 2, 1]
    assert float(error[3, 1]) < 1e-10  # a shade of the code's colour matches it exactly
    # beyond the octaves the shade is clamped: a red 64x darker than the code is not matched exactly
    assert float(matching_error(colours[:, :1], torch.tensor([(0.8, 0.2, 0.2)]) / 64)[0, 1]) > 1e-6


def test_brightness_variation_only_shades_a_code():
    """With colour_variation "brightness" a code's colour is its own logits (no colour MLP) and the
    variation scales it by 2^(octaves v): one code, one hue."""
    model = objects_model()
    decoder = model.decoder
    assert decoder.color_mlp is None and decoder.code_rgb.shape == (model.codebook.n_codes, 3)
    table = decoder.code_table(model.codebook.codes[:-1])
    geo = table[2:3, 1:].repeat(5, 1)
    v = torch.tensor([-1.0, -0.5, 0.0, 0.3, 0.6])[:, None]
    d = torch.nn.functional.normalize(torch.ones(5, 3), dim=-1)
    base = decoder.code_colour(geo, d)
    shaded = decoder.color(torch.cat([geo, v], -1), d)
    torch.testing.assert_close(shaded, (base * torch.exp2(SHADE_OCTAVES * v)).clamp(max=1.0))
    unclamped = shaded.max(1).values < 1.0
    chroma = shaded / shaded.sum(1, keepdim=True)
    torch.testing.assert_close(chroma[unclamped], chroma[unclamped][:1].expand(int(unclamped.sum()), 3))
    torch.testing.assert_close(code_colours(model, d)[2], base)


def test_e_step_pulls_points_to_the_code_that_explains_their_pixel():
    """Pixels painted in code k's colour: a few steps on the cross-entropy alone move their
    surface points' nearest code to k; the M step's error falls when it trains the decoder."""
    model = objects_model(1)
    model.train()
    g = torch.Generator().manual_seed(0)
    n = 256
    origins = torch.zeros(n, 3)
    directions = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    depth = torch.full((n,), 1.5)
    wanted = torch.randint(0, model.codebook.n_codes, (n,), generator=g)
    with torch.no_grad():
        target = code_colours(model, directions)[wanted, torch.arange(n)] * 0.5  # a shade of it

    def nearest() -> torch.Tensor:
        encoder = model.encoders[0]
        features, _ = encoder(encoder.normalise(origins + directions * depth[:, None]))
        from nrc.codebook import assignment_logits
        book = model.codebook
        return assignment_logits(features, book.codes, book.log_gates(), book.temperature)[:, :-1].argmax(1)

    before = float((nearest() == wanted).float().mean())
    optimizer = torch.optim.Adam(model.encoders.parameters(), lr=1e-2)
    for _ in range(60):
        optimizer.zero_grad()
        cross_entropy, colour = assignment_terms(model, 0, origins, directions, target, depth, with_colour=False)
        assert float(colour) == 0.0
        cross_entropy.backward()
        optimizer.step()
    after = float((nearest() == wanted).float().mean())
    assert after > 0.9 and after > before + 0.3, (before, after)

    target = torch.rand(n, 3, generator=g) * 0.6 + 0.2  # colours no code has yet
    optimizer = torch.optim.Adam(model.decoder.parameters(), lr=5e-2)  # a colour is 3 logits: bigger steps
    errors = []
    for _ in range(40):
        optimizer.zero_grad()
        _, colour = assignment_terms(model, 0, origins, directions, target, depth)
        colour.backward()
        optimizer.step()
        errors.append(float(colour.detach()))
    assert errors[-1] < 0.5 * errors[0], errors


def test_objects_mode_config_round_trips_and_old_runs_keep_their_architecture():
    config = objects_mode(preset("tiny"))
    assert NRCConfig.from_dict(config.to_dict()) == config
    assert config.architecture()["model"]["colour_variation"] == "brightness"
    plain = preset("tiny")
    assert "colour_variation" not in plain.architecture()["model"]  # as runs saved before it existed
    assert "surface_density_floor" not in plain.architecture()["model"]
    assert config.architecture()["model"]["surface_density_floor"] > 0
    saved = config.to_dict()
    saved["model"]["colour_variation"] = "mlp"
    with pytest.raises(ValueError, match="need model.colour_variation 'brightness'"):
        NRCConfig.from_dict(saved)
    saved["model"]["colour_variation"] = "hue"
    with pytest.raises(ValueError, match="must be 'mlp' or 'brightness'"):
        NRCConfig.from_dict(saved)


def test_objects_mode_codes_are_stuff_not_fog():
    """However low a surface code's density logit, it keeps the floor; the empty code alone is free space."""
    model = objects_model()
    floor = model.config.model.surface_density_floor
    table = model.decoder.code_table(model.codebook.codes[:-1]).detach().clone()
    table[:, 0] = torch.linspace(-40.0, 2.0, len(table))
    density = model.decoder.code_density(table)
    assert floor > 0 and bool((density >= floor).all())
    assert float(density[0]) == pytest.approx(floor)
    points = torch.rand(500, 3) - 0.5
    out = model.query(0, points, None)
    empty = out.assignment.empty
    assert bool((out.sigma[~empty] >= floor * torch.exp(torch.tensor(-model.config.model.density_variation)) - 1e-5).all())
    assert bool((out.sigma[empty] == 0).all())


def redundant_code_reference(error: torch.Tensor, open_codes: torch.Tensor) -> tuple[int, float]:
    """most_redundant_code written out: per open code, its pixels' mean rise to their next open code."""
    means = {}
    for k in open_codes.nonzero(as_tuple=True)[0].tolist():
        rises = []
        for row in error:
            ranked = sorted((float(row[j]), j) for j in open_codes.nonzero(as_tuple=True)[0].tolist())
            if ranked[0][1] == k:
                rises.append(ranked[1][0] - ranked[0][0])
        means[k] = sum(rises) / len(rises) if rises else 0.0
    k = min(means, key=means.get)
    return k, means[k]


def test_the_redundant_code_is_a_duplicate_hue_not_a_rare_one():
    """Colour pruning (objects mode): of two codes of one hue one goes; a code that few pixels pick
    but that alone matches them stays (the mean rise, not the sum); matches its reference."""
    grey, grey2, red, blue = (0.5, 0.5, 0.5), (0.505, 0.5, 0.495), (0.8, 0.2, 0.2), (0.2, 0.3, 0.8)
    g = torch.Generator().manual_seed(0)
    shades = lambda c, n: torch.tensor(c) * (0.5 + torch.rand(n, 1, generator=g))  # noqa: E731
    target = torch.cat([shades(grey, 60), shades(red, 3), shades(blue, 40)]).clamp(max=1.0)
    colours = torch.tensor([grey, red, grey2, blue])[:, None, :].expand(4, len(target), 3)
    error = matching_error(colours, target)
    open_codes = torch.ones(4, dtype=torch.bool)
    k, rise = most_redundant_code(error, open_codes)
    assert k in (0, 2) and rise < 3e-4
    assert (k, pytest.approx(rise, abs=1e-7)) == redundant_code_reference(error, open_codes)
    # Without the second grey: the red code's 3 pixels would cost least in total, but it stays.
    distinct = torch.tensor([True, True, False, True])
    values, index = error[:, distinct].topk(2, 1, largest=False)
    totals = torch.zeros(3).index_add_(0, index[:, 0], values[:, 1] - values[:, 0])
    assert int(totals.argmin()) == 1  # red, among (grey, red, blue)
    k, rise = most_redundant_code(error, distinct)
    assert k != 1 and (k, pytest.approx(rise, abs=1e-7)) == redundant_code_reference(error, distinct)


def test_colour_pruning_closes_a_duplicate_code_during_a_fit(tiny_world):
    from nrc.code_upkeep import prune_codes
    from nrc.data import RayBank, load_scene_data

    model = objects_model()
    config = model.config
    config.train.steps, config.train.code_restart_every = 100, 20
    model.decoder.view_dependence = 0.0
    with torch.no_grad():
        hues = torch.tensor([(2.0, -2, -2), (2.0, -2, -2), (-2, 2.0, -2), (-2, -2, 2.0), (2.0, 2, -2), (-2, 2.0, 2),
                             (2.0, -2, 2), (0.0, 0, 0)])
        model.decoder.code_rgb.copy_(hues)
    banks = [RayBank(load_scene_data(tiny_world.root, 16, 8, part="train").views)]
    assert config.train.code_prune_colour > 0 and config.train.code_prune_tolerance == 0
    assert prune_codes(model, banks, config, 40, "cpu") is None  # restarts still run until half-way
    closed = prune_codes(model, banks, config, 60, "cpu")
    assert closed in (0, 1) and bool(model.codebook.closed[closed]) and int(model.codebook.active().sum()) == 7
    config.train.code_prune_colour = 0.0
    assert prune_codes(model, banks, config, 80, "cpu") is None
