"""Fitting NRC deterministically on CPU: what makes a seed reproduce its weights, and at which
thread counts (measured)."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def deterministic_on_cpu(device):
    """PyTorch's deterministic kernels while fitting on CPU. The backward of an indexed read
    (``codes[index]``, the reference hash grid's ``table[index]``) accumulates with atomic adds
    across threads once it has 32768 elements, so with more than one thread every run differed
    (56 of 80 tensors after 30 tiny steps); the deterministic path accumulates in order, and is
    faster here (24576 x 16 codes: 1.6 vs 2.3 ms, best of 200, 2 threads).

    Measured with it: a seed gives byte-identical weights run to run at any fixed thread count,
    and the same at 1 and 2 threads (tiny and cpu presets; tests/test_crash_safety.py). Not at
    every count: at 4 threads the first forward pass already differs in the last bits, with
    either hash-grid backend, because PyTorch splits a reduction to one number (a mean over the
    batch's samples) into per-thread partial sums (the mean of 49152 x 16 floats differs at 1,
    2 and 4 threads; the MLPs' matrix products do not, under MKL's strict reproducibility, which
    ``ingest`` turns on: without it, on an AVX-512 Xeon, a weight gradient's reduction over the
    batch differed between 1 and 2 threads), and the logged loss, such a mean, differs by about
    1e-7 even between 1 and 2. On CUDA atomics remain: not bitwise reproducible there."""
    if torch.device(device).type != "cpu":
        yield
        return
    before, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


def step_generator(seed: int, step: int, device) -> torch.Generator:
    """The random stream of one step, from ``(seed, step)`` alone: a run resumed at a save draws
    what it would have drawn had it not been killed."""
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + step)
    return g
