"""JAX shell: ``NeighborGraph`` as a pytree; jitted DPA1 and energy model on the shape-static layout."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .descriptor import DPA1Config, dpa1_graph
from .graph.container import NeighborGraph
from .graph.forces import edge_force_virial
from .model import EnergyConfig, atom_energy, frame_energy

__all__ = ["dpa1_jit", "energy_jit"]

jax.tree_util.register_pytree_node(
    NeighborGraph,
    lambda g: ((g.edge_index, g.edge_vec, g.edge_mask, g.n_node), None),
    lambda _, fields: NeighborGraph(*fields),
)


def dpa1_jit(config: DPA1Config, *, deepmd_compat: bool = False, attention: str = "auto"):
    """A jitted ``f(params, graph, atype) -> (descriptor, rot_mat)``.

    ``graph`` must be in the shape-static layout (``graphdesc.graph.to_static``
    with ``config.sel``): sizes then depend only on ``N``, so one compilation
    serves every geometry with the same atom count. ``attention``: the block
    stage's layout (see :func:`~graphdesc.descriptor.dpa1_graph`; ``"auto"`` is
    ``"blocks"`` under jit, ``"pairs"`` runs on the static layout's ``N sel^2``
    masked pairs).
    """
    if not isinstance(config, DPA1Config):
        raise TypeError(f"config must be a DPA1Config, got {type(config).__name__}")

    @jax.jit
    def descriptor(params, graph: NeighborGraph, atype):
        return dpa1_graph(params, config, graph, atype, deepmd_compat=deepmd_compat, static=True, attention=attention)

    return descriptor


def energy_jit(config: EnergyConfig, *, attention: str = "auto"):
    """A jitted ``f(params, graph, atype) -> dict`` of energies, forces and virials.

    Same outputs as :meth:`graphdesc.torch.EnergyModel.forward`; forces from
    ``jax.grad`` of the total energy w.r.t. ``edge_vec``. ``graph`` must be in
    the shape-static layout with ``config.descriptor.sel`` slots. ``attention``
    as for :func:`dpa1_jit`.
    """
    if not isinstance(config, EnergyConfig):
        raise TypeError(f"config must be an EnergyConfig, got {type(config).__name__}")

    @jax.jit
    def evaluate(params, graph: NeighborGraph, atype):
        def total(vec):
            atom_e = atom_energy(params, config, graph.replace(edge_vec=vec), atype, static=True, attention=attention)
            energy = frame_energy(atom_e, graph.n_node)
            return jnp.sum(energy), (energy, atom_e)

        g, (energy, atom_e) = jax.grad(total, has_aux=True)(graph.edge_vec)
        force, atom_virial, virial = edge_force_virial(g, graph, atype.shape[0])
        return {"energy": energy, "atom_energy": atom_e, "force": force, "virial": virial,
                "atom_virial": atom_virial}

    return evaluate
