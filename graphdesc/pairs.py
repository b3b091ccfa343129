"""Center-edge pairs: the pairs of edges that share a center.

DPA1's attention runs, for every center, over pairs ``(query edge, key edge)``
of its neighbor edges. :func:`center_edge_pairs` enumerates those pairs as two
index arrays into the edge axis, in one of two layouts:

*compact* (``static_nnei=None``)
    Only real edges, any edge order. The number of pairs
    ``P = sum over centers of f(deg)`` depends on the data (``deg^2`` for
    ordered pairs with self-pairs), so the output size is dynamic: fine in
    eager numpy/torch/jax and under ``torch.export`` (as an unbacked size),
    not under ``jax.jit``.

*shape-static* (``static_nnei=k``)
    Edges laid out center-major with exactly ``k`` slots per center
    (``E = N * k``; edge ``c*k + m`` belongs to center ``c``). Pairs are pure
    index arithmetic with ``P = N * f(k)``; validity goes into ``pair_mask``.
    Sizes depend only on ``N``, so it jits under JAX.

Policies (``include_self``, ``ordered``), with ``a``, ``b`` edges of a center
and ``a < b`` meaning edge-index order:

====================  ======================  ================
include_self, ordered  pairs per center         f(d)
====================  ======================  ================
True, True            all (a, b)              d^2
False, True           (a, b) with a != b      d (d - 1)
True, False           (a, b) with a <= b      d (d + 1) / 2
False, False          (a, b) with a < b       d (d - 1) / 2
====================  ======================  ================

Both layouts list pairs center by center (ascending center), then by query
edge, then by key edge; for a fully occupied static layout they give the same
sequence.
"""

from __future__ import annotations

import numpy as np

from . import _backend as B
from ._checks import check_ids, check_mask, check_size

__all__ = ["center_edge_pairs", "pair_pattern"]


def pair_pattern(k: int, *, include_self: bool = True, ordered: bool = True):
    """The pairs of slot positions ``(m, n)`` among ``k`` slots, as two numpy
    ``int64`` arrays of length ``f(k)``, in (query, key) lexicographic order."""
    m, n = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    keep = (m <= n) if not ordered else np.ones((k, k), dtype=bool)
    if not include_self:
        keep &= m != n
    return m[keep].astype(np.int64), n[keep].astype(np.int64)


def center_edge_pairs(
    dst,
    edge_mask,
    num_centers,
    *,
    include_self: bool = True,
    ordered: bool = True,
    static_nnei: int | None = None,
):
    """Enumerate the pairs of edges that share a center.

    Args:
        dst: ``(E,)`` integer array, the center of each edge, in
            ``[0, num_centers)`` (masked edges included).
        edge_mask: ``(E,)`` bool, True for real edges.
        num_centers: ``N``, the number of centers (nodes).
        include_self: include the pair ``(a, a)`` of an edge with itself.
        ordered: both ``(a, b)`` and ``(b, a)``; if False only ``a <= b``
            (``a < b`` without self-pairs).
        static_nnei: ``k`` for the shape-static layout (``E == N * k``,
            center-major), or None for the compact form.

    Returns:
        ``(query_edge, key_edge, pair_mask)``: ``(P,)`` integer, ``(P,)``
        integer, ``(P,)`` bool. Compact form: only real pairs, ``pair_mask``
        all True. Static form: ``P = N * f(k)``, ``pair_mask`` True where both
        edges are real.

    Raises:
        TypeError: a wrong dtype; the message names the argument.
        ValueError: a wrong shape, an out-of-range ``dst``, or a static layout
            whose real edges sit outside their center's slots (value checks
            run on concrete arrays only); the message names the argument.
    """
    xp = B.namespace(dst, edge_mask)
    check_size("num_centers", num_centers)
    check_ids("dst", dst, None, num_centers)
    check_mask("edge_mask", edge_mask, dst.shape)  # dst is 1-D, so this is (E,)
    if static_nnei is None:
        return _compact(xp, dst, edge_mask, num_centers, include_self, ordered)
    return _static(xp, dst, edge_mask, num_centers, static_nnei, include_self, ordered)


def _compact(xp, dst, edge_mask, num_centers, include_self, ordered):
    dev = B.device(dst)
    dst = xp.astype(dst, xp.int64)
    real = xp.nonzero(edge_mask)[0]  # (R,) real edges, ascending
    order = xp.argsort(B.gather(dst, real), stable=True)
    edges = B.gather(real, order)  # (R,) grouped by center, edge order within
    centers = B.gather(dst, edges)
    one = xp.ones_like(centers)
    deg = B.scatter_add(one, centers, num_centers)  # (N,)
    start = xp.cumulative_sum(deg) - deg  # (N,) first position of each center
    deg_e = B.gather(deg, centers)  # (R,)
    first = B.gather(start, centers)  # (R,)
    rank = B.arange(edges.shape[0], dst) - first  # position in block

    # keys of query position r within its block: positions [lo, lo + count),
    # skipping the query itself when ordered without self-pairs
    skip_self = ordered and not include_self
    if ordered:
        lo, count = xp.zeros_like(rank), deg_e - (1 if skip_self else 0)
    else:
        lo = rank + (0 if include_self else 1)
        count = deg_e - lo
    total = B.to_size(xp.sum(count))
    query = B.repeat(B.arange(edges.shape[0], dst), count, total)
    offset = B.gather(xp.cumulative_sum(count) - count, query)
    j = B.arange(total, dst) - offset + B.gather(lo, query)
    if skip_self:
        j = j + xp.astype(j >= B.gather(rank, query), xp.int64)
    key = B.gather(first, query) + j
    query_edge = B.gather(edges, query)
    key_edge = B.gather(edges, key)
    return query_edge, key_edge, xp.ones(query_edge.shape, dtype=xp.bool, device=dev)


def _static(xp, dst, edge_mask, num_centers, k, include_self, ordered):
    check_size("static_nnei", k, minimum=1)
    if dst.shape[0] != num_centers * k:
        raise ValueError(
            f"static layout needs E == num_centers * static_nnei = {num_centers} * {k}, "
            f"got E = {dst.shape[0]}"
        )
    dev = B.device(dst)
    slot_center = B.arange(dst.shape[0], dst) // k
    if not B.is_traced(dst) and bool(xp.any(edge_mask & (xp.astype(dst, xp.int64) != slot_center))):
        raise ValueError(
            "dst does not match the static layout: real edge c*static_nnei + m must have dst == c"
        )
    m, n = (xp.asarray(a, device=dev) for a in pair_pattern(k, include_self=include_self, ordered=ordered))
    base = xp.reshape(B.arange(num_centers, dst) * k, (-1, 1))
    query_edge = xp.reshape(base + m, (-1,))
    key_edge = xp.reshape(base + n, (-1,))
    pair_mask = B.gather(edge_mask, query_edge) & B.gather(edge_mask, key_edge)
    return query_edge, key_edge, pair_mask
