"""`odin train`: accelerate-driven training with EMA, exact resume, TensorBoard and sample grids.

One process per GPU under ``accelerate launch`` / torchrun (each gets its own share of the
pair stream, see odin/data.py); bf16 autocast on GPU; gradient accumulation through accelerate.
All training randomness comes from one generator per process whose state is checkpointed, and
the data stream's position is checkpointed, so a killed run resumes exactly where its last
checkpoint was taken.
"""
from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import torch

from ingest.atomic import atomic_write_json
from ingest.errors import OdinError
from odin.checkpoint import (TrainState, check_compatible, latest_checkpoint, read_meta, restore_training,
                             save_checkpoint)
from odin.config import OdinConfig
from odin.data import PairStream, StreamPosition, first_pairs, prefetch, tensor_image
from ingest.media import image_grid, save_png
from odin.models import make_codec, new_denoiser
from odin.pipeline import OdinPipeline, ViewCondition
from odin.schedulers import training_scheduler
from odin.training import diffusion_loss


def _accelerator(cfg: OdinConfig):
    from accelerate import Accelerator

    mixed = cfg.train.mixed_precision if torch.cuda.is_available() else "no"
    return Accelerator(mixed_precision=mixed, gradient_accumulation_steps=cfg.train.grad_accum)


def _prepare_run(run: Path, cfg: OdinConfig, config_source) -> Path | None:
    """Write RUN/config.json for a new run; for an existing run, check the model config matches."""
    ckpt = latest_checkpoint(run)
    if ckpt is not None:
        check_compatible(read_meta(ckpt), cfg, ckpt)
    elif run.exists() and any(p.name != "config.json" for p in run.iterdir()) and not (run / "config.json").exists():
        raise OdinError("exists and is not an Odin run; choose a new --out", run)
    return ckpt


def _lr_at(step: int, cfg: OdinConfig) -> float:
    warm = cfg.train.warmup_steps
    return cfg.train.lr * (min(1.0, (step + 1) / warm) if warm > 0 else 1.0)


class SamplePreview:
    """Fixed pairs rendered with the EMA weights: rows of source | generated | target | motion mask."""

    def __init__(self, pairs_dir, cfg: OdinConfig, work_resolution: int, device):
        self.batch = first_pairs(pairs_dir, "val", cfg.train.sample_count, cfg.model.resolution, work_resolution)
        self.cfg, self.device = cfg, device

    def render(self, model, codec, out_path: Path, seed: int = 0) -> None:
        b = self.batch
        pipe = OdinPipeline(model, codec, self.cfg.diffusion, self.cfg.model.resolution, self.device)
        scale = torch.exp(b.pose[:, -1].double())
        cond = ViewCondition(b.source, b.R.double(), b.t.double(), scale, plucker=b.plucker)
        gen = torch.Generator("cpu").manual_seed(seed)
        images, masks = pipe([cond], steps=self.cfg.train.sample_steps, generator=gen)
        masks = torch.nn.functional.interpolate(masks, size=images.shape[-2:], mode="nearest")
        rows = [[tensor_image(b.source[i]), tensor_image(images[i]), tensor_image(b.target[i]),
                 (masks[i, 0].clamp(0, 1) * 255).byte().cpu().numpy()] for i in range(len(b))]
        save_png(out_path, image_grid(rows))


def train(pairs_dir: str | Path, run: str | Path, cfg: OdinConfig, config_source=None, progress: bool = True,
          stop_after_steps: int | None = None) -> Path:
    """Train (or resume) a run; returns the last checkpoint.  ``stop_after_steps`` ends this
    invocation early after that many optimizer steps (as a kill would, but after a checkpoint)."""
    from diffusers.training_utils import EMAModel
    from tqdm import tqdm

    run, tc = Path(run), cfg.train
    # Near-zero weights (zero-initialised layers) make denormal floats that slow CPU kernels 20x.
    torch.set_flush_denormal(True)
    resume_from = _prepare_run(run, cfg, config_source)
    accel = _accelerator(cfg)
    device = accel.device
    codec = make_codec(cfg.model).to(device)
    work_res = cfg.model.resolution // codec.factor
    torch.manual_seed(tc.seed)  # the initial weights are part of what makes a run reproducible
    model, unet_config = new_denoiser(cfg.model, codec)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    ema = EMAModel(model.parameters(), decay=tc.ema_decay)
    generator = torch.Generator(device).manual_seed(tc.seed * 7919 + accel.process_index)
    state = TrainState(0, 0, 0)
    if resume_from is not None:
        state = restore_training(resume_from, model, ema, optimizer, generator, accel.process_index,
                                 accel.num_processes)
        ema.to(device)
    if accel.is_main_process:
        atomic_write_json(run / "config.json", cfg.to_dict())
    scheduler = training_scheduler(cfg.diffusion)
    model, optimizer = accel.prepare(model, optimizer)
    stream = PairStream(pairs_dir, "train", tc.batch_size, cfg.model.resolution, work_res, seed=tc.seed,
                        shuffle_buffer=cfg.data.shuffle_buffer, rank=accel.process_index,
                        world_size=accel.num_processes, position=StreamPosition(state.epoch, state.index))
    preview = SamplePreview(pairs_dir, cfg, work_res, device) if accel.is_main_process and tc.sample_every else None
    writer = _summary_writer(run, state.step) if accel.is_main_process else None

    position = stream.position

    def checkpoint():
        from accelerate.utils import gather_object

        rng_states = gather_object([generator.get_state()])  # one per process, in rank order
        if accel.is_main_process:
            path = save_checkpoint(run, cfg, unet_config, accel.unwrap_model(model), ema, optimizer, rng_states,
                                   TrainState(state.step, position.epoch, position.index), tc.keep_checkpoints)
        accel.wait_for_everyone()
        return path if accel.is_main_process else latest_checkpoint(run)

    last = resume_from
    bar = tqdm(total=tc.max_steps, initial=state.step, desc="odin train", unit="step",
               disable=not (progress and accel.is_main_process))
    started, steps_this_run, window = time.monotonic(), 0, (time.monotonic(), 0)
    batches = prefetch(stream)
    try:
        while state.step < tc.max_steps:
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(state.step, cfg)
            for _ in range(tc.grad_accum):
                batch = next(batches)
                position = batch.position
                batch = batch.to(device)
                with accel.accumulate(model), _oom_message(tc.batch_size, config_source):
                    with accel.autocast():
                        loss, stats = diffusion_loss(model, codec, scheduler, batch, cfg.diffusion, generator)
                    accel.backward(loss)
                    if accel.sync_gradients and tc.grad_clip:
                        accel.clip_grad_norm_(model.parameters(), tc.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            ema.step(accel.unwrap_model(model).parameters())
            state.step += 1
            steps_this_run += 1
            samples = tc.batch_size * tc.grad_accum * accel.num_processes
            window = (window[0], window[1] + samples)
            if not math.isfinite(loss.item()):
                raise OdinError(f"loss became {loss.item()} at step {state.step}; lower train.lr", config_source)
            if state.step % tc.log_every == 0 or state.step == tc.max_steps:
                rate = window[1] / max(time.monotonic() - window[0], 1e-9)
                window = (time.monotonic(), 0)
                bar.set_postfix(loss=f"{loss.item():.4f}", mse=f"{stats['mse'].item():.4f}", samples_s=f"{rate:.1f}")
                if writer is not None:
                    for k, v in {"loss": loss, **stats}.items():
                        writer.add_scalar(f"train/{k}", float(v.detach()), state.step)
                    writer.add_scalar("train/samples_per_s", rate, state.step)
                    writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], state.step)
            bar.update(1)
            out_of_time = tc.max_minutes is not None and time.monotonic() - started > 60 * tc.max_minutes
            stop = out_of_time or (stop_after_steps is not None and steps_this_run >= stop_after_steps)
            if state.step % tc.checkpoint_every == 0 or state.step == tc.max_steps or stop:
                last = checkpoint() or last
            if preview is not None and (state.step % tc.sample_every == 0 or state.step == tc.max_steps):
                _render_preview(preview, accel.unwrap_model(model), ema, codec, run / "samples" / f"step_{state.step:08d}.png")
            if stop:
                break
    finally:
        batches.close()
        bar.close()
        if writer is not None:
            writer.close()
    return last


def _render_preview(preview: SamplePreview, model, ema, codec, path: Path) -> None:
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    try:
        preview.render(model, codec, path)
    finally:
        ema.restore(model.parameters())
        model.train()


@contextlib.contextmanager
def _oom_message(batch_size: int, source):
    try:
        yield
    except torch.OutOfMemoryError as e:
        raise OdinError(f"out of GPU memory at train.batch_size={batch_size}; lower train.batch_size "
                        "(and raise train.grad_accum to keep the effective batch)", source) from e


def _summary_writer(run: Path, step: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra
        return None
    # purge_step drops events a killed run logged after its last checkpoint.
    return SummaryWriter(str(run / "tensorboard"), purge_step=step if step else None)
