"""The DPA1 energy model, functional: parameters + graph -> atom and frame energies.

Parameters::

    {"descriptor": <DPA1 tree, graphdesc.descriptor.params>,
     "fitting": <fitting tree, graphdesc.model.fitting>}

Forces and virials are the gradient of the total energy with respect to
``graph.edge_vec``, assembled by :func:`graphdesc.graph.edge_force_virial`;
the torch and jax shells take that gradient (numpy evaluates energies only).
"""

from __future__ import annotations

from ..descriptor import dpa1_graph, init_params
from ..graph.container import NeighborGraph
from ..graph.validate import node_frame
from ..segment import segment_sum
from .config import EnergyConfig
from .fitting import fitting_energy, init_fitting

__all__ = ["init_model_params", "atom_energy", "frame_energy"]


def init_model_params(config: EnergyConfig, seed: int = 0) -> dict:
    """Fresh model parameters (numpy): descriptor from ``seed``, fitting from ``seed + 1``."""
    if not isinstance(config, EnergyConfig):
        raise TypeError(f"config must be an EnergyConfig, got {type(config).__name__}")
    return {"descriptor": init_params(config.descriptor, seed), "fitting": init_fitting(config, seed + 1)}


def atom_energy(params: dict, config: EnergyConfig, graph: NeighborGraph, atype, *, static: bool = False):
    """Atom energies ``(N,)`` of every node of ``graph``.

    Args:
        params: the model tree, in the graph's array library and float dtype.
        config: the hyperparameters.
        graph: compact graph, or the shape-static layout with ``static=True``.
        atype: ``(N,)`` int atom types.
    """
    if not isinstance(config, EnergyConfig):
        raise TypeError(f"config must be an EnergyConfig, got {type(config).__name__}")
    descriptor, _ = dpa1_graph(params["descriptor"], config.descriptor, graph, atype,
                               deepmd_compat=config.deepmd_compat, static=static)
    return fitting_energy(params["fitting"], config, descriptor, atype)


def frame_energy(atom_e, n_node):
    """Frame energies ``(nf,)``: the sum of ``atom_e (N,)`` over each frame of ``n_node (nf,)``."""
    return segment_sum(atom_e, node_frame(n_node, atom_e.shape[0]), n_node.shape[0])
