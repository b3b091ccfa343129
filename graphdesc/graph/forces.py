"""Forces and virials from the energy gradient with respect to edge vectors."""

from __future__ import annotations

from .. import _backend as B
from ..segment import segment_sum
from .container import NeighborGraph
from .container import num_nodes as count_nodes
from .validate import node_frame

__all__ = ["edge_force_virial"]


def edge_force_virial(g, graph: NeighborGraph, num_nodes: int | None = None, num_local: int | None = None):
    """Assemble forces and virials from ``g = dE/d(edge_vec)``.

    With ``edge_vec = r_src + shift - r_dst``:

    * ``F_k = sum_{e: dst=k} g_e - sum_{e: src=k} g_e`` (``F = -dE/dr``);
    * edge virial ``w_e = -g_e (x) edge_vec_e``, i.e. ``w[a, b] = -g[a] vec[b]``,
      the strain derivative ``-dE/d(eps)`` of the edge;
    * atom virial: ``w_e`` attributed to ``src``; frame virial: the sum of its
      edges, each in the frame of its ``dst``. Padding edges contribute
      nothing, whatever ``g`` holds there.

    Ghosts (nodes ``[num_local, N)``, only ever ``src``) get their force
    ``-sum_{src=k} g`` and their atom virial like any node; an engine sends both
    back to the owner atom. The frame virial is the local domain's: every edge
    has a local center.

    Args:
        g: ``(E, 3)`` float, the gradient of the total energy w.r.t. ``edge_vec``, eV/Å.
        graph: the graph ``g`` belongs to.
        num_nodes: ``N``; default ``sum(n_node)`` (pass it when tracing).
        num_local: ``L``, the local nodes ``n_node`` counts; default ``N``.

    Returns:
        ``(force (N, 3), atom_virial (N, 3, 3), virial (nf, 3, 3))`` in ``g``'s dtype: forces in eV/Å,
        virials in eV.
    """
    xp = B.namespace(g, graph.edge_vec)
    if tuple(g.shape) != tuple(graph.edge_vec.shape):
        raise ValueError(f"g must have the shape of edge_vec {tuple(graph.edge_vec.shape)}, got {tuple(g.shape)}")
    n = count_nodes(graph) if num_nodes is None else num_nodes
    # zero g and edge_vec on padding first: either may hold anything (nan, inf),
    # and 0 * nan in the virial product would reach the outputs and a backward pass
    real = graph.edge_mask[:, None]
    g = xp.where(real, g, xp.zeros_like(g))
    vec = xp.where(real, graph.edge_vec, xp.zeros_like(graph.edge_vec))
    force = segment_sum(g, graph.dst, n) - segment_sum(g, graph.src, n)
    w = -g[:, :, None] * vec[:, None, :]  # (E, 3, 3)
    atom_virial = segment_sum(w, graph.src, n)
    frame = B.gather(node_frame(graph.n_node, n if num_local is None else num_local), graph.dst)  # (E,)
    virial = segment_sum(w, frame, graph.n_node.shape[0])  # w is 0 on padding
    return force, atom_virial, virial
