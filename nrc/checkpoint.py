"""A run folder: ``config.json`` + ``checkpoint.safetensors`` (+ PNGs written by the trainer).

The checkpoint is ONE safetensors file holding the model (``model.*``), the optimizer's
moments (``optim.*``) and, in its metadata, the step, the loss history and the architecture
it was trained with - so a single atomic rename makes a save complete or absent, never half.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ingest.atomic import atomic_path, atomic_write_json
from ingest.errors import OdinError
from nrc.config import NRCConfig

CONFIG_NAME = "config.json"
CHECKPOINT_NAME = "checkpoint.safetensors"


def read_config(run_dir: str | Path) -> NRCConfig:
    path = Path(run_dir) / CONFIG_NAME
    try:
        return NRCConfig.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise OdinError("not an NRC run (config.json missing)", path) from None
    except (json.JSONDecodeError, ValueError, TypeError) as e:
        raise OdinError(f"invalid NRC config ({e})", path) from None


def write_config(run_dir: str | Path, config: NRCConfig) -> None:
    atomic_write_json(Path(run_dir) / CONFIG_NAME, config.to_dict())


def _architecture_json(config: NRCConfig) -> str:
    return json.dumps(config.architecture(), sort_keys=True)


def save_checkpoint(run_dir: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    step: int, history: list[dict], config: NRCConfig) -> Path:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if optimizer is not None:
        for index, state in optimizer.state_dict()["state"].items():
            for name, value in state.items():
                tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).detach().contiguous().cpu()
    metadata = {"step": str(step), "history": json.dumps(history), "architecture": _architecture_json(config)}
    path = Path(run_dir) / CHECKPOINT_NAME
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def first_difference(a: dict, b: dict, prefix: str = "") -> str:
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            diff = first_difference(va, vb, f"{prefix}{key}.")
            if diff:
                return diff
        elif va != vb:
            return f"{prefix}{key}: {va!r} in checkpoint vs {vb!r} in config"
    return ""


def _without_sources(architecture: dict) -> dict:
    """Where a scene's files are is not what the weights mean (its frame is): a run whose scene
    path was stored relative, or moved, still loads."""
    return {**architecture, "scenes": [{k: v for k, v in s.items() if k != "source"}
                                       for s in architecture.get("scenes", [])]}


def load_checkpoint(run_dir: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    config: NRCConfig) -> tuple[int, list[dict]]:
    """Restore model (and optimizer) in place; returns (step, history). OdinError on any mismatch."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(run_dir) / CHECKPOINT_NAME
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise OdinError("checkpoint missing", path) from None
    except (SafetensorError, OSError) as e:
        raise OdinError(f"unreadable checkpoint ({e})", path) from None
    if "architecture" not in metadata:
        raise OdinError("not an NRC checkpoint (no architecture metadata)", path)
    saved, ours = _without_sources(json.loads(metadata["architecture"])), _without_sources(config.architecture())
    if saved != ours:
        # Scene lists compare as a whole; dicts are walked to name the first differing setting.
        diff = first_difference({k: v for k, v in saved.items() if k != "scenes"},
                                 {k: v for k, v in ours.items() if k != "scenes"})
        raise OdinError(f"checkpoint is from another config ({diff or 'scenes differ'})", path)
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    expected = model.state_dict()
    bad = [k for k in expected if k not in state or state[k].shape != expected[k].shape]
    if bad or set(state) - set(expected):
        raise OdinError(f"checkpoint tensors do not match the model (first: {(bad or sorted(set(state) - set(expected)))[0]})", path)
    model.load_state_dict(state)
    if optimizer is not None:
        opt_state: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                opt_state.setdefault(int(index), {})[name] = value
        device = next(model.parameters()).device
        opt_state = {i: {n: (v if n == "step" else v.to(device)) for n, v in s.items()} for i, s in opt_state.items()}
        optimizer.load_state_dict({"state": opt_state, "param_groups": optimizer.state_dict()["param_groups"]})
    return int(metadata["step"]), json.loads(metadata.get("history", "[]"))


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CHECKPOINT_NAME).exists()


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", backend: str = "auto"):
    """(model in eval mode, config) of a trained run - what the renderer, mesh exporter and viewer use."""
    from nrc.field import NRCModel

    config = read_config(run_dir)
    if not config.scenes:
        raise OdinError("config lists no scenes", Path(run_dir) / CONFIG_NAME)
    model = NRCModel(config, backend=backend).to(device)
    load_checkpoint(run_dir, model, None, config)
    return model.eval(), config
