"""DPA1 on a NeighborGraph: segment sums over centers, attention over center-edge pairs.

Semantics (DESIGN.md section 4): every real edge counts, ``sel`` only sets the
``1/sel`` normalization and the width of the smooth softmax. With
``smooth_type_embedding`` each center's softmax keeps DeePMD's ``sel``-wide
denominator: ``sel - deg`` *phantom* keys of logit -20 (an absent slot's
logit), so graph == dense whenever ``deg <= sel``, and an edge entering at
``rcut`` (logit exactly -20) only replaces a phantom.

``deg > sel`` (a carry-all graph denser than ``sel``): the phantom count
``sel - deg`` goes negative, i.e. each real key beyond ``sel`` *removes* one
``exp(-20 - max)`` from the denominator. This is the unique continuation that
stays continuous as edges cross ``rcut``; the denominator stays positive
because every smooth logit is >= -20 whenever ``|alpha q.k| < 20`` (always true
with ``normalize`` and ``|alpha| < 20``). Should it ever reach <= 0, the
phantom terms of that row are dropped (``masked_softmax``'s rule): never NaN.

Contraction: each real edge contributes ``G_j (x) E_j / dstd[t_i]``, which
vanishes at ``rcut`` with the switch, so the descriptor is continuous as edges
cross the cutoff (C2 with smooth attention). ``davg`` shifts only the
embedding input and the ``dotr`` gate. DeePMD-kit instead contracts
``(E_j - davg) / dstd`` over all ``sel`` slots, empty ones included (S2);
that differs by a term in ``davg`` which jumps when a neighbor whose type is
not the frame's first atom's crosses ``rcut``. ``deepmd_compat=True`` adds
that term back, so DeePMD-kit models give DeePMD-kit's numbers. With
``davg = 0`` (fresh models, ``set_davg_zero``) both agree.

Memory: per-pair quantities are scalars only. The edge stage computes each
edge's few input columns (the embedding net's input, the contraction row, the
switch, the unit vector); those are stacked into per-center blocks
``(N, D, F)`` (``D`` the largest degree, or ``sel`` in the shape-static
layout) and everything after runs on blocks, the embedding net included
(``(N, D, ng)``, a chunk of centers at a time, so its activations stay in
cache and only ``1 + 2 dt`` columns per edge are stacked and unstacked
rather than ``ng``): attention as batched matmuls
with ``(N, D, D)`` block matrices of logits, weights, switches and gates,
normalized by ``masked_softmax`` over the real keys of each row, and the
contraction as ``(rows^T @ G)^T``. No pair index list and nothing of shape
``(P, H)`` or ``(P, ng)`` is built. The two stages are exposed separately
(:func:`center_inputs`, :func:`center_outputs`): centers are independent
after the edge stage, so on CPU the block stage runs on chunks of centers,
and the torch shell's eval forces differentiate one chunk at a time.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .. import _backend as B
from ..graph.container import NeighborGraph
from ..graph.validate import frame_first_node, validate
from ..segment import masked_softmax, segment_sum
from .config import SMOOTH_SHIFT, DPA1Config
from .envmat import env_matrix, normalize_env, unit_angular
from .nets import embed_neighbors, embed_rows, embedding_input, layer, layer_norm, type_table, unit_rows
from .pair_path import pair_stage
from .params import params_dtype
from .ragged import ATTENTION, EDGE_ROWS, in_node_order, piece_centers, ragged_cuts, ragged_parts
from .readout import readout

__all__ = ["dpa1_graph", "center_inputs", "edge_stage", "center_pieces", "center_outputs", "Blocks",
           "check_model_inputs", "in_node_order", "attention_layout",
           "check_attention", "num_centers", "chunk_elements"]



def dpa1_graph(params: dict, config: DPA1Config, graph: NeighborGraph, atype, *,
               deepmd_compat: bool = False, static: bool = False, num_local=None, attention: str = "auto"):
    """The DPA1 descriptor of every node of ``graph``.

    Args:
        params: parameter tree (see :mod:`graphdesc.descriptor.params`) in the
            graph's array library and float dtype.
        config: the hyperparameters.
        graph: a compact graph (any edge order; ``edge_vec (E, 3)`` in Å), or the shape-static layout
            (``E = N * sel``, center-major) with ``static=True``.
        atype: ``(N,)`` integer types in ``[0, ntypes)``, on the flat node axis.
        deepmd_compat: contract DeePMD-kit's ``(E - davg) / dstd`` rows over
            all ``sel`` slots, the ``max(sel - deg, 0)`` empty ones included
            (DPA1_MATH S2; their embedding uses the type of the frame's first
            atom). Reproduces models trained with DeePMD-kit when ``davg != 0``;
            not continuous at ``rcut`` for multi-type systems.
        static: ``graph`` is in the shape-static layout with ``sel`` slots per
            center; then every size depends only on ``N`` (``jax.jit`` works).
        num_local: ``L``, when nodes ``[L, N)`` are ghosts (an MD engine's
            halo): only the local nodes are centers, ghosts enter only as
            neighbors (``src``), and ``n_node`` counts local atoms. Default:
            every node is local.
        attention: the block stage's layout, the same numbers each:
            ``"blocks"``, every center's edges in blocks as wide as the widest
            center's (batched matmuls); ``"buckets"``, centers in degree
            order, each piece's blocks as wide as its own widest center (for
            uneven degrees: slabs, clusters, dense inclusions); ``"pairs"``,
            attention over :func:`~graphdesc.pairs.center_edge_pairs` with
            ``segment_softmax`` (:mod:`graphdesc.descriptor.pair_path`);
            ``"auto"`` (default), :func:`attention_layout`'s rule.

    Returns:
        ``(descriptor (L, ng*M [+ dt]), rot_mat (L, ng, 3))`` of the local
        nodes (``L = N`` without ghosts), in the graph's library and dtype.
    """
    attention = attention_layout(attention, graph, num_centers(atype, num_local))
    table, parts = center_inputs(params, config, graph, atype, deepmd_compat=deepmd_compat, static=static,
                                 num_local=num_local, attention=attention)
    out = [center_outputs(params, config, table, piece, attention=attention, static=static)
           for piece in center_pieces(parts, config, attention)]
    xp = B.namespace(table)
    descriptor, rot_mat = out[0] if len(out) == 1 else (xp.concat([o[i] for o in out]) for i in range(2))
    return in_node_order(descriptor, parts), in_node_order(rot_mat, parts)


def center_inputs(params: dict, config: DPA1Config, graph: NeighborGraph, atype, *,
                  deepmd_compat: bool = False, static: bool = False, num_local=None, attention: str = "auto"):
    """The edge stage: everything each center's block stage reads, as per-center arrays.

    Arguments as for :func:`dpa1_graph`. Returns ``(table, parts)``: the type
    embedding table ``(ntypes, dt)`` and a dict of arrays with one row per
    center, ``L`` rows (the local nodes; ghosts get none, so they cost only
    their edges):

    * ``x (N, width, F)``: the embedding net's input rows of each center's edges
      (:func:`~graphdesc.descriptor.nets.embedding_input`, ``F = 1 + 2 dt``), 0 in empty rows;
    * ``rows (N, width, 4)``: the contraction rows ``E / dstd`` (0 on masked edges and at rcut);
    * ``sw (N, width, 1)``: the switch; ``u (N, width, 3)``: unit vectors (with ``attn_dotr``);
    * ``valid (N, width)``: rows holding a real edge;
    * ``atype (N,)``; with ``deepmd_compat`` also ``shift (N, 4)`` (``davg / dstd``)
      and ``pad (N, ng)`` (the empty slots' summed embeddings, see :func:`_deepmd_pad`).

    The first four are :func:`edge_stage`'s edge rows stacked by
    :class:`Blocks`. Centers are independent from here on: any split of
    ``parts`` along its rows (:func:`center_pieces`) gives the same
    :func:`center_outputs`.

    With ``attention="pairs"`` or ``"buckets"`` the parts are in the ragged
    layout instead (:func:`~graphdesc.descriptor.ragged.ragged_parts`): the edge
    rows ``(R, F)`` sorted by center, ``valid (R,)``, ``slots (L,)`` and
    ``center (L,)``, then the center rows in row order. ``"auto"`` is
    resolved by :func:`attention_layout`.
    """
    check_attention(attention)
    table, edge, center = edge_stage(params, config, graph, atype, deepmd_compat=deepmd_compat, static=static,
                                     num_local=num_local)
    n = center["atype"].shape[0]
    attention = attention_layout(attention, graph, n)
    if attention != "blocks":
        parts = ragged_parts(graph, n, edge, center, static=static, by_degree=attention == "buckets")
        if not static and not B.is_traced(parts["slots"]) and n:
            _check_center_size(int(B.namespace(parts["slots"]).max(parts["slots"])), parts["slots"], config,
                               edge["rows"], parts["center"], pairs=attention == "pairs")
        return table, parts
    blocks = Blocks(graph.edge_mask, graph.dst, n, edge["rows"].dtype, static_nnei=config.sel if static else None)
    _check_block_size(blocks, config, edge["rows"])
    parts = {k: blocks.stack(v) for k, v in edge.items()}
    parts["valid"] = blocks.valid
    parts.update(center)
    return table, parts


def edge_stage(params: dict, config: DPA1Config, graph: NeighborGraph, atype, *,
               deepmd_compat: bool = False, static: bool = False, num_local=None):
    """The per-edge work before the block stage, and the per-center inputs that need no edges.

    Arguments as for :func:`dpa1_graph`. Returns ``(table, edge, center)``:

    * ``table (ntypes, dt)``: the type embedding table;
    * ``edge``: the rows :func:`center_inputs` stacks into blocks, ``x (E, F)``
      (the embedding net's input), ``rows (E, 4)``, ``sw (E, 1)`` and with
      ``attn_dotr`` ``u (E, 3)``; the only arrays that depend on ``edge_vec``;
    * ``center``: ``atype (L,)`` and with ``deepmd_compat`` ``shift (L, 4)``, ``pad (L, ng)``.
    """
    check_model_inputs(params, config, graph, atype, static=static, num_local=num_local)
    xp = B.namespace(graph.edge_vec, atype)
    n = atype.shape[0] if num_local is None else num_local
    mask, src, dst = graph.edge_mask, graph.src, graph.dst
    table = type_table(params, config)  # (ntypes, dt)

    env, sw = env_matrix(graph.edge_vec, mask, config)  # (E, 4), (E,)
    center_type = B.gather(atype, dst)
    rt = normalize_env(env, center_type, params["davg"], params["dstd"])
    rt = xp.where(mask[:, None], rt, xp.zeros_like(rt))  # (E, 4)
    # type rows per atom, then per edge: their gradient sums E edge rows into N atom rows, not into the
    # ntypes rows of the table (compiled, those E atomic adds contended: a 2.3 ms kernel per training step)
    atom_rows = xp.take(table, atype, axis=0)  # (N, dt)
    x = embedding_input(config, rt[:, 0], B.gather(atom_rows, src), B.gather(atom_rows, dst))  # (E, 1 + 2 dt)
    edge = {"x": x, "rows": env * xp.take(1.0 / params["dstd"], center_type, axis=0), "sw": sw[:, None]}
    if config.attn_dotr:
        edge["u"] = unit_angular(rt)
    center = {"atype": atype if num_local is None else atype[:n]}
    if deepmd_compat:
        center["shift"], center["pad"] = _deepmd_pad(params, config, graph, center["atype"], table)
    return table, edge, center


def center_pieces(parts: dict, config: DPA1Config, attention: str = "blocks") -> list:
    """``parts`` of :func:`center_inputs` cut into chunks of centers (a list of dicts).

    One piece in traced programs and for small ``N``; else pieces whose largest
    temporary is about :func:`chunk_elements` floats (one-width blocks: one piece on
    accelerators). Ragged parts (``"pairs"``, ``"buckets"``) are cut by
    :func:`~graphdesc.descriptor.ragged.ragged_cuts`: a piece's center rows with its
    centers' edge rows.
    """
    x = parts["x"]
    if attention == "blocks":
        sizes = _chunk_sizes(x.shape[0], x.shape[1], config, x)
        if len(sizes) == 1:
            return [parts]
        return [dict(zip(parts, piece)) for piece in zip(*(B.split_rows(t, sizes) for t in parts.values()))]
    slots = parts["slots"]
    if B.is_traced(x) or B.is_symbolic_int(slots.shape[0]):
        return [parts]
    counts = B.to_numpy(slots)
    budget = max(1, chunk_elements(x, attention))  # (0 would mean one piece)
    sizes = ragged_cuts(counts, attention, config.attn, config.ng, budget)
    if len(sizes) == 1:
        return [parts]
    edge_sizes = np.add.reduceat(counts, np.cumsum([0] + sizes[:-1])).tolist()
    cut = {k: B.split_rows(v, edge_sizes if k in EDGE_ROWS else sizes) for k, v in parts.items()}
    return [{k: cut[k][i] for k in parts} for i in range(len(sizes))]


def center_outputs(params: dict, config: DPA1Config, table, parts: dict, *, attention: str = "blocks",
                   static: bool = False):
    """The block stage on a piece of :func:`center_inputs`' ``parts`` with ``C`` centers:
    attention, contraction and readout, ``(descriptor (C, ng*M [+ dt]), rot_mat (C, ng, 3))``
    (in the piece's row order). ``attention`` and ``static`` as given to :func:`center_inputs`."""
    want_sum = "pad" in parts
    if attention == "pairs":
        # a traced static program is one piece: its pairs run in chunks inside it (jax.jit)
        inside = chunk_elements(parts["x"], "pairs") if static and B.is_traced(parts["x"]) else 0
        gr, total = pair_stage(params, config, parts, static=static, want_sum=want_sum, chunk_elements=inside)
    else:
        blocks = parts if attention == "blocks" else _bucket_blocks(parts, config, static)
        gr, total = _center_stage(params, config, blocks["x"], blocks["rows"], blocks["sw"], blocks["valid"],
                                  blocks.get("u"), want_sum=want_sum)
    gr = gr / config.sel  # (C, ng, 4)
    if "pad" in parts:  # DeePMD's rows over empty slots and its davg shift (DPA1_MATH S2)
        gr = gr - (total + parts["pad"])[:, :, None] * parts["shift"][:, None, :] / config.sel
    return readout(gr, table, parts["atype"], config)


CHUNK_BYTES = 4 * 2**20
"""Size of the largest per-chunk temporary of the block stage on CPU, ``(chunk, width,
max(width, H))``. Every center's attention is its own, so the stage runs chunk by
chunk and those temporaries stay in cache from one op to the next, forward and
backward (energy+force of 864-atom fcc Cu, fp64, 2 threads: 6.5 ms/atom in one
piece, 2.6 in chunks of 64 centers). Eval forces of the torch shell are also taken
chunk by chunk, so only one chunk's activations are held at a time (peak 0.7-0.8
MiB/atom instead of 2.7 for 864-atom Cu, fp64)."""


ACCEL_CHUNK_BYTES = 2**30
"""Size of a ragged piece's largest temporary on accelerators. One-width blocks run in one piece
there (fewer, larger kernels), but one piece of pairs would hold its gathered ``(P, attn)`` rows
whole: 6.4 MB per fcc Cu atom (78 neighbors) in fp64 at ``attn = 128``, each, several per layer."""


def chunk_elements(like, attention: str) -> int:
    """The piece budget of the block stage, in floats of ``like``'s dtype: :data:`CHUNK_BYTES` on
    the CPU; on accelerators :data:`ACCEL_CHUNK_BYTES` for the ragged layouts and 0 (one piece) for
    one-width blocks."""
    if B.on_cpu(like):
        nbytes = CHUNK_BYTES
    else:
        nbytes = 0 if attention == "blocks" else ACCEL_CHUNK_BYTES
    return nbytes * 8 // B.namespace(like).finfo(like.dtype).bits


def chunk_rows(width: int, attn: int, chunk_elements: int) -> int:
    """Centers per chunk: the largest temporary, ``(rows, width, max(width, attn))``, holds about
    ``chunk_elements`` floats (at least one center). Eager's rule, and a package's (:mod:`graphdesc.export.stages`)."""
    return max(1, chunk_elements // (width * max(width, attn)))


def _chunk_sizes(n, width, config: DPA1Config, like) -> list:
    """Chunk sizes over ``n`` centers: ``[n]`` on accelerators, in traced programs and for small ``n``."""
    if not _chunked(like) or B.is_symbolic_int(n) or B.is_symbolic_int(width):
        return [n]
    chunk = chunk_rows(width, config.attn, chunk_elements(like, "blocks"))
    if n <= chunk:
        return [n]
    full, rest = divmod(n, chunk)
    return [chunk] * full + ([rest] if rest else [])


def num_centers(atype, num_local):
    """The number of centers, ``num_local`` or ``len(atype)`` (None for an ``atype`` that is no array)."""
    return num_local if num_local is not None else (atype.shape[0] if hasattr(atype, "shape") and atype.ndim else None)


def _chunked(like) -> bool:
    """Whether the block stage runs in chunks: eager, on the CPU."""
    return not B.is_traced(like) and B.on_cpu(like)


def _bucket_blocks(piece: dict, config: DPA1Config, static: bool) -> dict:
    """A ragged piece stacked into blocks as wide as its widest center (at least 2; ``sel`` when static):
    ``x (C, w, F)``, ``rows (C, w, 4)``, ``sw (C, w, 1)``, ``valid (C, w)``, ``u (C, w, 3)``."""
    xp = B.namespace(piece["x"])
    slots, r = piece["slots"], piece["x"].shape[0]
    center = piece_centers(slots, r)
    first = xp.cumulative_sum(slots) - slots
    width = config.sel if static else None
    if width is None:
        two = xp.full((1,), 2, dtype=slots.dtype, device=B.device(slots))
        width = B.to_size(xp.max(xp.concat([slots, two])), minimum=2)
    blocks = Blocks(piece["valid"], center, slots.shape[0], piece["x"].dtype, width=width,
                    slot=B.arange(r, slots) - B.gather(first, center))
    out = {k: blocks.stack(piece[k]) for k in ("x", "rows", "sw", "u") if k in piece}
    out["valid"] = blocks.valid
    return out


def _center_stage(params, config: DPA1Config, x, rows, sw, valid, u=None, *, want_sum: bool):
    """Embedding, attention layers and contraction on a chunk of center blocks.

    Args:
        x: ``(C, width, F)`` embedding inputs; rows: ``(C, width, 4)`` contraction rows;
        sw: ``(C, width, 1)`` switches; valid: ``(C, width)`` real rows;
        u: ``(C, width, 3)`` unit vectors (with ``attn_dotr``).

    Returns:
        ``(G^T rows (C, ng, 4), sum of G over real rows (C, ng) or None)``.

    An empty row's ``x`` is 0 and its embedding ``Emb(0)``, finite and never 0: it enters
    only through exact zeros (its ``rows`` and ``sw``, a masked softmax weight, ``valid``),
    as an empty row's values do after the first attention layer anyway.
    """
    xp = B.namespace(x)
    g = embed_rows(params, config, x)  # (C, width, ng)
    if config.attn_layer:
        count = folded_phantoms(config, g.shape[1])
        if count is None:
            pair_terms = _pair_terms(config, valid, sw, u)
            for lp in params["attention"]:
                g = _attention_layer(lp, config, g, valid, *pair_terms)
        else:
            folded = _folded_terms(config, sw, u, valid, count)
            for lp in params["attention"]:
                g = _folded_attention_layer(lp, config, g, valid, sw, *folded)
    total = xp.sum(xp.where(valid[..., None], g, xp.zeros_like(g)), axis=1) if want_sum else None
    # (rows^T @ G)^T rather than G^T @ rows: the same numbers, but inductor (torch 2.13, CPU)
    # compiled the double backward of the latter with a wrong stride for a saved
    # (N, ng, width) view when width is data-dependent (test_train's gradient doctor)
    return _transpose(_transpose(rows) @ g), total


class Blocks:
    """Center-major blocks: edge ``e`` sits in row ``slot[e]`` of block ``dst[e]``.

    ``width`` is ``sel`` in the static layout, else the largest degree (at
    least 2), unless given. After the embedding, the descriptor runs on
    ``(N, width, F)`` blocks (attention on ``(N, width, width)`` block
    matrices, the contraction as a batched matmul); ``valid (N, width)`` marks
    the rows that hold a real edge.

    Args:
        mask: ``(E,)`` real edges; dst: ``(E,)`` their centers, in ``[0, n)``.
        n: the number of centers (local nodes).
        dtype: float dtype of ``valid``'s intermediate.
        static_nnei: ``sel`` for the shape-static layout, else None.
        width: the block width when it is known (a package's block stage hands
            its blocks' width back); it must be at least the largest degree.
        slot: ``(E,)`` each edge's row in its center's block, when known (with ``width``).
    """

    def __init__(self, mask, dst, n, dtype, *, static_nnei=None, width=None, slot=None):
        xp = B.namespace(dst)
        e = mask.shape[0]
        if static_nnei is not None:
            width = static_nnei
            slot = B.arange(e, dst) % width
        elif slot is not None:
            deg = None
        else:
            deg = segment_sum(xp.astype(mask, xp.int64), dst, n)  # (N,)
            if width is None:
                # at least 2: masked edges (which read row 0) always have a row, and a
                # width never 1 spares compilers a data-dependent branch on it
                two = xp.full((1,), 2, dtype=deg.dtype, device=B.device(deg))
                width = B.to_size(xp.max(xp.concat([deg, two])), minimum=2)
            slot = _rank_in_center(dst, mask, deg, n)
        self.n, self.width, self.mask = n, width, mask
        self.deg = None if static_nnei is not None else deg
        self.row = dst * width + slot  # (E,) row in the (N * width) stacked blocks
        self.row = xp.where(mask, self.row, xp.zeros_like(self.row))
        self._dtype = dtype

    @functools.cached_property
    def valid(self):
        """``(N, width)`` bool: the rows that hold a real edge (built when first asked for)."""
        xp = B.namespace(self.row)
        return self.stack(xp.astype(self.mask, self._dtype)[:, None])[..., 0] > 0

    def stack(self, x):
        """Edge rows ``(E, F)`` -> blocks ``(N, width, F)``; empty rows 0."""
        xp = B.namespace(x)
        out = segment_sum(x, self.row, self.n * self.width, mask=self.mask)
        return xp.reshape(out, (self.n, self.width, x.shape[-1]))

    def unstack(self, blocks):
        """Blocks ``(N, width, F)`` -> each edge's row ``(E, F)``, 0 on masked edges: the
        transpose of :meth:`stack` (a gradient w.r.t. the blocks to one w.r.t. the edge rows)."""
        xp = B.namespace(blocks)
        rows = B.gather(xp.reshape(blocks, (self.n * self.width, blocks.shape[-1])), self.row)
        return xp.where(self.mask[:, None], rows, xp.zeros_like(rows))


MAX_BLOCK_BYTES = 2**30
"""The largest attention temporary of one center, ``(width, max(width, attn))``
floats (``(width^2, attn)`` on the pair path), that the eager block stage accepts: 1 GiB is a center with ~11,600
neighbors in fp64 (fcc Cu at rcut 6 Å has 78, diamond 160). Beyond it a single
center would exhaust memory before any chunking could help; only a wrong cell
or wrong units make a structure that dense."""


def _check_block_size(blocks: Blocks, config: DPA1Config, like) -> None:
    """A clear error instead of an out-of-memory kill for an absurdly dense structure (eager only)."""
    if blocks.deg is None or B.is_traced(like) or B.is_symbolic_int(blocks.width):
        return
    _check_center_size(blocks.width, blocks.deg, config, like)


def _check_center_size(width: int, deg, config: DPA1Config, like, node_of=None, pairs: bool = False) -> None:
    """The check of :func:`_check_block_size` for a largest degree ``width``; ``deg (L,)`` per center
    (row), ``node_of (L,)`` the node of each row when the rows are not in node order. The pair path's
    temporary of one center is its pairs' gathered rows, ``(width^2, attn)``."""
    floats = width * width * config.attn if pairs else width * max(width, config.attn)
    nbytes = floats * B.namespace(like).finfo(like.dtype).bits // 8
    if nbytes > MAX_BLOCK_BYTES:
        xp = B.namespace(deg)
        center = int(xp.argmax(deg))
        center = center if node_of is None else int(node_of[center])
        raise ValueError(
            f"center {center} has {width} neighbors within rcut {config.rcut:g} A (sel {config.sel}): one "
            f"attention block of {nbytes / 2**30:.1f} GiB, more than the {MAX_BLOCK_BYTES / 2**30:g} GiB "
            "graphdesc allows per center. No material is that dense: check the cell and the units of positions")


def _rank_in_center(dst, mask, deg, n):
    """Position of each real edge among its center's real edges, in edge order; 0 for masked."""
    xp = B.namespace(dst)
    e = dst.shape[0]
    key = xp.where(mask, dst, xp.full_like(dst, n))  # masked edges sort last
    order = xp.argsort(key, stable=True)
    first = xp.cumulative_sum(deg) - deg  # (N,) first sorted position of each center
    first = xp.concat([first, xp.zeros((1,), dtype=first.dtype, device=B.device(first))])
    rank_sorted = B.arange(e, dst) - B.gather(first, B.gather(key, order))
    rank = segment_sum(rank_sorted, order, e)  # scatter back through the permutation
    return xp.where(mask, rank, xp.zeros_like(rank))


def _transpose(x):
    return B.namespace(x).permute_dims(x, (0, 2, 1))


def _pair_terms(config: DPA1Config, valid, sw, u):
    """The layer-independent pair quantities of a chunk, ``(C, width, width)`` (None where unused).

    Args:
        valid: ``(C, width)`` real rows; sw: ``(C, width, 1)`` switches (0 in
            empty rows); u: ``(C, width, 3)`` unit vectors or None.

    Returns ``(pair_mask, sw_pair, phantoms, post)``: both edges real; the
    switch product ``sw_m sw_n`` (smooth); the signed phantom count
    ``sel - deg`` per center, ``(C, 1, 1)`` (smooth); the factor applied to the
    softmax weights, ``sw_m sw_n`` (smooth) times the ``dotr`` gate ``u_m . u_n``.
    """
    xp = B.namespace(sw)
    pair_mask = valid[:, :, None] & valid[:, None, :]
    sw_pair = phantoms = gate = None
    if config.smooth_type_embedding:
        sw_pair = sw @ _transpose(sw)
        # counted from the blocks in floating point, not as ``sel - deg``: AOTInductor
        # (torch 2.13, CPU) miscompiled that from the integer scatter behind ``deg``
        phantoms = config.sel - xp.sum(xp.astype(valid, sw.dtype), axis=1)[:, None, None]
    if config.attn_dotr:
        gate = u @ _transpose(u)
    factors = [f for f in (sw_pair, gate) if f is not None]
    post = factors[0] * factors[1] if len(factors) == 2 else (factors[0] if factors else None)
    return pair_mask, sw_pair, phantoms, post


def _attention_layer(lp, config: DPA1Config, g, valid, pair_mask, sw_pair, phantoms, post):
    """One gated self-attention layer with residual and LayerNorm on blocks: ``(N, width, ng) -> (N, width, ng)``."""
    q, k, v = _projections(lp, config, g, valid, config.alpha)
    logits = q @ _transpose(k)  # (N, width, width)
    if config.smooth_type_embedding:
        # DeePMD's (l + 20) sw_m sw_n - 20 with phantom logits -20, all shifted by +20
        # (softmax is shift-invariant): one full-size pass less
        logits = (logits + SMOOTH_SHIFT) * sw_pair
        w = masked_softmax(logits, pair_mask, phantom_count=phantoms, phantom_logit=0.0)
    else:
        w = masked_softmax(logits, pair_mask)
    if post is not None:
        w = w * post
    return _attention_out(lp, config, g, w @ v)


def _projections(lp, config: DPA1Config, g, valid, q_scale, k_scale=None):
    """``q, k, v (N, width, H)`` of one layer, ``q`` scaled by ``q_scale`` and ``k`` by ``k_scale`` (a
    scalar or ``(N, width, 1)``; None: unscaled), after the row normalization with ``normalize``."""
    q, k, v = _raw_projections(lp, config, g)
    if config.normalize:  # the scales folded into the rows' normalization
        k_scale = 1.0 if k_scale is None else k_scale
        return unit_rows(q, valid, q_scale), unit_rows(k, valid, k_scale), unit_rows(v, valid)
    return q * q_scale, k if k_scale is None else k * k_scale, v


def _raw_projections(lp, config: DPA1Config, g):
    """``q, k, v (N, width, H)`` of one layer from ``g (N, width, ng)``, before any scaling."""
    h = config.attn
    # three projections from column blocks of in_w: slicing one (N, width, 3H) product
    # would cost a zero-filled (N, width, 3H) gradient buffer per slice in the backward
    return (B.affine(g, lp["in_w"][:, i * h : (i + 1) * h], lp["in_b"][i * h : (i + 1) * h]) for i in range(3))


def _attention_out(lp, config: DPA1Config, g, o):
    """The output layer on the weighted values ``o (N, width, H)``, residual and LayerNorm: ``(N, width, ng)``."""
    y = layer({"w": lp["out_w"], "b": lp["out_b"]}, o, "linear", resnet=False)
    return layer_norm(g + y, lp["ln_w"], lp["ln_b"], config.ln_eps)


def folded_phantoms(config: DPA1Config, width):
    """``sel - width``, the signed count of extra phantom keys of :func:`_folded_attention_layer` on blocks
    ``width`` wide (an int, or a symbolic size in traced programs); None without smooth attention, where an
    empty key's logit is not 0 and the masked layer runs."""
    if not config.smooth_type_embedding:
        return None
    return config.sel - width


def _folded_terms(config: DPA1Config, sw, u, valid, count):
    """The layer-independent terms of :func:`_folded_attention_layer` on a chunk, ``(post, q_cols, k_cols,
    extra)``: ``post = sw_m sw_n (u_m . u_n)`` ``(C, width, width)`` as one matmul, ``sw_m sw_n`` without
    ``attn_dotr``; the columns appended to the scaled ``q`` and ``k``; and how the ``count`` extra phantoms
    enter the softmax:

    * ``count == 0``: no extra phantom (``extra`` None), columns ``[20 sw]`` and ``[sw]``;
    * ``count > 0`` (an int): one extra key row ``(C, 1, H + 2)``, 0 but for ``log(count)`` in its last
      column, and columns ``[20 sw, 1]``, ``[sw, 0]``; one fused softmax then counts them. (A finite stand-in
      for ``log 0`` could outweigh very negative real logits, hence no such row for 0.)
    * ``count < 0`` or symbolic (traced programs): ``extra = (count (1, 1, 1), empty (C, 1, 1))``, the signed
      count and each center's empty keys, for :func:`~graphdesc.segment.masked_softmax` with no mask and the
      empty keys as ``held_phantoms``; columns ``[20 sw]`` and ``[sw]``."""
    xp = B.namespace(sw)
    a = sw * u if config.attn_dotr else sw
    post = a @ _transpose(a)
    q_cols, k_cols = [SMOOTH_SHIFT * sw], [sw]
    if B.is_symbolic_int(count) or count < 0:
        signed = xp.full((1, 1, 1), count, dtype=sw.dtype, device=B.device(sw))
        empty = sw.shape[1] - xp.sum(xp.astype(valid, sw.dtype), axis=1)[:, None, None]  # (C, 1, 1)
        return post, q_cols, k_cols, (signed, empty)
    if not count:
        return post, q_cols, k_cols, None
    ones, zeros = xp.ones_like(sw), xp.zeros_like(sw)
    logit = xp.full((sw.shape[0], 1, 1), math.log(count), dtype=sw.dtype, device=B.device(sw))
    phantom = xp.concat([xp.zeros((sw.shape[0], 1, config.attn + 1), dtype=sw.dtype, device=B.device(sw)), logit],
                        axis=-1)
    return post, [*q_cols, ones], [*k_cols, zeros], phantom


def _folded_attention_layer(lp, config: DPA1Config, g, valid, sw, post, q_cols, k_cols, extra):
    """:func:`_attention_layer` with smooth attention: the same numbers with no mask, in fewer full-size
    passes (:func:`folded_phantoms` says where it runs).

    The switches fold into the logit matmul: ``(q_m . k_n + 20) sw_m sw_n = [sw_m q_m, 20 sw_m, 1] . [sw_n k_n,
    sw_n, 0]``. An empty key row is all 0, so its logit is exactly 0, a phantom's: a center's ``width - deg``
    empty keys stand for as many of its ``sel - deg`` phantoms, and the ``sel - width`` others enter as
    :func:`_folded_terms` says (an extra key of logit ``log(sel - width)``, or a signed term of the
    denominator). An empty key's weight dies in ``post`` (``sw_n = 0``), and so does an empty query's row
    (``sw_m = 0``), as in the masked layer.
    """
    xp = B.namespace(g)
    count = folded_phantoms(config, g.shape[1])
    if config.normalize and B.ATTENTION_NODE and B.first_order_nodes(g) and count >= 0:  # one node, projections to o
        o = B.folded_attention(*_raw_projections(lp, config, g), sw, post, valid, config.alpha, count)
        return _attention_out(lp, config, g, o)
    q, k, v = _projections(lp, config, g, valid, config.alpha * sw, sw)
    q, k = xp.concat([q, *q_cols], axis=-1), xp.concat([k, *k_cols], axis=-1)  # (N, width, H + 1 or H + 2)
    if extra is None:
        w = B.softmax(q @ _transpose(k))  # (N, width, width)
    elif isinstance(extra, tuple):  # the empty keys are phantoms already: dropped with the others
        count, empty = extra
        w = masked_softmax(q @ _transpose(k), None, phantom_count=count, phantom_logit=0.0, held_phantoms=empty)
    else:
        k = xp.concat([k, extra], axis=1)  # (N, width + 1, H + 2)
        w = B.softmax(q @ _transpose(k))[:, :, : g.shape[1]]
    return _attention_out(lp, config, g, (w * post) @ v)


def _deepmd_pad(params, config: DPA1Config, graph, atype, table):
    """What DeePMD-kit's ``gr`` has beyond the native contraction, per center: ``(shift (N, 4), pad (N, ng))``.

    DeePMD contracts ``(E - davg) / dstd`` over all ``sel`` slots, empty ones
    included (DPA1_MATH S2). Splitting off the native ``E / dstd`` part leaves
    ``-(1/sel) [sum_real G_j + max(sel - deg, 0) G_pad] (x) shift`` with
    ``shift = davg[t_i] / dstd[t_i]``; ``pad`` is the second sum. An empty slot's
    embedding is ``G_pad = Emb([-shift_0, T[type of the frame's first atom], T[t_i]])``;
    as a query it attends to nothing, so each layer maps it to ``LN(G_pad + b_out)``.
    """
    xp = B.namespace(table)
    n = atype.shape[0]
    shift = xp.take(params["davg"], atype, axis=0) / xp.take(params["dstd"], atype, axis=0)  # (N, 4)
    pad_type = B.gather(atype, frame_first_node(graph.n_node, n))
    g_pad = embed_neighbors(params, config, -shift[:, 0], xp.take(table, pad_type, axis=0),
                            xp.take(table, atype, axis=0))  # (N, ng)
    for lp in params["attention"]:
        g_pad = layer_norm(g_pad + lp["out_b"], lp["ln_w"], lp["ln_b"], config.ln_eps)
    # the count of real edges is taken again, in floating point, rather than from the
    # integer ``deg``: AOTInductor (torch 2.13, CPU) miscompiled ``sel - deg`` fed by the
    # integer scatter that makes ``deg`` (wrong energies in exported packages)
    real = segment_sum(xp.astype(graph.edge_mask, table.dtype), graph.dst, n)
    empty = xp.maximum(config.sel - real, xp.zeros_like(real))
    return shift, empty[:, None] * g_pad


def check_attention(attention) -> None:
    """A clear error unless ``attention`` is ``"auto"`` or one of :data:`~graphdesc.descriptor.ragged.ATTENTION`."""
    if attention not in ("auto", *ATTENTION):
        raise ValueError(f"attention must be one of 'auto', {', '.join(map(repr, ATTENTION))}, got {attention!r}")


def attention_layout(attention: str, graph, n=None) -> str:
    """The block-stage layout that ``attention`` names for ``graph`` (a :class:`NeighborGraph`) with ``n`` centers.

    ``"auto"`` is ``"buckets"`` where the block stage runs in chunks (eager, on the CPU) and one-width
    blocks would pad the rows by more than :data:`AUTO_PADDING` (``n max_deg / sum deg``); else
    ``"blocks"``. Measured (``benchmarks/results/dpa1_uneven.md``): buckets save 1.14-2.51x on a slab,
    clusters and a dense inclusion, and gain nothing on homogeneous fcc Cu (0.98-1.03x; in a small training
    step the two are within noise, ``benchmarks/results/train_step_layouts.md``); in one piece (traced
    programs, accelerators) they would only add a sort.
    Any other value is returned as is, once checked.
    """
    check_attention(attention)
    if attention != "auto":
        return attention
    if not isinstance(graph, NeighborGraph) or not n or not _chunked(graph.edge_vec):
        return "blocks"  # (a wrong graph is refused by the checks that follow)
    return "buckets" if _row_padding(graph, n) > AUTO_PADDING else "blocks"


AUTO_PADDING = 1.1
"""``"auto"`` picks degree buckets when one-width blocks would hold over this many times the real rows."""


def _row_padding(graph: NeighborGraph, n: int) -> float:
    """``n max_deg / sum deg`` over the ``n`` centers (1 when every center has one degree, or no edges). Read
    before the graph is validated: a malformed graph gives 1 here and its own error right after."""
    xp = B.namespace(graph.edge_vec)
    try:
        dst = xp.clip(graph.dst, 0, n - 1)
        deg = B.scatter_add(xp.astype(graph.edge_mask, xp.int64), dst, n)
        total = int(xp.sum(deg))
        return n * int(xp.max(deg)) / total if total else 1.0
    except (TypeError, ValueError, IndexError, RuntimeError, AttributeError):
        return 1.0


def check_model_inputs(params, config: DPA1Config, graph, atype, *, static: bool, num_local=None) -> None:
    """Clear errors for inputs the descriptor cannot take (values checked only when eager)."""
    if not isinstance(config, DPA1Config):
        raise TypeError(f"config must be a DPA1Config, got {type(config).__name__}")
    if not isinstance(graph, NeighborGraph):
        raise TypeError(f"graph must be a NeighborGraph, got {type(graph).__name__}")
    xp = B.namespace(graph.edge_vec, atype)
    if atype.ndim != 1 or not xp.isdtype(atype.dtype, "integral"):
        raise TypeError(f"atype must be a 1-D integer array, got shape {tuple(atype.shape)} dtype {atype.dtype}")
    dtype = params_dtype(params)
    if graph.edge_vec.dtype != dtype:
        raise TypeError(
            f"edge_vec has dtype {graph.edge_vec.dtype} but the model's parameters are {dtype}; "
            f"convert the graph (or the model) so that both use one precision"
        )
    n, e = atype.shape[0] if num_local is None else num_local, graph.edge_vec.shape[0]
    if static and e != n * config.sel:
        raise ValueError(f"static layout needs E = N * sel = {n} * {config.sel} edges, got {e}")
    if B.is_traced(graph.edge_vec) or B.is_traced(atype):
        return
    validate(graph, atype, ntypes=config.ntypes, padding_zero=False, num_local=num_local)
