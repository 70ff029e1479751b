"""Fitting an NRC model to one or more scenes, resumable at any save.

Everything random in step ``k`` is drawn from a generator seeded with ``(seed, k)``, and the
checkpoint holds the model, the occupancy grids and the optimizer's moments, so a run killed
after save ``s`` and resumed continues exactly as if it had not been killed (on one device).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch._dynamo  # noqa: F401  (Adam imports it on first use, seconds on a busy CPU: not inside a fit's budget)

from ingest.errors import OdinError
from ingest.runlock import contents, run_lock
from nrc import checkpoint as ckpt
from nrc.assignment import assignment_terms
from nrc.config import NRCConfig
from nrc.code_upkeep import prune_codes, restart_dead_codes
from nrc.determinism import deterministic_on_cpu, step_generator
from nrc.budget import Budget
from nrc.data import RayBank, SceneData, View, auto_scene_frame, load_scene_data, scene_batches
from nrc.field import NRCModel
from nrc.native import load_cpu_kernels
from nrc.plots import colorize_depth, colorize_labels, line_plot, panel, write_png
from nrc.rendering import autocast_for, render_rays, render_view
from nrc.sampling import visible_cells


@dataclass
class FitResult:
    run_dir: Path
    step: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    steps_trained: int = 0  # by this call (a resumed run started later)


def psnr_from_mse(mse: float) -> float:
    return float(-10 * math.log10(max(mse, 1e-12)))


def learning_rate(config: NRCConfig, step: int) -> float:
    t = min(step / max(1, config.train.steps), 1.0)
    return config.train.lr * config.train.lr_final_fraction ** t


def make_optimizer(model: NRCModel, lr: float) -> torch.optim.Adam:
    tables = [p for n, p in model.named_parameters() if n.endswith("hashgrid.table")]
    others = [p for n, p in model.named_parameters() if not n.endswith("hashgrid.table")]
    # instant-ngp's Adam: tiny eps so rarely-touched hash entries still move. Fused: one pass over the
    # tables instead of a dozen (a 2.5M-entry table took 16.6 ms per step on 2 cores, fused 1.7 ms).
    fused = all(p.device.type in ("cpu", "cuda") for p in tables + others)
    return torch.optim.Adam([{"params": tables}, {"params": others}], lr=lr, betas=(0.9, 0.99), eps=1e-15,
                            fused=fused or None)


# Samples behind an opaque surface get no colour evaluation in training (< 1e-3 of a ray's colour).
TRAIN_MIN_TRANSMITTANCE = 1e-3


def training_loss(model: NRCModel, batches: list[tuple], config: NRCConfig, generator: torch.Generator):
    """(total loss, photometric mse, {"evaluated", "coloured", "usage"}) for one ray batch
    (origins, directions, rgb) per scene: every scene weighs the same in the loss and in the
    codes' usage (the mean of the scenes' shares), so a code one scene needs is not closed
    because another scene has more surface. "usage" is (S, K): each scene's share per code."""
    t = config.train
    discover = bool(t.assignment_loss or t.code_colour_loss)
    outputs = ("rgb", "codes", "interlevel") + (("distortion",) if t.distortion else ()) + (("depth",) if discover else ())
    terms, mses, usage, evaluated, coloured, total = [], [], [], 0, 0, 0
    for scene, (origins, directions, target) in enumerate(batches):
        out = render_rays(model, scene, origins, directions, stratified=True, generator=generator, outputs=outputs,
                          min_transmittance=TRAIN_MIN_TRANSMITTANCE)  # the grid culls when culls_in_training
        mse = torch.mean((out["rgb"].float() - target) ** 2)
        loss = (mse + t.codebook_loss * out["vq_loss"][0] + t.commitment * out["vq_loss"][1]
                + t.variation_penalty * out["variation_cost"])
        if t.distortion:
            loss = loss + t.distortion * out["distortion"].mean()
        if "interlevel" in out:
            loss = loss + t.proposal_loss * out["interlevel"].mean()
        if discover:
            cross_entropy, colour = assignment_terms(model, scene, origins, directions, target, out["depth"],
                                                     with_colour=bool(t.code_colour_loss))
            loss = loss + t.assignment_loss * cross_entropy + t.code_colour_loss * colour
        terms.append(loss)
        mses.append(mse)
        share = out["codes"].detach().sum(0)
        usage.append(share / share.sum().clamp_min(1e-9))
        evaluated, coloured = evaluated + out["n_evaluated"], coloured + out["n_coloured"]
        total += len(origins) * config.sampler.n_samples
    usage = torch.stack(usage)
    loss = torch.stack(terms).mean() + t.gate_penalty * model.codebook.gate_cost(usage.mean(0), t.code_min_share)
    return loss, torch.stack(mses).mean(), {"evaluated": evaluated / total, "coloured": coloured / total,
                                            "usage": usage}


FINAL_OCCUPANCY_PASSES = 4


def update_occupancy(model: NRCModel, config: NRCConfig, step: int, device, final: bool = False) -> None:
    """Every ``occupancy_update_every`` steps after the warm-up (when training uses the grid:
    ``SamplerConfig.culls_in_training``), fold the current density into the grid's decaying
    max. ``final``: :func:`final_occupancy_pass` for every pass."""
    s = config.sampler
    if final:
        for k in range(FINAL_OCCUPANCY_PASSES):
            final_occupancy_pass(model, config, step, device, k)
    elif s.culls_in_training and step >= s.occupancy_warmup and step % s.occupancy_update_every == 0:
        _occupancy_pass(model, config, step, device, s.occupancy_decay, 0)


def final_occupancy_pass(model: NRCModel, config: NRCConfig, step: int, device, k: int) -> None:
    """Pass ``k`` of the final refresh: the first forgets the history, the others keep the max over
    fresh jittered samples per cell, so the saved grid describes the trained field, not its foggy
    youth (with short schedules the decaying max never forgets the first steps)."""
    _occupancy_pass(model, config, step, device, 0.0 if k == 0 else 1.0, k)


def _occupancy_pass(model: NRCModel, config: NRCConfig, step: int, device, decay: float, k: int) -> None:
    s = config.sampler
    for i, encoder in enumerate(model.encoders):
        step_size = encoder.sample_spacing(s.uniform_samples)  # one sample's share of a radius, near the cameras
        with autocast_for(device, config.train.mixed_precision):
            encoder.occupancy.update(lambda x, i=i: model.density(i, x), step_size, s.occupancy_alpha_threshold,
                                     decay, generator=step_generator(config.train.seed + 7 + i + 97 * k, step, device))


@torch.no_grad()
def estimate_occupancy_pass(model: NRCModel, config: NRCConfig, device, probe: int = 1 << 15) -> float:
    """Seconds one occupancy pass over every scene will take, from the density of ``probe`` cells
    (the grids are not touched). Not fewer: on a busy CPU each op also waits ~10 ms for its
    sleeping threads, which a small probe would scale up into a pass that looks far too slow."""
    was_training = model.training
    model.eval()
    total = 0.0
    for scene, encoder in enumerate(model.encoders):
        points = encoder.occupancy.cell_samples(step_generator(config.train.seed + 5, 0, device))[:probe]
        with autocast_for(device, config.train.mixed_precision):
            model.density(scene, points)  # the first call may compile kernels: not what a pass costs
            start = time.perf_counter()
            model.density(scene, points)
        total += (time.perf_counter() - start) * encoder.occupancy.resolution ** 3 / len(points)
    model.train(was_training)
    return total


def prepare_run(scene_paths: list[str | Path], run_dir: Path, config: NRCConfig,
                scene_radius: float | None = None,
                scene_center: tuple[float, float, float] | None = None) -> tuple[NRCConfig, list[SceneData]]:
    """Load scenes' training views and settle the run's config; refuses a run folder made with
    another config."""
    if not scene_paths:
        raise OdinError("no scene given")
    t = config.train
    scenes = [load_scene_data(p, t.image_height, t.holdout_every, part="train") for p in scene_paths]
    config.scenes = [auto_scene_frame(d, scene_radius, scene_center) for d in scenes]
    for frame in config.scenes:  # absolute: a run is evaluated, rendered and viewed from anywhere
        frame.source = str(Path(frame.source).resolve())
    if (run_dir / ckpt.CONFIG_NAME).exists():
        existing = ckpt.read_config(run_dir)
        ours, theirs = config.to_dict(), existing.to_dict()
        for key in ("steps", "seconds"):  # the schedule's length may change between a run and its resumption
            ours["train"].pop(key), theirs["train"].pop(key)
        for frame in theirs["scenes"]:  # runs made before sources were absolute: relative to the fit's cwd
            frame["source"] = str(Path(frame["source"]).resolve())
        if ours != theirs:
            diff = ckpt.first_difference(theirs, ours) or "scenes differ"
            raise OdinError(f"run was made with another config ({diff.replace('checkpoint', 'run')}); "
                            "choose a new --out", run_dir / ckpt.CONFIG_NAME)
    elif contents(run_dir):
        raise OdinError("exists, is not empty and is not an NRC run; choose a new --out", run_dir)
    return config, scenes


def _history_entry(model: NRCModel, step: int, loss: float, window_mse: list[float], window_work: list[dict],
                   rays: int, seconds: float, elapsed: float) -> dict:
    """One log line: means over the steps since the last one; ``seconds``: the fit's clock."""
    mse = float(np.mean(window_mse))
    usage = torch.stack([w["usage"] for w in window_work]).mean(0)  # (scenes, K) over the window
    return {"step": step, "loss": loss, "mse": mse, "psnr": psnr_from_mse(mse),
            "active_codes": int(model.codebook.active().sum()),
            "codes_per_scene": [int((u >= model.config.train.code_min_share).sum()) for u in usage],
            "occupied": model.encoders[0].occupancy.occupied_fraction(), "rays_per_s": rays / max(seconds, 1e-9),
            "evaluated": float(np.mean([w["evaluated"] for w in window_work])),
            "coloured": float(np.mean([w["coloured"] for w in window_work])), "seconds": elapsed}


def fit(scene_paths: list[str | Path], run_dir: str | Path, config: NRCConfig, **options) -> FitResult:
    """Train (or resume) the run in ``run_dir`` (options: see :func:`_fit`) holding its lock
    (ingest.runlock: a second fit of the same run is refused, a killed one's temporaries are
    removed), deterministically on CPU (see :func:`deterministic_on_cpu`). On CPU the C++ kernels
    are built (once per machine and version) before the budget starts, like the imports."""
    if torch.device(options.get("device", "cpu")).type == "cpu" and options.get("backend", "auto") in ("auto", "cpu"):
        load_cpu_kernels()
    with run_lock(run_dir, "NRC run", inputs=scene_paths, clean=("", "previews")), \
            deterministic_on_cpu(options.get("device", "cpu")):
        return _fit(scene_paths, run_dir, config, **options)


def _fit(scene_paths: list[str | Path], run_dir: str | Path, config: NRCConfig, *, device: str = "cpu",
         scene_radius: float | None = None, scene_center: tuple[float, float, float] | None = None,
         progress: bool = True, max_seconds: float | None = None, stop_after: int | None = None,
         backend: str = "auto", on_log=None) -> FitResult:
    """Train (or resume) the run in ``run_dir``. ``max_seconds`` (default: the config's
    ``train.seconds``) bounds the wall time of the whole call, loading and the final save
    included; ``stop_after`` stops after that many steps of this call without a final save
    (tests of resumption). ``on_log(model, entry)`` runs at each log line with the clock stopped
    (benchmarks' held-out curves: its time counts neither in the budget nor in rays/s)."""
    from tqdm import tqdm

    budget = Budget(max_seconds if max_seconds is not None else config.train.seconds)
    run_dir = Path(run_dir)
    device = torch.device(device)
    config, scenes = prepare_run(scene_paths, run_dir, config, scene_radius, scene_center)
    t, s = config.train, config.sampler
    banks, previews = [], []
    for data in scenes:
        train_views = data.views
        if not train_views:
            raise OdinError("no training views after holding out every "
                            f"{t.holdout_every}th frame", data.source)
        banks.append(RayBank(train_views, device))
        previews.append(train_views[0])
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(t.seed)
        model = NRCModel(config, backend=backend).to(device)
    optimizer = make_optimizer(model, t.lr)
    step, history = 0, []
    if ckpt.has_checkpoint(run_dir):
        step, history = ckpt.load_checkpoint(run_dir, model, optimizer, config)
    else:
        ckpt.write_config(run_dir, config)
    for encoder, data in zip(model.encoders, scenes):
        encoder.occupancy.restrict_to(visible_cells(encoder.occupancy, [v.camera for v in data.views], encoder.center,
                                                    float(encoder.radius)))
    start_step = step
    bar = tqdm(total=t.steps, initial=step, desc="nrc fit", unit="step", disable=not progress)
    window_mse, window_work, window_rays, window_t, loss = [], [], 0, time.perf_counter(), torch.zeros(())
    if budget.seconds is not None:  # what the final occupancy refresh will cost
        budget.record("occupancy_pass", estimate_occupancy_pass(model, config, device))
    # Until one is measured, a preview costs its rays' share of a step, forward only (~0.4).
    preview_share = 0.4 * previews[0].camera.height * previews[0].camera.width / t.batch_rays

    def periodic(k: int) -> set[str]:
        """Which periodic work falls on the step that ends at step ``k``."""
        due = {"save": k % t.save_every == 0, "preview": k % t.preview_every == 0,
               "occupancy_pass": s.culls_in_training and k - 1 >= s.occupancy_warmup
               and (k - 1) % s.occupancy_update_every == 0}
        return {name for name, is_due in due.items() if is_due}

    def cost(name: str) -> float:
        est = budget.step_estimate()
        guess = {"save": 0.1, "preview": preview_share * est, "occupancy_pass": est}[name]
        return budget.costs.get(name, guess)

    out_of_time = False
    model.train()
    while step < t.steps:
        # The end's occupancy refresh and preview shrink to fit (see finish_fit): reserve at most a
        # tenth and a twentieth of the budget for them.
        tail = cost("save") + min(FINAL_OCCUPANCY_PASSES * cost("occupancy_pass"), 0.1 * (budget.seconds or 0)) \
            + min(cost("preview"), 0.05 * (budget.seconds or 0))
        if step > start_step and budget.must_stop(sum(cost(n) for n in periodic(step + 1) if step + 1 < t.steps), tail):
            out_of_time = True
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        if "occupancy_pass" in periodic(step + 1):
            budget.timed("occupancy_pass", update_occupancy, model, config, step, device)
        step_start = time.perf_counter()
        restart_dead_codes(model, banks, config, step, device)
        prune_codes(model, banks, config, step, device)
        gen = step_generator(t.seed, step, device)
        with autocast_for(device, t.mixed_precision):
            loss, mse, work = training_loss(model, scene_batches(banks, t.batch_rays, gen), config, gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        window_mse.append(float(mse.detach()))
        window_work.append(work)
        window_rays += t.batch_rays
        budget.record("step", time.perf_counter() - step_start)
        bar.update(1)
        if step % t.log_every == 0 and step < t.steps:
            now = time.perf_counter()
            history.append(_history_entry(model, step, float(loss.detach()), window_mse, window_work, window_rays,
                                          now - window_t, budget.elapsed()))
            bar.set_postfix(psnr=f"{history[-1]['psnr']:.2f}", codes=history[-1]["active_codes"])
            if on_log is not None:
                budget.timed("callback", on_log, model, history[-1])
                budget.start += budget.costs["callback"]
                now += budget.costs["callback"]
            window_mse, window_work, window_rays, window_t = [], [], 0, now
        if stop_after is not None and step - start_step >= stop_after:
            break
        if step < t.steps and step % t.save_every == 0:
            budget.timed("save", save_run, run_dir, model, optimizer, step, history, config)
        if step < t.steps and step % t.preview_every == 0:
            budget.timed("preview", write_preview, run_dir / "previews" / f"step_{step:06d}.png", model, previews[0],
                         config)
    if step == t.steps or out_of_time:
        if window_mse:  # a run that stops between log lines still reports what it trained
            now = time.perf_counter()
            history.append(_history_entry(model, step, float(loss.detach()), window_mse, window_work, window_rays,
                                          now - window_t, budget.elapsed()))
        finish_fit(budget, cost, model, optimizer, config, run_dir, step, history, previews[0], device)
    bar.close()
    return FitResult(run_dir, step, history, budget.elapsed(), step - start_step)


def finish_fit(budget: Budget, cost, model: NRCModel, optimizer, config: NRCConfig, run_dir: Path, step: int,
               history: list[dict], preview: View, device) -> None:
    """Final occupancy refresh, save and preview: within a budget, as many refresh passes as fit
    (none: the grid keeps its decaying max) and the preview only if it fits; the save always."""
    for k in range(FINAL_OCCUPANCY_PASSES):
        if not budget.fits(cost("occupancy_pass") + cost("save")):
            break
        budget.timed("occupancy_pass", final_occupancy_pass, model, config, step, device, k)
    save_run(run_dir, model, optimizer, step, history, config)
    if budget.fits(cost("preview")):
        write_preview(run_dir / "previews" / f"step_{step:06d}.png", model, preview, config)


def save_run(run_dir: Path, model: NRCModel, optimizer, step: int, history: list[dict], config: NRCConfig) -> None:
    ckpt.save_checkpoint(run_dir, model, optimizer, step, history, config)
    write_loss_curves(run_dir, history)


def write_loss_curves(run_dir: Path, history: list[dict]) -> None:
    if not history:
        return
    steps = [h["step"] for h in history]
    write_png(run_dir / "loss.png", line_plot({"loss": (steps, [h["loss"] for h in history])}, "training loss",
                                              log_y=True))
    write_png(run_dir / "psnr.png", line_plot({"train PSNR (dB)": (steps, [h["psnr"] for h in history])},
                                              "training PSNR"))


def write_preview(path: Path, model: NRCModel, view: View, config: NRCConfig) -> None:
    """A training view (held-out views are only rendered by ``nrc eval``): ground truth | render |
    depth | code segmentation."""
    out = render_view(model, view.camera.c2w, view.camera, ("rgb", "depth", "codes"))
    write_png(path, panel([view.rgb, out["rgb"], colorize_depth(out["depth"]), colorize_labels(out["segmentation"])],
                          ["GT", "render", "depth", "codes"]))
