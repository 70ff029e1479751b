"""Multiresolution hash-grid encoding (tiny-cuda-nn compatible): torch reference, Triton kernels, tcnn."""
from .encoding import BACKENDS, HashGridEncoding
from .reference import hash_grid_reference
from .spec import HashGridSpec, init_table

__all__ = ["BACKENDS", "HashGridEncoding", "HashGridSpec", "hash_grid_reference", "init_table"]
