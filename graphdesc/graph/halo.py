"""Local atoms plus ghosts: the graph a domain-decomposed MD engine hands the model.

An engine that splits space into domains (LAMMPS and every code built like
it) gives each domain its *local* atoms and *ghost* copies (halo) of atoms
owned elsewhere: periodic images and atoms of neighbouring domains, each with
its own coordinates. Node order is locals first, ghosts after (LAMMPS's
``[0, nlocal)`` then ``[nlocal, nlocal + nghost)``); every edge has a local
``dst`` (centers are local atoms), and a ghost appears only as a ``src``.
DPA1's receptive field is one cutoff, so a halo of width ``rcut`` is exact.

:func:`halo_graph` builds that graph for a subset of the atoms of a periodic
box, the way an engine would (explicit ghost coordinates, no periodic
shifts); :func:`fold_ghosts` sends per-node results back to their owners.
Tests and benchmarks use them to prove that the sum over domains equals the
whole box; an engine builds the same arrays itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .build import MIN_DISTANCE, checked_pairs
from .container import NeighborGraph

__all__ = ["HaloGraph", "halo_graph", "batch_halos", "fold_ghosts"]


@dataclass(frozen=True)
class HaloGraph:
    """One domain's graph: ``L`` local atoms then ``G`` ghosts (numpy).

    Attributes:
        graph: :class:`NeighborGraph` over ``N = L + G`` nodes (``edge_vec`` in Å); ``n_node = [L]``;
            every ``dst < L``; ``edge_vec = positions[src] - positions[dst]``.
        atype: ``(N,)`` int64 types, locals then ghosts.
        positions: ``(N, 3)`` float64 node coordinates in Å (ghosts at their image positions).
        owner: ``(N,)`` int64 index of the box atom each node is a copy of.
        num_local: ``L``.
    """

    graph: NeighborGraph
    atype: np.ndarray
    positions: np.ndarray
    owner: np.ndarray
    num_local: int

    @property
    def num_ghosts(self) -> int:
        return len(self.owner) - self.num_local


def halo_graph(positions, atype, local, cutoff: float, *, cell=None, pbc=False, extra_ghosts: float = 0.0,
               min_distance: float = MIN_DISTANCE) -> HaloGraph:
    """The graph of the atoms ``local`` of a box, with a halo of ghosts, as an MD engine builds it.

    Args:
        positions: ``(n, 3)`` float64 positions of the whole box, Å.
        atype: ``(n,)`` int types.
        local: ``(n,)`` bool, the atoms this domain owns (may be none).
        cutoff: the model's ``rcut``.
        cell: the box (see :func:`~graphdesc.graph.build_graph`).
        pbc: periodicity per axis (see :func:`~graphdesc.graph.build_graph`).
        extra_ghosts: also add, as edgeless ghosts, every image within
            ``cutoff + extra_ghosts`` of a local atom: an engine's halo is
            wider than the neighbors (skin, whole-domain halos).

    Returns:
        a :class:`HaloGraph`: locals in box order, then ghosts (one per
        distinct image of an atom within reach of a local atom, the locals
        themselves at zero shift excluded), each ghost once.
    """
    positions = np.asarray(positions, dtype=np.float64)
    local = np.asarray(local, dtype=bool)
    atype = np.asarray(atype, dtype=np.int64)
    _, cell_np, dst, src, shift, _, _ = checked_pairs(positions, cutoff + extra_ghosts, cell, pbc, min_distance)
    box = np.zeros((3, 3)) if cell_np is None else cell_np
    keep = local[dst]
    src, dst, shift = src[keep], dst[keep], shift[keep]
    local_index = np.cumsum(local) - 1  # box atom -> local node
    num_local = int(local.sum())
    is_ghost = ~(local[src] & ~shift.any(axis=1))
    keys, ghost_of_edge = np.unique(np.column_stack([src[is_ghost], shift[is_ghost]]), axis=0, return_inverse=True)
    ghost_owner, ghost_shift = keys[:, 0], keys[:, 1:]
    node_src = np.where(is_ghost, 0, local_index[src])
    node_src[is_ghost] = num_local + ghost_of_edge.reshape(-1)
    owner = np.concatenate([np.flatnonzero(local), ghost_owner]).astype(np.int64)
    node_pos = np.concatenate([positions[local], positions[ghost_owner] + ghost_shift @ box])
    node_dst = local_index[dst]
    vec = node_pos[node_src] - node_pos[node_dst]
    real = np.einsum("ij,ij->i", vec, vec) < cutoff * cutoff  # extra ghosts are nodes, not edges
    order = np.lexsort((node_src[real], node_dst[real]))
    graph = NeighborGraph(
        edge_index=np.stack([node_src[real][order], node_dst[real][order]]).astype(np.int64),
        edge_vec=vec[real][order],
        edge_mask=np.ones(int(real.sum()), dtype=bool),
        n_node=np.array([num_local], dtype=np.int64),
    )
    return HaloGraph(graph, atype[owner], node_pos, owner, num_local)


def batch_halos(halos) -> HaloGraph:
    """Several domains (or frames) as one call: all local atoms, frame by frame, then all ghosts.

    ``n_node`` lists each frame's local atoms; ``owner`` keeps each frame's own
    atom indices (fold each frame's nodes separately, or offset them).

    Args:
        halos: :class:`HaloGraph` s, domain ``k`` with ``L_k`` locals and ``G_k`` ghosts (numpy; positions
            float64 in Å).

    Returns:
        one :class:`HaloGraph` of ``sum L_k + sum G_k`` nodes: ``atype (N,)`` int64, ``positions (N, 3)``
        float64 in Å, ``owner (N,)`` int64, ``n_node (nk,)`` int64, ``num_local = sum L_k``.
    """
    halos = list(halos)
    if not halos:
        raise ValueError("batch_halos needs at least one HaloGraph")
    total_local = sum(h.num_local for h in halos)
    local_off = np.cumsum([0] + [h.num_local for h in halos])[:-1]
    ghost_off = total_local + np.cumsum([0] + [h.num_ghosts for h in halos])[:-1]
    index, vecs, masks = [], [], []
    for h, lo, go in zip(halos, local_off, ghost_off):
        node = np.concatenate([lo + np.arange(h.num_local), go + np.arange(h.num_ghosts)]).astype(np.int64)
        index.append(node[h.graph.edge_index])
        vecs.append(h.graph.edge_vec)
        masks.append(h.graph.edge_mask)

    def nodes(field):
        return np.concatenate([getattr(h, field)[: h.num_local] for h in halos]
                              + [getattr(h, field)[h.num_local:] for h in halos])

    graph = NeighborGraph(np.concatenate(index, axis=1), np.concatenate(vecs), np.concatenate(masks),
                          np.array([h.num_local for h in halos], dtype=np.int64))
    return HaloGraph(graph, nodes("atype"), nodes("positions"), nodes("owner"), total_local)


def fold_ghosts(values, owner, num_atoms: int):
    """Sum per-node ``values (N, ...)`` onto the box atoms they copy: ``(num_atoms, ...)`` (numpy).

    This is the engine's reverse communication (LAMMPS ``newton_pair on``):
    each ghost's force goes back to its owner.

    Args:
        values: ``(N, ...)`` float, e.g. forces ``(N, 3)`` in eV/Å or atom virials ``(N, 3, 3)`` in eV.
        owner: ``(N,)`` int64, the box atom of each node.
        num_atoms: atoms in the box.

    Returns:
        ``(num_atoms, ...)`` of ``values``' dtype and unit.
    """
    values = np.asarray(values)
    out = np.zeros((num_atoms,) + values.shape[1:], dtype=values.dtype)
    np.add.at(out, np.asarray(owner), values)
    return out
