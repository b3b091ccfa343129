"""The NeighborGraph container: the one data structure every layer consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["NeighborGraph", "num_nodes"]


@dataclass(frozen=True)
class NeighborGraph:
    """Directed neighbor edges of one or several frames on one flat node axis.

    ``N = sum(n_node)`` nodes (atoms); frame ``f`` owns nodes
    ``[sum(n_node[:f]), sum(n_node[:f+1]))``. Atom types travel beside the
    graph as ``atype (N,)``. Arrays are numpy, torch or jax, all of one library.

    Attributes:
        edge_index: ``(2, E)`` int64, ``[src, dst]``. ``dst`` is the center,
            ``src`` the neighbor (for a periodic image, the local atom it is an
            image of). Builders emit edges grouped by ``dst`` (center-major),
            nearest first within a center.
        edge_vec: ``(E, 3)`` float (Å), ``r_src + shift - r_dst`` with ``shift`` the
            Cartesian lattice translation of the image. The only geometry
            input, and the autograd leaf for forces and virials.
        edge_mask: ``(E,)`` bool, True for real edges. Padding edges have
            ``edge_vec == 0`` and in-range indices; they never change a result.
        n_node: ``(nf,)`` int64, atoms per frame.

    Ghosts (an MD engine's halo): when a consumer is given ``num_local = L``,
    ``n_node`` counts the local atoms of each frame (``sum(n_node) == L``),
    nodes ``[0, L)`` are those local atoms and nodes ``[L, N)`` are ghosts,
    copies of atoms owned elsewhere that are only ever ``src``; ``N`` is then
    the length of ``atype``. See :mod:`graphdesc.graph.halo`.

    Two layouts: *compact* (only real edges, ``E = sum(deg)``) and
    *shape-static* (center-major, exactly ``sel`` slots per center,
    ``E = N * sel``, edge ``c*sel + m`` belongs to center ``c``); see
    :func:`graphdesc.graph.to_static`.
    """

    edge_index: Any
    edge_vec: Any
    edge_mask: Any
    n_node: Any

    @property
    def src(self):
        """``(E,)`` neighbor of each edge."""
        return self.edge_index[0]

    @property
    def dst(self):
        """``(E,)`` center of each edge."""
        return self.edge_index[1]

    @property
    def num_edges(self) -> int:
        return self.edge_vec.shape[0]

    @property
    def num_frames(self) -> int:
        return self.n_node.shape[0]

    def replace(self, **changes) -> NeighborGraph:
        """A copy with some fields replaced (e.g. a new ``edge_vec`` leaf)."""
        fields = dict(edge_index=self.edge_index, edge_vec=self.edge_vec, edge_mask=self.edge_mask, n_node=self.n_node)
        fields.update(changes)
        return NeighborGraph(**fields)


def num_nodes(graph: NeighborGraph) -> int:
    """``N = sum(n_node)`` as a Python int (eager; when tracing, pass N from a shape).

    Args:
        graph: a :class:`NeighborGraph`; only ``n_node (nf,)`` (integer) is read, no geometry (no Å).
    """
    return int(graph.n_node.sum())
