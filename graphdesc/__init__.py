"""graphdesc: DeePMD's DPA1 descriptor on an edge graph, numpy / torch / jax.

Layers (data flows down, never back up)::

    _backend   the only module with numpy/torch/jax branches
    segment    segment_sum, segment_max, segment_softmax (mask-safe)
    pairs      center_edge_pairs: compact (dynamic) and shape-static forms
    graph      NeighborGraph, validation, O(N) builders, layouts, force/virial assembly

Importing graphdesc before torch sets OpenMP's wait policy for a shared CPU (:mod:`graphdesc.threads`);
importing it at all sets glibc's malloc to keep freed memory for the next call (:mod:`graphdesc.allocator`);
importing it before torch on an AMD CPU has MKL run its Intel kernels (:mod:`graphdesc.mkl`).
"""

from .allocator import apply_policy as keep_freed_memory
from .mkl import apply_policy as use_mkl_intel_kernels
from .threads import apply_policy

apply_policy()  # before anything can load torch: libgomp reads its environment once
use_mkl_intel_kernels()  # before torch too: MKL's CPU check binds when libtorch_cpu.so loads
keep_freed_memory()

from .pairs import center_edge_pairs, pair_pattern  # noqa: E402
from .segment import segment_max, segment_softmax, segment_sum  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "segment_sum",
    "segment_max",
    "segment_softmax",
    "center_edge_pairs",
    "pair_pattern",
    "__version__",
]
