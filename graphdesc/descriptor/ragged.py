"""The ragged layout: each center's edge rows stored one after another, no padding.

The block path stacks every center's edges into blocks as wide as the widest
center (``(L, width, F)``), so a few dense centers make every center pay for
them. The ragged layout keeps the edge stage's rows ``(R, F)`` (``R`` real
edges) sorted by center instead, plus the number of rows of each center,
``slots (L,)``. A piece of consecutive centers is then a slice of the center
rows and a slice of the edge rows, and two block stages run on it:

* ``attention="pairs"`` (:mod:`graphdesc.descriptor.pair_path`): attention over
  the piece's center-edge pairs, ``segment_softmax`` over each query's keys;
  its cost is ``sum deg^2``;
* ``attention="buckets"``: the piece is stacked into blocks as wide as *its*
  widest center. Centers are ordered by degree first, so each piece holds
  centers of nearly one degree: a few dense centers cost only their own blocks.

Center rows are in *row order*: the order of ``center (L,)``, the node index of
each row (degree order for buckets, node order for pairs). :func:`in_node_order`
puts per-center results back in node order.

In the shape-static layout (``static=True``) the edges are already center-major
with ``sel`` slots per center: the rows are the slots themselves (masked ones
included, ``valid`` False), ``slots = sel`` and the order is the node order.
"""

from __future__ import annotations

import numpy as np

from .. import _backend as B
from ..segment import segment_sum

__all__ = ["ATTENTION", "EDGE_ROWS", "ragged_order", "ragged_parts", "ragged_cuts", "in_node_order",
           "to_node_order", "piece_centers"]

ATTENTION = ("blocks", "buckets", "pairs")
"""The block stage's layouts: one-width blocks, degree buckets, center-edge pairs."""

EDGE_ROWS = ("x", "rows", "sw", "u", "valid", "edge", "g")
"""The keys of a ragged ``parts`` dict that hold edge rows ``(R, ...)``; the others hold center rows ``(L, ...)``.
(``g``, the embedded rows, is the first part of packages exported before the embedding
moved into the block stage; their loaders still read it.)"""

BUCKET_GROWTH = 1.25
"""A bucket's widest center has at most this many times the degree of its narrowest (degrees >= 2)."""


def ragged_order(graph, n, *, static: bool, by_degree: bool):
    """Where each row of the ragged layout comes from.

    Args:
        graph: the graph; centers are its ``dst`` in ``[0, n)``.
        n: ``L``, the number of centers (local nodes).
        static: shape-static layout (``sel`` slots per center, center-major).
        by_degree: order the centers by degree (ascending, stable).

    Returns:
        ``(edges (R,), slots (L,), center (L,))``: the graph edge of each edge
        row (the real edges, center by center in row order, edge order
        within; every slot when ``static``), the number of edge rows of each
        center row, and the node of each center row.
    """
    xp = B.namespace(graph.edge_vec)
    mask, dst = graph.edge_mask, graph.dst
    if static:
        sel = mask.shape[0] // n if n else 0
        center = B.arange(n, dst)
        return B.arange(mask.shape[0], dst), xp.full((n,), sel, dtype=xp.int64, device=B.device(dst)), center
    deg = segment_sum(xp.astype(mask, xp.int64), dst, n)  # (L,)
    center = xp.argsort(deg, stable=True) if by_degree else B.arange(n, dst)
    row_of = segment_sum(B.arange(n, dst), center, n)  # (L,) the row of each node: center's inverse
    real = xp.nonzero(mask)[0]
    edges = B.gather(real, xp.argsort(B.gather(row_of, B.gather(dst, real)), stable=True))
    return edges, B.gather(deg, center), center


def ragged_parts(graph, n, edge: dict, center_rows: dict, *, static: bool, by_degree: bool) -> dict:
    """The ragged ``parts``: the edge stage's rows in layout order, and the center rows.

    Args:
        graph, n, static, by_degree: as for :func:`ragged_order`.
        edge: the edge stage's ``(E, F)`` rows (``x``, ``rows``, ``sw``, ``u``).
        center_rows: ``(L, ...)`` arrays in node order (``atype``, ``shift``, ``pad``).

    Returns:
        the edge rows ``(R, F)`` first (differentiable ones, then ``valid (R,)``
        and ``edge (R,)``, the graph edge of each row), then ``slots (L,)``,
        ``center (L,)`` and ``center_rows`` in row order.
    """
    edges, slots, center = ragged_order(graph, n, static=static, by_degree=by_degree)
    parts = {k: B.gather(v, edges) for k, v in edge.items()}
    parts["valid"], parts["edge"] = B.gather(graph.edge_mask, edges), edges
    parts["slots"], parts["center"] = slots, center
    parts.update({k: B.gather(v, center) for k, v in center_rows.items()})
    return parts


def piece_centers(slots, num_rows):
    """The center row (``(R,)``, in ``[0, C)``) of each of a piece's ``R`` edge rows, from its ``slots (C,)``."""
    return B.repeat(B.arange(slots.shape[0], slots), slots, num_rows)


def in_node_order(x, parts: dict):
    """Per-center results ``(L, ...)`` in row order -> node order (``x`` itself for the block path)."""
    return x if "center" not in parts else to_node_order(x, parts["center"])


def to_node_order(x, center):
    """``x (L, ...)`` in row order -> node order, with ``center (L,)`` the node of each row (a permutation)."""
    return segment_sum(x, center, x.shape[0])


def ragged_cuts(slots, attention: str, attn: int, ng: int, chunk_elements: int) -> list:
    """Centers per piece, so that a piece's largest temporary holds about ``chunk_elements`` floats.

    Args:
        slots: ``(L,)`` edge rows per center, in row order (numpy or any array on the host).
        attention: ``"pairs"``: a center costs ``slots * max(slots * attn, 4 ng)`` (its
            pairs' gathered queries and keys, or its contraction rows), and pieces
            are cut where the running cost passes a multiple of the budget.
            ``"buckets"``: a piece of ``C`` centers costs ``C w max(w, attn)``, ``w``
            its largest ``slots`` (at least 2); ``slots`` ascending (degree order).
        attn, ng: the attention and embedding widths.
        chunk_elements: the budget; ``<= 0``: one piece.

    Returns:
        a list of piece sizes (centers), summing to ``L``; at least one center each.
    """
    slots = np.asarray(slots, dtype=np.int64)
    n = slots.shape[0]
    if chunk_elements <= 0 or n == 0:
        return [n]
    if attention == "pairs":
        cost = slots * np.maximum(slots * attn, 4 * ng)
        piece = (np.cumsum(cost) - cost) // chunk_elements  # the piece a center starts in
        return np.bincount(piece)[np.unique(piece)].tolist()
    width = np.maximum(slots, 2)
    per_center = width * np.maximum(width, attn)  # non-decreasing: slots ascend
    sizes, start = [], 0
    while start < n:  # the longest run [start, stop) within the budget and the width growth
        lo, hi = start + 1, int(np.searchsorted(width, BUCKET_GROWTH * width[start], side="right"))
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if (mid - start) * per_center[mid - 1] <= chunk_elements else (lo, mid - 1)
        sizes.append(lo - start)
        start = lo
    return sizes
