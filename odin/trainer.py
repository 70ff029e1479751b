"""`odin train`: accelerate-driven training with EMA, exact resume, TensorBoard and sample grids.

One process per device under ``accelerate launch`` / torchrun (each gets its own share of the
pair stream, see odin/data.py); bf16 autocast on GPU; gradient accumulation through accelerate.
Every random draw is keyed by the sample's place in the stream (odin/training.py) and the
stream position is checkpointed, so a killed run resumes exactly where its last checkpoint was.
With several processes, rank 0 alone decides when to stop (time limit) and broadcasts it, so all
ranks checkpoint and leave at the same step; logged losses are averaged over the ranks.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path

import torch

from ingest.atomic import atomic_write_json, atomic_write_text
from ingest.errors import OdinError
from ingest.runlock import contents, run_lock
from ingest.media import image_grid, save_png
from odin.checkpoint import (TrainState, check_compatible, export_pipeline, latest_checkpoint, read_meta,
                             restore_training, save_checkpoint)
from odin.config import OdinConfig
from odin.data import PairStream, StreamPosition, first_pairs, prefetch, tensor_image
from odin.models import make_codec, new_denoiser
from odin.pipeline import OdinPipeline, ViewCondition
from odin.schedulers import training_scheduler
from odin.splits import PairSplit, load_split, warn_empty_val
from odin.training import diffusion_loss


def _accelerator(cfg: OdinConfig):
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    # cpu=True without CUDA: under a multi-process launch accelerate then joins the gloo group.
    return Accelerator(cpu=not cuda, mixed_precision=cfg.train.mixed_precision if cuda else "no",
                       gradient_accumulation_steps=cfg.train.grad_accum)


def _prepare_run(run: Path, cfg: OdinConfig, split: PairSplit) -> Path | None:
    """The checkpoint to resume from, if any: its model config and its pairs' split must be this
    run's (every rank checks, so that all refuse together)."""
    ckpt = latest_checkpoint(run)
    if ckpt is not None:
        check_compatible(read_meta(ckpt), cfg, ckpt)
        try:
            before = json.loads((run / "split.json").read_text())
        except (OSError, json.JSONDecodeError):
            before = None
        if before is not None and before != json.loads(json.dumps(split.to_dict())):
            raise OdinError("this run was trained on other pairs (its split.json differs from this PAIRS folder's "
                            "split); resume with the same PAIRS, or choose a new --out", run)
    elif any(p.name != "config.json" for p in contents(run)) and not (run / "config.json").exists():
        raise OdinError("exists and is not an Odin run; choose a new --out", run)
    return ckpt


def _lr_at(step: int, cfg: OdinConfig) -> float:
    warm = cfg.train.warmup_steps
    return cfg.train.lr * (min(1.0, (step + 1) / warm) if warm > 0 else 1.0)


class SamplePreview:
    """Fixed held-out pairs rendered with the EMA weights: rows of source | generated | target | mask.

    Without held-out pairs it renders training pairs, says so loudly once, and names the files
    ``step_*_TRAIN.png`` so that nobody mistakes them for held-out results."""

    def __init__(self, pairs_dir, cfg: OdinConfig, split: PairSplit, work_resolution: int, device):
        fallback = warn_empty_val(split, pairs_dir, "sample grids show TRAINING pairs (samples/step_*_TRAIN.png)")
        self.suffix = "_TRAIN" if fallback else ""
        self.batch = first_pairs(pairs_dir, split.train if fallback else split.val, cfg.train.sample_count,
                                 cfg.model.resolution, work_resolution, "train" if fallback else "val")
        self.cfg, self.device = cfg, device

    def render(self, model, codec, out_dir: Path, step: int, seed: int = 0) -> None:
        b = self.batch
        pipe = OdinPipeline.assemble(model, codec, self.cfg.diffusion, self.cfg.model.resolution, self.device)
        cond = ViewCondition.from_batch(b)
        gen = torch.Generator("cpu").manual_seed(seed)
        images, masks = pipe([cond], steps=self.cfg.train.sample_steps, generator=gen)
        masks = torch.nn.functional.interpolate(masks, size=images.shape[-2:], mode="nearest")
        rows = [[tensor_image(b.source[i]), tensor_image(images[i]), tensor_image(b.target[i]),
                 (masks[i, 0].clamp(0, 1) * 255).byte().cpu().numpy()] for i in range(len(b))]
        save_png(out_dir / f"step_{step:08d}{self.suffix}.png", image_grid(rows))


class TrainLog:
    """RUN/train_log.jsonl, one line per logged step (rank 0); lines past the resumed step are
    dropped, as a killed run logged them after its last checkpoint."""

    def __init__(self, run: Path, step: int):
        self.path = run / "train_log.jsonl"
        if self.path.exists():
            # A line the kill cut short is dropped like the ones past the checkpoint.
            keep = [ln for ln in self.path.read_text().splitlines() if _step_of(ln, step + 1) <= step]
            atomic_write_text(self.path, "".join(ln + "\n" for ln in keep))

    def add(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _step_of(line: str, default: int) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return default


def _agree(accel, flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank: one process's clock decides for all (no rank can leave the
    loop while another enters the next all-reduce)."""
    if accel.num_processes == 1:
        return flag
    from accelerate.utils import broadcast

    return bool(broadcast(torch.tensor([float(flag)], device=accel.device), from_process=0).item())


def _rank0_choice(accel, path: Path | None) -> Path | None:
    """Rank 0's checkpoint to resume from, on every rank (checkpoints may appear in between)."""
    if accel.num_processes == 1:
        return path
    from accelerate.utils import broadcast_object_list

    chosen = broadcast_object_list([None if path is None else str(path)], from_process=0)[0]
    return None if chosen is None else Path(chosen)


def train(pairs_dir: str | Path, run: str | Path, cfg: OdinConfig, config_source=None, progress: bool = True,
          stop_after_steps: int | None = None, on_finish=None) -> Path:
    """Train (or resume) a run; returns the last checkpoint.  ``stop_after_steps`` ends this
    invocation early after that many optimizer steps (as a kill would, but after a checkpoint).
    ``on_finish(model, accelerator, step)`` is called on every process with the unwrapped model at the end.
    Rank 0 holds the run's lock for all processes (ingest.runlock: a second training of the same
    run is refused; a killed one's half-written checkpoints are removed)."""
    if int(os.environ.get("RANK", "0")) != 0:  # set by torchrun and accelerate before any process starts
        return _train(pairs_dir, Path(run), cfg, config_source, progress, stop_after_steps, on_finish)
    with run_lock(run, "Odin run", inputs=[pairs_dir], clean=("", "checkpoints", "samples", "tensorboard")):
        return _train(pairs_dir, Path(run), cfg, config_source, progress, stop_after_steps, on_finish)


def _train(pairs_dir, run: Path, cfg: OdinConfig, config_source, progress, stop_after_steps, on_finish) -> Path:
    from diffusers.training_utils import EMAModel
    from tqdm import tqdm

    tc = cfg.train
    # Near-zero weights (zero-initialised layers) make denormal floats that slow CPU kernels 20x.
    torch.set_flush_denormal(True)
    split = load_split(pairs_dir, cfg.data.split_by, cfg.data.val_fraction)
    resume_from = _prepare_run(run, cfg, split)
    accel = _accelerator(cfg)
    device, main = accel.device, accel.is_main_process
    resume_from = _rank0_choice(accel, resume_from)
    codec = make_codec(cfg.model).to(device)
    work_res = cfg.model.resolution // codec.factor
    torch.manual_seed(tc.seed)  # the initial weights are part of what makes a run reproducible
    model, _ = new_denoiser(cfg.model, codec)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    ema = EMAModel(model.parameters(), decay=tc.ema_decay)
    state = TrainState(0, 0, 0)
    if resume_from is not None:
        state = restore_training(resume_from, model, ema, optimizer)
        ema.to(device)
    if main:
        run.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run / "config.json", cfg.to_dict())
        atomic_write_json(run / "split.json", split.to_dict())
        print(f"odin train: {pairs_dir}: {split.summary()}", flush=True)
    scheduler = training_scheduler(cfg.diffusion)
    model, optimizer = accel.prepare(model, optimizer)
    stream = PairStream(pairs_dir, split.train, tc.batch_size, cfg.model.resolution, work_res, seed=tc.seed,
                        shuffle_buffer=cfg.data.shuffle_buffer, rank=accel.process_index,
                        world_size=accel.num_processes, position=StreamPosition(state.epoch, state.index))
    preview = SamplePreview(pairs_dir, cfg, split, work_res, device) if main and tc.sample_every else None
    writer = _summary_writer(run, state.step) if main else None
    log = TrainLog(run, state.step) if main else None
    position = stream.position

    def checkpoint():
        if main:
            if writer is not None:  # buffered points up to this step must outlive a kill after it
                writer.flush()
            bare = accel.unwrap_model(model)
            path = save_checkpoint(run, cfg, bare, ema, optimizer,
                                   TrainState(state.step, position.epoch, position.index), tc.keep_checkpoints)
            export_pipeline(run, bare, ema, codec, cfg)
        accel.wait_for_everyone()
        return path if main else latest_checkpoint(run)

    last = resume_from
    bar = tqdm(total=tc.max_steps, initial=state.step, desc="odin train", unit="step",
               disable=not (progress and main))
    started, steps_this_run, window = time.monotonic(), 0, (time.monotonic(), 0)
    batches = prefetch(stream)
    try:
        while state.step < tc.max_steps:
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(state.step, cfg)
            step_loss = torch.zeros((), device=device)
            for _ in range(tc.grad_accum):
                batch = next(batches)
                position = batch.position
                batch = batch.to(device)
                with accel.accumulate(model), _oom_message(tc.batch_size, config_source):
                    with accel.autocast():
                        loss, stats = diffusion_loss(model, codec, scheduler, batch, cfg.diffusion, tc.seed)
                    accel.backward(loss)
                    if accel.sync_gradients and tc.grad_clip:
                        accel.clip_grad_norm_(model.parameters(), tc.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                step_loss += loss.detach() / tc.grad_accum
            ema.step(accel.unwrap_model(model).parameters())
            state.step += 1
            steps_this_run += 1
            window = (window[0], window[1] + tc.batch_size * tc.grad_accum * accel.num_processes)
            if not math.isfinite(loss.item()):
                raise OdinError(f"loss became {loss.item()} at step {state.step}; lower train.lr", config_source)
            out_of_time = tc.max_minutes is not None and time.monotonic() - started > 60 * tc.max_minutes
            stop = _agree(accel, out_of_time) or (stop_after_steps is not None and steps_this_run >= stop_after_steps)
            if state.step % tc.log_every == 0 or state.step == tc.max_steps or stop:
                rate = window[1] / max(time.monotonic() - window[0], 1e-9)
                window = (time.monotonic(), 0)
                mean = {k: accel.reduce(v.detach().float().reshape(1), "mean").item()
                        for k, v in {"loss": step_loss, **stats}.items()}
                bar.set_postfix(loss=f"{mean['loss']:.4f}", mse=f"{mean['mse']:.4f}", samples_s=f"{rate:.1f}")
                if main:
                    log.add({"step": state.step, **mean, "samples_per_s": rate, "seconds": time.monotonic() - started})
                if writer is not None:
                    for k, v in mean.items():
                        writer.add_scalar(f"train/{k}", v, state.step)
                    writer.add_scalar("train/samples_per_s", rate, state.step)
                    writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], state.step)
            bar.update(1)
            if state.step % tc.checkpoint_every == 0 or state.step == tc.max_steps or stop:
                last = checkpoint() or last
            if preview is not None and (state.step % tc.sample_every == 0 or state.step == tc.max_steps):
                _render_preview(preview, accel.unwrap_model(model), ema, codec, run / "samples", state.step)
            if stop:
                break
        if on_finish is not None:
            on_finish(accel.unwrap_model(model), accel, state.step)
    finally:
        batches.close()
        bar.close()
        if writer is not None:
            writer.close()
    return last


def _render_preview(preview: SamplePreview, model, ema, codec, out_dir: Path, step: int) -> None:
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    try:
        preview.render(model, codec, out_dir, step)
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
    from odin.events import drop_events_after

    drop_events_after(run / "tensorboard", step)  # what a killed run logged after its last checkpoint
    return SummaryWriter(str(run / "tensorboard"))
