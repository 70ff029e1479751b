"""Checkpoints as safetensors + JSON, written atomically, with everything needed for exact resume.

    RUN/config.json                        the run's OdinConfig
    RUN/checkpoints/step_00001000/
        odin.json                          config, denoiser config, model signature, step, data position,
                                           EMA and optimizer scalars
        model.safetensors                  raw weights
        ema.safetensors                    EMA weights (what generation uses)
        optimizer.safetensors              optimizer tensors, flattened as "state/<param>/<name>"
    RUN/checkpoints/latest.json            {"name": "step_00001000", "step": 1000}
    RUN/pipeline/                          the latest EMA weights as a diffusers pipeline folder
                                           (model_index.json, denoiser/, scheduler/, vae/ in latent mode)

No random-generator state is stored: every random draw of training is seeded by the sample's
place in the data stream (odin/training.py), so the stream position alone resumes it exactly,
with any number of processes.

A checkpoint folder is assembled under a temporary name and renamed into place, and
``latest.json`` is replaced atomically afterwards, so a kill at any moment leaves the previous
checkpoint intact and pointed to; the next run deletes the killed one's ``.step_*`` and
``.pipeline.*`` folders (ingest.runlock).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ingest.atomic import atomic_write_json, temp_dir
from ingest.errors import OdinError
from odin.config import OdinConfig, model_signature
from odin.models import OdinDenoiser, build_denoiser, denoiser_config
from odin.schedulers import training_scheduler


def checkpoints_dir(run: Path) -> Path:
    return Path(run) / "checkpoints"


def latest_checkpoint(run: str | Path) -> Path | None:
    pointer = checkpoints_dir(Path(run)) / "latest.json"
    if not pointer.exists():
        return None
    return checkpoints_dir(Path(run)) / json.loads(pointer.read_text())["name"]


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for pid, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{pid}/{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}/{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, pid, name = key.split("/", 2)
        state.setdefault(int(pid), {})[name] = value
    for key, value in meta["scalars"].items():
        pid, name = key.split("/", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _named_shadow(model: torch.nn.Module, ema) -> dict[str, torch.Tensor]:
    names = [n for n, _ in model.named_parameters()]
    return {n: p.detach().cpu().contiguous() for n, p in zip(names, ema.shadow_params)}


@dataclass
class TrainState:
    step: int
    epoch: int
    index: int


def save_checkpoint(run: Path, config: OdinConfig, model, ema, optimizer, state: TrainState, keep: int) -> Path:
    ckpts = checkpoints_dir(run)
    ckpts.mkdir(parents=True, exist_ok=True)
    name = f"step_{state.step:08d}"
    tmp = temp_dir(ckpts, f".{name}.")
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(weights, tmp / "model.safetensors")
        save_file(_named_shadow(model, ema), tmp / "ema.safetensors")
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        ema_meta = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
        atomic_write_json(tmp / "odin.json", {
            "config": config.to_dict(), "denoiser_config": denoiser_config(model), "signature": model_signature(config),
            "step": state.step, "epoch": state.epoch, "index": state.index, "ema": ema_meta, "optimizer": opt_meta})
        final = ckpts / name
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_json(ckpts / "latest.json", {"name": name, "step": state.step})
    for old in sorted(ckpts.glob("step_*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_meta(ckpt: Path) -> dict:
    path = Path(ckpt) / "odin.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise OdinError("not an Odin checkpoint (no odin.json)", ckpt) from None
    except json.JSONDecodeError as e:
        raise OdinError(f"corrupt checkpoint metadata ({e.msg})", path) from None


def check_compatible(meta: dict, config: OdinConfig, ckpt: Path) -> None:
    """Refuse to resume a checkpoint whose model differs from ``config``."""
    mine, theirs = model_signature(config), meta["signature"]
    if mine != theirs:
        diffs = [f"{sec}.{k}: {theirs[sec].get(k)!r} != {mine[sec].get(k)!r}"
                 for sec in mine for k in mine[sec] if mine[sec].get(k) != theirs.get(sec, {}).get(k)]
        raise OdinError(f"checkpoint was trained with another model config ({'; '.join(diffs)}); "
                        "use a new --out or the run's own config", ckpt)


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except FileNotFoundError:
        raise OdinError("missing checkpoint file", path) from None
    except (SafetensorError, OSError) as e:
        raise OdinError(f"unreadable safetensors file ({e})", path) from None


def load_weights(model: torch.nn.Module, path: Path, params_only: bool = False) -> None:
    tensors = _load_tensors(path)
    expected = dict(model.named_parameters()) if params_only else model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    bad = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or bad or set(tensors) - set(expected):
        what = f"{len(missing)} missing" if missing else f"shape mismatch in {bad[:3]}" if bad else "unexpected keys"
        raise OdinError(f"weights do not fit this model ({what}): a checkpoint of another config?", path)
    model.load_state_dict(tensors, strict=not params_only)


def restore_training(ckpt: Path, model, ema, optimizer) -> TrainState:
    """Load weights, EMA and optimizer; returns the step and data-stream position."""
    meta = read_meta(ckpt)
    load_weights(model, ckpt / "model.safetensors")
    shadow = _load_tensors(ckpt / "ema.safetensors")
    params = dict(model.named_parameters())
    if set(shadow) != set(params):
        raise OdinError("EMA weights do not fit this model", ckpt / "ema.safetensors")
    ema.load_state_dict({**meta["ema"], "shadow_params": [shadow[n].to(params[n].device) for n in params]})
    opt_state = _unflatten_optimizer(_load_tensors(ckpt / "optimizer.safetensors"), meta["optimizer"])
    optimizer.load_state_dict(opt_state)
    return TrainState(meta["step"], meta["epoch"], meta["index"])


def load_for_inference(run_or_ckpt: str | Path, use_ema: bool = True) -> tuple[OdinDenoiser, OdinConfig, dict]:
    """(model in eval mode with EMA weights, config, checkpoint metadata) from a RUN or checkpoint folder."""
    path = Path(run_or_ckpt)
    if not path.exists():
        raise OdinError("run or checkpoint not found", path)
    ckpt = path if (path / "odin.json").exists() else latest_checkpoint(path)
    if ckpt is None:
        raise OdinError("no checkpoint yet (train first, or wait for the first checkpoint)", path)
    meta = read_meta(ckpt)
    config = OdinConfig.from_dict(meta["config"], ckpt / "odin.json")
    if "denoiser_config" in meta:
        model = OdinDenoiser.from_config(meta["denoiser_config"])
    else:  # checkpoints written before the denoiser was a diffusers model
        model = build_denoiser(meta["unet_config"], config.model)
    load_weights(model, ckpt / ("ema.safetensors" if use_ema else "model.safetensors"), params_only=use_ema)
    return model.eval(), config, meta


def export_pipeline(run: Path, model, ema, codec, config: OdinConfig) -> Path:
    """Write RUN/pipeline (hub layout, EMA weights).  It is assembled aside and swapped in, so a
    kill leaves a whole pipeline (RUN/pipeline, or for an instant RUN/.pipeline.old)."""
    from odin.pipeline import OdinPipeline

    final = Path(run) / "pipeline"
    tmp = temp_dir(run, ".pipeline.")
    ema.store(model.parameters())
    ema.copy_to(model.parameters())
    try:
        pipe = OdinPipeline(model, training_scheduler(config.diffusion), getattr(codec, "vae", None),
                            config.model.resolution, config.to_dict())
        pipe.save_pretrained(tmp)
        old = final.with_name(".pipeline.old")
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        ema.restore(model.parameters())
    return final

