"""Argument types shared by every `odin` subcommand.

A bad number, device or output path is refused while the command line is parsed, before anything
is read or written, as one line naming the flag (argparse reports a type's ArgumentTypeError as
``argument --flag: <message>``; ``OneLineParser`` prints it as ``odin CMD: error: --flag: <message>``).
"""
from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

_Bad = argparse.ArgumentTypeError


class OneLineParser(argparse.ArgumentParser):
    """Errors are one line (no usage block): scripts and logs see ``odin CMD: error: --flag: problem``.
    Sub-parsers inherit the class, so every subcommand behaves the same."""

    def error(self, message: str):
        message = re.sub(r"^argument ([^:]+): ", r"\1: ", message)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _number(text: str, kind: type):
    try:
        value = kind(text)
    except ValueError:
        raise _Bad(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise _Bad(f"must be a finite number, got {text}")
    return value


def finite_float(text: str) -> float:
    return _number(text, float)


def positive_float(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise _Bad(f"must be > 0, got {text}")
    return value


def nonneg_float(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise _Bad(f"must be >= 0, got {text}")
    return value


def unit_float(text: str) -> float:
    value = _number(text, float)
    if not 0 <= value <= 1:
        raise _Bad(f"must be in [0, 1], got {text}")
    return value


def fov_degrees(text: str) -> float:
    value = _number(text, float)
    if not 0 < value < 180:
        raise _Bad(f"must be a field of view in (0, 180) degrees, got {text}")
    return value


def int_at_least(low: int):
    def parse(text: str) -> int:
        value = _number(text, int)
        if value < low:
            raise _Bad(f"must be an integer >= {low}, got {text}")
        return value
    parse.__name__ = f"int_at_least_{low}"
    return parse


positive_int = int_at_least(1)
nonneg_int = int_at_least(0)


def int_between(low: int, high: int):
    def parse(text: str) -> int:
        value = _number(text, int)
        if not low <= value <= high:
            raise _Bad(f"must be an integer in [{low}, {high}], got {text}")
        return value
    parse.__name__ = f"int_between_{low}_{high}"
    return parse


def device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda[:N]``, ``mps``...: a device this machine has (CUDA is checked here,
    not at the first tensor, where torch raises an AssertionError)."""
    if text in ("auto", "cpu"):
        return text
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise _Bad(f"unknown device {text!r} (auto, cpu, cuda, cuda:N, mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise _Bad(f"{text}: CUDA is not available here (torch {torch.__version__}"
                       f"{'' if torch.version.cuda else ', built without CUDA'}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise _Bad(f"{text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise _Bad("mps: not available here; use --device cpu")
    elif dev.type not in ("cuda", "mps", "cpu"):
        raise _Bad(f"{text}: device type {dev.type!r} is not supported (auto, cpu, cuda, cuda:N, mps)")
    return text


def _file_above(path: Path) -> Path | None:
    """The nearest existing ancestor of ``path`` when it is not a folder (nothing can be made below it)."""
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def out_dir(text: str) -> str:
    """An output folder: absent (it will be made) or a folder, never a file or below one."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise _Bad(f"{text}: exists and is not a folder")
    blocker = _file_above(path)
    if blocker is not None:
        raise _Bad(f"{text}: cannot be made, {blocker} is a file")
    return text


def out_file(text: str) -> str:
    """An output file: absent or a file (replaced), in a folder that exists or can be made."""
    path = Path(text)
    if path.is_dir():
        raise _Bad(f"{text}: is a folder; give a file name")
    blocker = _file_above(path)
    if blocker is not None:
        raise _Bad(f"{text}: cannot be made, {blocker} is a file")
    return text
