"""graphdesc: DeePMD's DPA1 descriptor on an edge graph, numpy / torch / jax.

Layers (data flows down, never back up)::

    _backend   the only module with numpy/torch/jax branches
    segment    segment_sum, segment_max, segment_softmax (mask-safe)
    pairs      center_edge_pairs: compact (dynamic) and shape-static forms
    graph      NeighborGraph, validation, O(N) builders, layouts, force/virial assembly
"""

from .pairs import center_edge_pairs, pair_pattern
from .segment import segment_max, segment_softmax, segment_sum

__version__ = "0.1.0"

__all__ = [
    "segment_sum",
    "segment_max",
    "segment_softmax",
    "center_edge_pairs",
    "pair_pattern",
    "__version__",
]
