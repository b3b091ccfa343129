"""The DPA1 energy model, functional: parameters + graph -> atom and frame energies.

Parameters::

    {"descriptor": <DPA1 tree, graphdesc.descriptor.params>,
     "fitting": <fitting tree, graphdesc.model.fitting>}

Forces and virials are the gradient of the total energy with respect to
``graph.edge_vec``, assembled by :func:`graphdesc.graph.edge_force_virial`;
the torch and jax shells take that gradient (numpy evaluates energies only).
"""

from __future__ import annotations

from .. import _backend as B
from ..descriptor import init_params
from ..descriptor.graph_path import (attention_layout, center_inputs, center_outputs, center_pieces, in_node_order,
                                     num_centers)
from ..descriptor.nets import type_table
from ..graph.container import NeighborGraph
from ..graph.validate import node_frame
from ..segment import segment_sum
from .config import EnergyConfig
from .fitting import fitting_energy, init_fitting

__all__ = ["init_model_params", "atom_energy", "atom_energy_stages", "center_energy", "frame_energy",
           "with_ghosts"]


def init_model_params(config: EnergyConfig, seed: int = 0) -> dict:
    """Fresh model parameters (numpy): descriptor from ``seed``, fitting from ``seed + 1``."""
    if not isinstance(config, EnergyConfig):
        raise TypeError(f"config must be an EnergyConfig, got {type(config).__name__}")
    return {"descriptor": init_params(config.descriptor, seed), "fitting": init_fitting(config, seed + 1)}


def atom_energy(params: dict, config: EnergyConfig, graph: NeighborGraph, atype, *, static: bool = False,
                num_local=None, attention: str = "auto"):
    """Atom energies ``(L,)`` in eV of the local nodes of ``graph`` (every node, ``L = N``, without ghosts).

    Args:
        params: the model tree, in the graph's array library and float dtype.
        config: the hyperparameters.
        graph: compact graph (``edge_vec`` in Å), or the shape-static layout with ``static=True``.
        atype: ``(N,)`` int atom types.
        num_local: ``L`` when nodes ``[L, N)`` are ghosts (see
            :func:`~graphdesc.descriptor.dpa1_graph`); ghosts have no atom
            energy (:func:`with_ghosts` gives them 0).
        attention: the block stage's layout (see :func:`~graphdesc.descriptor.dpa1_graph`).
    """
    parts, pieces, energy_of = atom_energy_stages(params, config, graph, atype, static=static, num_local=num_local,
                                                  attention=attention)
    out = [energy_of(piece) for piece in pieces]
    return in_node_order(B.namespace(out[0]).concat(out) if len(out) > 1 else out[0], parts)


def atom_energy_stages(params: dict, config: EnergyConfig, graph: NeighborGraph, atype, *, static: bool = False,
                       num_local=None, attention: str = "auto"):
    """:func:`atom_energy` split into its edge stage and independent pieces of centers.

    Arguments as for :func:`atom_energy`. Returns ``(parts, pieces, energy_of)``:
    the per-center inputs of the block stage (``parts``, see
    :func:`~graphdesc.descriptor.graph_path.center_inputs`), the same cut into
    chunks of centers (``pieces``, a list of dicts; one on accelerators and when
    traced), and ``energy_of(piece) -> (C,)``, the atom energies of a piece's
    ``C`` centers, in eV and the graph's float dtype (``edge_vec`` in Å). Concatenated over
    ``pieces`` they are the atom energies in the parts' row order; ``in_node_order(energies, parts)``
    is :func:`atom_energy`.
    A piece depends on the edges only through its own ``parts`` rows, so the
    torch shell differentiates one piece at a time (forces at the memory of one piece).
    """
    if not isinstance(config, EnergyConfig):
        raise TypeError(f"config must be an EnergyConfig, got {type(config).__name__}")
    desc_config, desc_params = config.descriptor, params["descriptor"]
    attention = attention_layout(attention, graph, num_centers(atype, num_local))
    table, parts = center_inputs(desc_params, desc_config, graph, atype, deepmd_compat=config.deepmd_compat,
                                 static=static, num_local=num_local, attention=attention)

    def energy_of(piece):
        return center_energy(params, config, piece, table, attention=attention, static=static)

    return parts, center_pieces(parts, desc_config, attention), energy_of


def center_energy(params: dict, config: EnergyConfig, piece: dict, table=None, *, attention: str = "blocks",
                  static: bool = False):
    """Atom energies ``(C,)`` of a piece of ``C`` centers of the block stage's inputs, in its row order.

    Args:
        params, config: the model.
        piece: rows of :func:`~graphdesc.descriptor.graph_path.center_inputs`' ``parts``.
        table: the type embedding table ``(ntypes, dt)``; default computed from ``params``.
        attention, static: as the parts were made with.
    """
    desc_config, desc_params = config.descriptor, params["descriptor"]
    table = type_table(desc_params, desc_config) if table is None else table
    descriptor, _ = center_outputs(desc_params, desc_config, table, piece, attention=attention, static=static)
    return fitting_energy(params["fitting"], config, descriptor, piece["atype"])


def frame_energy(atom_e, n_node):
    """Frame energies ``(nf,)`` in eV: the sum of float ``atom_e (L,)`` (local atoms, eV) over each frame of int64
    ``n_node (nf,)``; ``atom_e``'s dtype."""
    return segment_sum(atom_e, node_frame(n_node, atom_e.shape[0]), n_node.shape[0])


def with_ghosts(atom_e, num_nodes):
    """``(N,)`` atom energies (eV, ``atom_e``'s float dtype): ``atom_e (L,)`` of the local nodes, then exactly 0 for
    the ``N - L`` ghosts."""
    xp = B.namespace(atom_e)
    zeros = xp.zeros((num_nodes - atom_e.shape[0],), dtype=atom_e.dtype, device=B.device(atom_e))
    return xp.concat([atom_e, zeros])
