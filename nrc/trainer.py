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

from ingest.errors import OdinError
from nrc import checkpoint as ckpt
from nrc.config import NRCConfig
from nrc.data import RayBank, SceneData, View, auto_scene_frame, load_scene_data
from nrc.field import NRCModel
from nrc.plots import colorize_depth, colorize_labels, line_plot, panel, write_png
from nrc.rendering import autocast_for, render_rays, render_view


@dataclass
class FitResult:
    run_dir: Path
    step: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def psnr_from_mse(mse: float) -> float:
    return float(-10 * math.log10(max(mse, 1e-12)))


def learning_rate(config: NRCConfig, step: int) -> float:
    t = min(step / max(1, config.train.steps), 1.0)
    return config.train.lr * config.train.lr_final_fraction ** t


def step_generator(seed: int, step: int, device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + step)
    return g


def make_optimizer(model: NRCModel, lr: float) -> torch.optim.Adam:
    tables = [p for n, p in model.named_parameters() if n.endswith("hashgrid.table")]
    others = [p for n, p in model.named_parameters() if not n.endswith("hashgrid.table")]
    # instant-ngp's Adam: tiny eps so rarely-touched hash entries still move.
    return torch.optim.Adam([{"params": tables}, {"params": others}], lr=lr, betas=(0.9, 0.99), eps=1e-15)


def training_loss(model: NRCModel, scene: int, rays: tuple, config: NRCConfig, generator: torch.Generator):
    """(total loss, photometric mse) for a batch of (origins, directions, rgb)."""
    origins, directions, target = rays
    t = config.train
    outputs = ("rgb", "codes", "distortion") if t.distortion else ("rgb", "codes")
    out = render_rays(model, scene, origins, directions, stratified=True, generator=generator, outputs=outputs)
    mse = torch.mean((out["rgb"].float() - target) ** 2)
    usage = out["codes"].detach().sum(0)
    usage = usage / usage.sum().clamp_min(1e-9)
    loss = (mse + t.codebook_loss * out["vq_loss"][0] + t.commitment * out["vq_loss"][1]
            + t.gate_penalty * model.codebook.gate_cost(usage, t.code_min_share))
    if t.distortion:
        loss = loss + t.distortion * out["distortion"].mean()
    return loss, mse


def update_occupancy(model: NRCModel, config: NRCConfig, step: int, device, final: bool = False) -> None:
    """Every ``occupancy_update_every`` steps after the warm-up, fold the current density into the
    grid's decaying max. ``final``: forget the history and keep the max over 4 fresh jittered
    samples per cell, so the saved grid describes the trained field, not its foggy youth (with
    short schedules the decaying max never forgets the first steps)."""
    s = config.sampler
    if not final and (step < s.occupancy_warmup or step % s.occupancy_update_every):
        return
    step_size = (2 - 1 / s.far - s.near) / s.n_samples  # s-space spacing: one sample's share of a radius
    decays = (0.0, 1.0, 1.0, 1.0) if final else (s.occupancy_decay,)
    for i, encoder in enumerate(model.encoders):
        for k, decay in enumerate(decays):
            with autocast_for(device, config.train.mixed_precision):
                encoder.occupancy.update(lambda x, i=i: model.density(i, x), step_size, s.occupancy_alpha_threshold,
                                         decay, generator=step_generator(config.train.seed + 7 + i + 97 * k, step, device))


@torch.no_grad()
def restart_dead_codes(model: NRCModel, scene: int, bank: RayBank, config: NRCConfig, step: int, device) -> int:
    """Re-seed codes that (almost) no surface uses with features of surface points of a ray batch."""
    t = config.train
    if step == 0 or step % t.code_restart_every or step > t.code_restart_until * t.steps:
        return 0
    gen = step_generator(t.seed + 13, step, device)
    origins, directions, _ = bank.sample(min(t.batch_rays, 4096), gen)
    model.eval()
    with autocast_for(device, t.mixed_precision):
        out = render_rays(model, scene, origins, directions, outputs=("depth", "codes"))
        encoder = model.encoders[scene]
        surface = encoder.normalise(origins + directions * out["depth"][:, None].float())
        features = encoder(surface).float()
    model.train()
    usage = out["codes"].float().sum(0) / out["codes"].float().sum().clamp_min(1e-9)
    return model.codebook.restart_dead_codes(features, usage, gen)


def prepare_run(scene_paths: list[str | Path], run_dir: Path, config: NRCConfig,
                scene_radius: float | None = None) -> tuple[NRCConfig, list[SceneData]]:
    """Load scenes and settle the run's config; refuses a run folder made with another config."""
    if not scene_paths:
        raise OdinError("no scene given")
    scenes = [load_scene_data(p, config.train.image_height) for p in scene_paths]
    config.scenes = [auto_scene_frame(d, scene_radius) for d in scenes]
    if (run_dir / ckpt.CONFIG_NAME).exists():
        existing = ckpt.read_config(run_dir)
        ours, theirs = config.to_dict(), existing.to_dict()
        ours["train"].pop("steps"), theirs["train"].pop("steps")
        if ours != theirs:
            diff = ckpt.first_difference(theirs, ours) or "scenes differ"
            raise OdinError(f"run was made with another config ({diff.replace('checkpoint', 'run')}); "
                            "choose a new --out", run_dir / ckpt.CONFIG_NAME)
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise OdinError("exists, is not empty and is not an NRC run; choose a new --out", run_dir)
    return config, scenes


def fit(scene_paths: list[str | Path], run_dir: str | Path, config: NRCConfig, *, device: str = "cpu",
        scene_radius: float | None = None, progress: bool = True, max_seconds: float | None = None,
        stop_after: int | None = None, backend: str = "auto") -> FitResult:
    """Train (or resume) the run in ``run_dir``. ``max_seconds`` bounds wall time (benchmarks);
    ``stop_after`` stops after that many steps of this call (tests of resumption)."""
    from tqdm import tqdm

    run_dir = Path(run_dir)
    device = torch.device(device)
    config, scenes = prepare_run(scene_paths, run_dir, config, scene_radius)
    t = config.train
    banks, previews = [], []
    for data in scenes:
        train_views, held_out = data.split(t.holdout_every)
        if not train_views:
            raise OdinError("no training views after holding out every "
                            f"{t.holdout_every}th frame", data.source)
        banks.append(RayBank(train_views, device))
        previews.append((held_out or train_views)[0])
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(t.seed)
        model = NRCModel(config, backend=backend).to(device)
    optimizer = make_optimizer(model, t.lr)
    step, history = 0, []
    if ckpt.has_checkpoint(run_dir):
        step, history = ckpt.load_checkpoint(run_dir, model, optimizer, config)
    else:
        ckpt.write_config(run_dir, config)
    start_time, start_step = time.perf_counter(), step
    bar = tqdm(total=t.steps, initial=step, desc="nrc fit", unit="step", disable=not progress)
    window_mse, window_rays, window_t = [], 0, time.perf_counter()
    model.train()
    while step < t.steps:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        update_occupancy(model, config, step, device)
        scene = step % model.n_scenes
        restart_dead_codes(model, scene, banks[scene], config, step, device)
        gen = step_generator(t.seed, step, device)
        with autocast_for(device, t.mixed_precision):
            loss, mse = training_loss(model, scene, banks[scene].sample(t.batch_rays, gen), config, gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        window_mse.append(float(mse.detach()))
        window_rays += t.batch_rays
        bar.update(1)
        if step % t.log_every == 0 or step == t.steps:
            now = time.perf_counter()
            entry = {"step": step, "loss": float(loss.detach()), "mse": float(np.mean(window_mse)),
                     "psnr": psnr_from_mse(float(np.mean(window_mse))),
                     "active_codes": int(model.codebook.active().sum()),
                     "occupied": model.encoders[0].occupancy.occupied_fraction(),
                     "rays_per_s": window_rays / max(now - window_t, 1e-9)}
            history.append(entry)
            bar.set_postfix(psnr=f"{entry['psnr']:.2f}", codes=entry["active_codes"])
            window_mse, window_rays, window_t = [], 0, now
        out_of_time = max_seconds is not None and time.perf_counter() - start_time >= max_seconds
        stopping = stop_after is not None and step - start_step >= stop_after
        if step == t.steps or out_of_time:
            update_occupancy(model, config, step, device, final=True)
        if step % t.save_every == 0 or step == t.steps or out_of_time:
            ckpt.save_checkpoint(run_dir, model, optimizer, step, history, config)
            write_loss_curves(run_dir, history)
        if step % t.preview_every == 0 or step == t.steps or out_of_time:
            write_preview(run_dir / "previews" / f"step_{step:06d}.png", model, previews[0], config)
        if out_of_time or stopping:
            break
    bar.close()
    return FitResult(run_dir, step, history, time.perf_counter() - start_time)


def write_loss_curves(run_dir: Path, history: list[dict]) -> None:
    if not history:
        return
    steps = [h["step"] for h in history]
    write_png(run_dir / "loss.png", line_plot({"loss": (steps, [h["loss"] for h in history])}, "training loss",
                                              log_y=True))
    write_png(run_dir / "psnr.png", line_plot({"train PSNR (dB)": (steps, [h["psnr"] for h in history])},
                                              "training PSNR"))


def write_preview(path: Path, model: NRCModel, view: View, config: NRCConfig) -> None:
    """Held-out view: ground truth | render | depth | code segmentation."""
    out = render_view(model, view.camera.c2w, view.camera, ("rgb", "depth", "codes"))
    write_png(path, panel([view.rgb, out["rgb"], colorize_depth(out["depth"]), colorize_labels(out["segmentation"])],
                          ["GT", "render", "depth", "codes"]))
