"""Layouts of the same graph: compact, shape-static, padded dense, DeePMD's quartet.

* :func:`truncate` keeps the ``sel`` nearest neighbors of each center (compact).
* :func:`to_static` lays a graph out center-major with exactly ``sel`` slots per
  center (``E = N * sel``), nearest first; padding slots are masked, with
  ``edge_vec = 0`` and ``src = dst = c``.
* :func:`to_dense` is the same as padded arrays ``(N, sel)``, the input of the
  dense reference path.
* :func:`from_dense_quartet` reads DeePMD-kit's extended quartet
  ``(coord_ext, atype_ext, nlist, mapping)``; :func:`to_quartet` writes one.

Slot order is nearest first by ``|edge_vec|`` (in the graph's dtype); equal
distances keep their order in the graph (the builder's tie rule).
"""

from __future__ import annotations

import numpy as np

from .. import _backend as B
from ..segment import segment_sum
from .container import NeighborGraph, num_nodes

__all__ = ["truncate", "to_static", "to_dense", "from_dense_quartet", "to_quartet"]


def _slot_rank(graph: NeighborGraph, n: int):
    """Rank of each edge among its center's real edges, nearest first.

    Returns ``(rank (E,), deg (N,))``; masked edges rank after all real ones.
    """
    xp = B.namespace(graph.edge_vec)
    r = xp.linalg.vector_norm(B.stop_gradient(graph.edge_vec), axis=-1)
    r = xp.where(graph.edge_mask, r, xp.full_like(r, float("inf")))
    by_r = xp.argsort(r, stable=True)
    order = B.gather(by_r, xp.argsort(B.gather(graph.dst, by_r), stable=True))  # (dst, r, edge order)
    deg = segment_sum(xp.astype(graph.edge_mask, xp.int64), graph.dst, n)
    count = segment_sum(xp.ones_like(graph.dst), graph.dst, n)
    first = B.gather(xp.cumulative_sum(count) - count, graph.dst)
    position = segment_sum(B.arange(order.shape[0], graph.dst), order, order.shape[0])  # inverse permutation
    return position - first, deg


def truncate(graph: NeighborGraph, sel: int) -> NeighborGraph:
    """Keep the ``sel`` nearest real neighbors of each center; drop masked edges.

    Ties in distance keep the graph's edge order. Eager only (the edge count
    depends on the data).

    Args:
        graph: a compact :class:`~graphdesc.graph.NeighborGraph` with ``E`` edges (any float dtype, kept).
        sel: neighbors kept per center (>= 1).

    Returns:
        a compact graph with ``K <= E`` edges (``edge_index (2, K)``,
        ``edge_vec (K, 3)`` in Å, ``edge_mask (K,)`` all True; int64 indices, bool mask), the same nodes
        and ``n_node``.
    """
    _check_sel(sel)
    xp = B.namespace(graph.edge_vec)
    rank, _ = _slot_rank(graph, num_nodes(graph))
    return _select_edges(graph, xp.nonzero(graph.edge_mask & (rank < sel))[0])


def _select_edges(graph: NeighborGraph, keep) -> NeighborGraph:
    """The graph restricted to the edges ``keep (K,)``, in that order."""
    xp = B.namespace(graph.edge_vec)
    return NeighborGraph(
        edge_index=xp.take(graph.edge_index, keep, axis=1),
        edge_vec=B.gather(graph.edge_vec, keep),
        edge_mask=B.gather(graph.edge_mask, keep),
        n_node=graph.n_node,
    )


def to_static(graph: NeighborGraph, sel: int) -> NeighborGraph:
    """The shape-static layout: ``E = N * sel``, slot ``c*sel + m`` = the m-th nearest neighbor of ``c``.

    Padding slots: ``edge_mask`` False, ``edge_vec`` 0, ``src = dst = c``.
    Differentiable: ``edge_vec`` of the result is built from the input's by
    scatter, so gradients flow back.

    Args:
        graph: a compact :class:`~graphdesc.graph.NeighborGraph`, ``N`` nodes, ``E`` edges, grouped by ``dst``.
        sel: slots per center.

    Returns:
        a graph with ``edge_index (2, N*sel)`` int64, ``edge_vec (N*sel, 3)`` in Å of the input's float dtype,
        ``edge_mask (N*sel,)`` bool, the same ``n_node``.

    Raises:
        ValueError: if a center has more than ``sel`` real neighbors (call
            :func:`truncate` first to drop the farthest ones).
    """
    _check_sel(sel)
    xp = B.namespace(graph.edge_vec)
    n = num_nodes(graph)
    rank, deg = _slot_rank(graph, n)
    if deg.shape[0] and int(xp.max(deg)) > sel:
        raise ValueError(
            f"a center has {int(xp.max(deg))} neighbors but sel = {sel}; "
            f"use graphdesc.graph.truncate(graph, sel) to keep the nearest {sel}"
        )
    real = graph.edge_mask
    size = n * sel
    slot = xp.where(real, graph.dst * sel + rank, xp.zeros_like(rank))  # masked edges add 0 anywhere
    occupied = segment_sum(xp.astype(real, xp.int64), slot, size, mask=real) > 0
    centers = B.arange(size, graph.dst) // sel
    src = xp.where(occupied, segment_sum(graph.src, slot, size, mask=real), centers)
    return NeighborGraph(
        edge_index=xp.stack([src, centers]),
        edge_vec=segment_sum(graph.edge_vec, slot, size, mask=real),
        edge_mask=occupied,
        n_node=graph.n_node,
    )


def to_dense(graph: NeighborGraph, sel: int):
    """Padded dense arrays of the static layout.

    Returns:
        ``(nlist (N, sel) int64, vec (N, sel, 3) float in Å, mask (N, sel) bool)``:
        ``nlist`` holds the neighbor's node index or -1, ``vec`` the edge vector
        or 0, nearest first.
    """
    static = to_static(graph, sel)
    xp = B.namespace(static.edge_vec)
    n = static.edge_vec.shape[0] // sel
    nlist = xp.where(static.edge_mask, static.src, xp.full_like(static.src, -1))
    return (
        xp.reshape(nlist, (n, sel)),
        xp.reshape(static.edge_vec, (n, sel, 3)),
        xp.reshape(static.edge_mask, (n, sel)),
    )


def from_dense_quartet(coord_ext, atype_ext, nlist, mapping=None, *, compact: bool = True):
    """DeePMD-kit's extended quartet -> ``(NeighborGraph, atype (nf*nloc,))``.

    Args:
        coord_ext: ``(nf, nall, 3)`` or ``(nf, nall*3)`` float extended coordinates in Å;
            the first ``nloc`` are the local atoms.
        atype_ext: ``(nf, nall)`` integer types.
        nlist: ``(nf, nloc, nnei)`` indices into the extended atoms, -1 for padding.
        mapping: ``(nf, nall)`` local owner of each extended atom; None when
            ``nall == nloc`` (no periodic images).
        compact: drop the padding slots (True), or keep DeePMD's slot layout as
            a shape-static graph with ``sel = nnei`` (False).

    Node ``f*nloc + i`` is local atom ``i`` of frame ``f``; edge
    ``(f*nloc + i)*nnei + j`` (static) is slot ``j`` of that center, with
    ``edge_vec = coord_ext[nlist] - coord_ext[i]``.
    """
    xp = B.namespace(coord_ext, atype_ext, nlist, mapping)
    nf, nloc, nnei = nlist.shape
    coord = xp.reshape(coord_ext, (nf, -1, 3))
    nall = coord.shape[1]
    if mapping is None:
        if nall != nloc:
            raise ValueError(f"mapping is required when nall ({nall}) != nloc ({nloc})")
        mapping = xp.broadcast_to(B.arange(nloc, nlist), (nf, nloc))
    real = nlist >= 0
    nei = xp.where(real, nlist, xp.zeros_like(nlist))  # (nf, nloc, nnei)
    frame_ext = xp.reshape(B.arange(nf, nlist) * nall, (nf, 1, 1))
    frame_loc = xp.reshape(B.arange(nf, nlist) * nloc, (nf, 1, 1))
    flat_coord = xp.reshape(coord, (nf * nall, 3))
    nei_flat = xp.reshape(nei + frame_ext, (-1,))
    vec = B.gather(flat_coord, nei_flat) - xp.reshape(
        xp.broadcast_to(xp.reshape(coord[:, :nloc, :], (nf, nloc, 1, 3)), (nf, nloc, nnei, 3)), (-1, 3)
    )
    mask = xp.reshape(real, (-1,))
    vec = xp.where(mask[:, None], vec, xp.zeros_like(vec))
    centers = xp.reshape(B.arange(nf * nloc, nlist), (-1, 1))
    dst = xp.reshape(xp.broadcast_to(centers, (nf * nloc, nnei)), (-1,))
    src = xp.reshape(B.gather(xp.reshape(mapping, (-1,)), nei_flat), (nf, nloc, nnei)) + frame_loc
    src = xp.where(mask, xp.reshape(src, (-1,)), dst)  # padding points at its own center
    graph = NeighborGraph(
        edge_index=xp.stack([xp.astype(src, xp.int64), xp.astype(dst, xp.int64)]),
        edge_vec=vec,
        edge_mask=mask,
        n_node=xp.full((nf,), nloc, dtype=xp.int64, device=B.device(nlist)),
    )
    atype = xp.reshape(atype_ext[:, :nloc], (-1,))
    if compact:
        graph = _select_edges(graph, xp.nonzero(mask)[0])
    return graph, atype


def to_quartet(graph: NeighborGraph, positions, atype, sel: int):
    """A DeePMD-style extended quartet for a graph whose frames all have ``nloc`` atoms.

    Every edge becomes its own extended atom at ``positions[dst] + edge_vec``
    (owner ``src``), so the quartet reproduces the graph exactly, periodic
    images included, and DeePMD-kit's dense ``call`` can evaluate it.

    Args:
        positions: ``(N, 3)`` float local positions, Å.
        atype: ``(N,)`` integer types.
        sel: neighbor slots ``nnei`` per center (>= the max degree).

    Returns:
        ``(coord_ext (nf, nall, 3), atype_ext (nf, nall), nlist (nf, nloc, sel),
        mapping (nf, nall))`` numpy arrays (coordinates float64 in Å, the rest int64),
        ``nall = nloc + nloc*sel``, nearest first.
    """
    nlist, vec, mask = (B.to_numpy(a) for a in to_dense(graph, sel))
    n_node = B.to_numpy(graph.n_node)
    nf = len(n_node)
    nloc = int(n_node[0]) if nf else 0
    if np.any(n_node != nloc):
        raise ValueError(f"to_quartet needs frames of equal size, got n_node = {n_node.tolist()}")
    pos, typ = B.to_numpy(positions), B.to_numpy(atype)
    n = nf * nloc
    ghost = (pos[:, None, :] + vec).reshape(nf, nloc * sel, 3)
    local = np.arange(n) % nloc
    owner = np.where(mask, nlist, 0).reshape(nf, nloc * sel) % max(nloc, 1)
    coord_ext = np.concatenate([pos.reshape(nf, nloc, 3), ghost], axis=1)
    mapping = np.concatenate([local.reshape(nf, nloc), owner], axis=1)
    atype_ext = np.take_along_axis(typ.reshape(nf, nloc), mapping, axis=1)
    slot_atom = nloc + np.arange(nloc * sel).reshape(nloc, sel)
    nlist_ext = np.where(mask.reshape(nf, nloc, sel), slot_atom[None], -1)
    return coord_ext, atype_ext, nlist_ext.astype(np.int64), mapping.astype(np.int64)


def _check_sel(sel) -> None:
    if isinstance(sel, bool) or not isinstance(sel, (int, np.integer)) or sel < 1:
        raise ValueError(f"sel must be a positive integer, got {sel!r}")
