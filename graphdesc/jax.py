"""JAX shell: ``NeighborGraph`` as a pytree and a jitted DPA1 on the shape-static layout."""

from __future__ import annotations

import jax

from .descriptor import DPA1Config, dpa1_graph
from .graph.container import NeighborGraph

__all__ = ["dpa1_jit"]

jax.tree_util.register_pytree_node(
    NeighborGraph,
    lambda g: ((g.edge_index, g.edge_vec, g.edge_mask, g.n_node), None),
    lambda _, fields: NeighborGraph(*fields),
)


def dpa1_jit(config: DPA1Config, *, deepmd_compat: bool = False):
    """A jitted ``f(params, graph, atype) -> (descriptor, rot_mat)``.

    ``graph`` must be in the shape-static layout (``graphdesc.graph.to_static``
    with ``config.sel``): sizes then depend only on ``N``, so one compilation
    serves every geometry with the same atom count.
    """
    if not isinstance(config, DPA1Config):
        raise TypeError(f"config must be a DPA1Config, got {type(config).__name__}")

    @jax.jit
    def descriptor(params, graph: NeighborGraph, atype):
        return dpa1_graph(params, config, graph, atype, deepmd_compat=deepmd_compat, static=True)

    return descriptor
