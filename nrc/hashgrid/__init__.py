"""Multiresolution hash-grid encoding (tiny-cuda-nn compatible): torch reference, C++/OpenMP CPU
kernels, Triton kernels, tcnn."""
from .cpu_backend import hash_grid_cpu
from .encoding import BACKENDS, HashGridEncoding
from .reference import hash_grid_reference
from .spec import HashGridSpec, init_table

__all__ = ["BACKENDS", "HashGridEncoding", "HashGridSpec", "hash_grid_cpu", "hash_grid_reference", "init_table"]
