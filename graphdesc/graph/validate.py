"""Validation of a NeighborGraph and its atom types, with errors that say what is wrong."""

from __future__ import annotations

from .. import _backend as B
from .._checks import check_float
from .container import NeighborGraph, num_nodes

__all__ = ["validate", "node_frame", "frame_first_node"]


def node_frame(n_node, num_nodes):
    """``(N,)`` int64 frame index of every node, from ``n_node (nf,)`` int64."""
    return B.repeat(B.arange(n_node.shape[0], n_node), n_node, num_nodes)


def frame_first_node(n_node, num_nodes):
    """``(N,)`` int64 index of the first node of every node's frame, from ``n_node (nf,)`` int64."""
    xp = B.namespace(n_node)
    first = xp.cumulative_sum(n_node) - n_node  # (nf,)
    return B.gather(first, node_frame(n_node, num_nodes))


def validate(graph: NeighborGraph, atype=None, *, ntypes: int | None = None, padding_zero: bool = True,
             num_local: int | None = None) -> None:
    """Check a graph (and optionally its atom types) and raise on the first problem.

    Checks: field types, shapes and dtypes; one array library throughout;
    ``n_node >= 0``; ``atype`` of length ``sum(n_node)``, integer, in
    ``[0, ntypes)``; edge indices in range; no real edge joining two frames;
    finite, non-zero ``edge_vec`` on real edges; ``edge_vec == 0`` on masked edges
    (unless ``padding_zero=False``: consumers that mask padding themselves
    accept anything there).

    With ghosts (``num_local`` given): nodes ``[0, num_local)`` are local
    atoms, frame by frame, and ``n_node`` counts them (``sum(n_node) ==
    num_local``); nodes ``[num_local, len(atype))`` are ghosts, which may only
    be the ``src`` of an edge: every ``dst`` must be local.

    Value checks need concrete arrays: call this eagerly, before tracing.

    Args:
        graph: a :class:`~graphdesc.graph.NeighborGraph` (``edge_index (2, E)`` int64, ``edge_vec (E, 3)``
            float in Å, ``edge_mask (E,)`` bool, ``n_node (nf,)`` int64).
        atype: optional ``(N,)`` integer atom types.
        ntypes: with ``atype``, the number of types.
        padding_zero: require ``edge_vec == 0`` on masked edges.
        num_local: ``L``, the local atoms (nodes ``[L, N)`` are ghosts); None: no ghosts.

    Raises:
        TypeError: a field of the wrong kind or dtype.
        ValueError: a wrong shape or value, naming the field.
    """
    if not isinstance(graph, NeighborGraph):
        raise TypeError(f"graph must be a NeighborGraph, got {type(graph).__name__}")
    ei, vec, mask, n_node = graph.edge_index, graph.edge_vec, graph.edge_mask, graph.n_node
    try:
        xp = B.namespace(ei, vec, mask, n_node, atype)
    except TypeError as err:
        raise TypeError(f"graph fields and atype must be arrays of one library: {err}") from None
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {tuple(ei.shape)}")
    if not xp.isdtype(ei.dtype, "integral"):
        raise TypeError(f"edge_index must have an integer dtype, got {ei.dtype}")
    e = ei.shape[1]
    if tuple(vec.shape) != (e, 3):
        raise ValueError(f"edge_vec must have shape (E, 3) = ({e}, 3), got {tuple(vec.shape)}")
    check_float("edge_vec", vec)
    if tuple(mask.shape) != (e,):
        raise ValueError(f"edge_mask must have shape (E,) = ({e},), got {tuple(mask.shape)}")
    if mask.dtype != xp.bool:
        raise TypeError(f"edge_mask must have dtype bool, got {mask.dtype}")
    if n_node.ndim != 1 or not xp.isdtype(n_node.dtype, "integral"):
        raise TypeError(f"n_node must be a 1-D integer array, got shape {tuple(n_node.shape)} dtype {n_node.dtype}")
    if n_node.shape[0] and bool(xp.any(n_node < 0)):
        raise ValueError("n_node must be >= 0 for every frame")
    n = local = num_nodes(graph)
    if num_local is not None:
        if atype is None:
            raise ValueError("a graph with ghosts (num_local given) needs atype: its length is the node count")
        if isinstance(num_local, bool) or not isinstance(num_local, int) or num_local < 0:
            raise ValueError(f"num_local must be an integer >= 0, got {num_local!r}")
        if num_local != local:
            raise ValueError(f"n_node sums to {local} but num_local is {num_local}: with ghosts, n_node counts "
                             "the local atoms of each frame")
        if atype.ndim == 1 and atype.shape[0] < num_local:
            raise ValueError(f"atype has {atype.shape[0]} entries but num_local is {num_local}: "
                             "atype covers the local atoms, then the ghosts")
        n = atype.shape[0] if atype.ndim == 1 else n
    if atype is not None:
        if atype.ndim != 1 or not xp.isdtype(atype.dtype, "integral"):
            raise TypeError(f"atype must be a 1-D integer array, got shape {tuple(atype.shape)} dtype {atype.dtype}")
        if atype.shape[0] != n:
            raise ValueError(f"atype has {atype.shape[0]} entries but the graph has sum(n_node) = {n} nodes")
        if n:
            lo, hi = int(xp.min(atype)), int(xp.max(atype))
            if lo < 0:
                raise ValueError(f"atype must be >= 0, got a type {lo}")
            if ntypes is not None and hi >= ntypes:
                raise ValueError(f"atype must be < ntypes = {ntypes}, got a type {hi}")
    if e == 0:
        return
    lo, hi = int(xp.min(ei)), int(xp.max(ei))
    if lo < 0 or hi >= n:
        raise ValueError(f"edge_index out of range: values span [{lo}, {hi}] but the graph has {n} nodes")
    if n > local and bool(xp.any(ei[1] >= local)):
        bad = int(xp.nonzero(ei[1] >= local)[0][0])
        raise ValueError(f"edge {bad} has ghost node {int(ei[1, bad])} as its center (dst); centers must be local "
                         f"atoms, dst < num_local = {local}")
    frame = node_frame(n_node, local)
    src_local = ei[0] < local
    src_frame = B.gather(frame, xp.where(src_local, ei[0], xp.zeros_like(ei[0]))) if local else ei[0]
    crossing = mask & src_local & (src_frame != B.gather(frame, ei[1]))
    if bool(xp.any(crossing)):
        bad = int(xp.nonzero(crossing)[0][0])
        raise ValueError(f"edge {bad} joins two frames (src {int(ei[0, bad])}, dst {int(ei[1, bad])})")
    finite = xp.all(xp.isfinite(vec), axis=1)
    if bool(xp.any(mask & ~finite)):
        bad = int(xp.nonzero(mask & ~finite)[0][0])
        raise ValueError(f"edge_vec holds NaN or inf on real edge {bad}")
    zero = mask & xp.all(vec == 0, axis=1)
    if bool(xp.any(zero)):
        bad = int(xp.nonzero(zero)[0][0])
        raise ValueError(f"edge_vec is zero on real edge {bad} (src {int(ei[0, bad])}, dst {int(ei[1, bad])}): "
                         "coincident atoms, where the descriptor's 1/r is undefined")
    if padding_zero and bool(xp.any(~mask & xp.any(vec != 0, axis=1))):
        bad = int(xp.nonzero(~mask & xp.any(vec != 0, axis=1))[0][0])
        raise ValueError(f"masked edge {bad} has a non-zero edge_vec; padding edges must hold 0")
