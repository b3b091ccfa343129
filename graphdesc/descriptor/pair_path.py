"""DPA1's attention on center-edge pairs: the descriptor on the graph's own primitives.

For a piece of the ragged layout (:mod:`graphdesc.descriptor.ragged`: ``C``
centers, their ``R`` edge rows), :func:`~graphdesc.pairs.center_edge_pairs`
lists every (query edge, key edge) pair of a center, ``P = sum deg^2`` of them
(compact), or ``C sel^2`` with a ``pair_mask`` in the shape-static layout (jax
jit). Each attention layer then forms, per pair, the scalar logit
``q_a . k_b`` and, per query edge, ``sum_b w_ab v_b``:

* logits are smoothed as on the block path, ``(q.k + 20) sw_a sw_b``, and
  :func:`~graphdesc.segment.segment_softmax` normalizes them over each query's
  keys with ``sel - deg`` signed phantom terms of logit 0 (after the shift);
* weights times ``sw_a sw_b`` and the ``dotr`` gate ``u_a . u_b``;
* the weighted values are summed per query edge by ``segment_sum``.

Every per-pair quantity is a scalar: the gathered ``(P, attn)`` query, key and
value rows are temporaries of one piece of centers, never of the whole system:

* eager, on any device, the parts are cut into pieces before they get here
  (:func:`~graphdesc.descriptor.graph_path.center_pieces`,
  :func:`~graphdesc.descriptor.ragged.ragged_cuts`), of about
  :func:`~graphdesc.descriptor.graph_path.chunk_elements` floats;
* a traced program of the static layout (``jax.jit``) is one piece: :func:`pair_stage`
  maps over chunks of centers inside it (``lax.map`` with a checkpoint, so the
  backward recomputes one chunk at a time too);
* ``.pt2`` packages run their block program on such pieces (:mod:`graphdesc.export.stages`);
* the gathered rows are not saved for the backward either: the logits, the gate
  and the weighted values are :func:`~graphdesc._backend.pair_dot` and
  :func:`~graphdesc._backend.pair_spread`, torch operators that gather in chunks
  and keep only their inputs. A force-loss training step keeps every piece's
  graph, so saved gathered rows would add up to the whole batch's;
* a traced program of the compact layout (``torch.compile`` of a whole training
  step, :mod:`graphdesc.train.compiled`) has no loop over a data-dependent
  number of pieces: the batch is one piece, and the two products enter its trace
  as those operators, one opaque node each, which gather chunk by chunk.

The contraction
``sum_j G_j (x) rows_j`` is a ``segment_sum`` over each center's edge rows.

Nothing here shares code with the block path's attention (batched matmuls on
``(C, width, width)`` blocks and ``masked_softmax``) beyond the projections,
LayerNorm and the layer parameters, so the two cross-check each other.
"""

from __future__ import annotations

from .. import _backend as B
from ..pairs import center_edge_pairs
from ..segment import segment_softmax, segment_sum
from .config import SMOOTH_SHIFT, DPA1Config
from .nets import embed_rows, layer, layer_norm, unit_rows
from .ragged import piece_centers

__all__ = ["pair_stage", "static_chunk_centers"]


def pair_stage(params, config: DPA1Config, piece: dict, *, static: bool, want_sum: bool, chunk_elements: int = 0):
    """Attention layers and contraction on a ragged piece of ``C`` centers and ``R`` edge rows.

    Args:
        params: the descriptor's parameter tree.
        piece: ``x (R, F)`` embedding inputs, ``rows (R, 4)``, ``sw (R, 1)``, ``valid (R,)``,
            ``slots (C,)`` and with ``attn_dotr`` ``u (R, 3)``.
        static: the rows are ``sel`` slots per center (``valid`` marks the real ones).
        want_sum: also return the sum of ``G`` over each center's real rows.
        chunk_elements: with ``static``, run the piece in chunks of centers whose largest
            temporary holds about this many floats, inside the program
            (:func:`~graphdesc._backend.map_stacked`: ``lax.map`` under ``jax.jit``); ``0``: whole.
            Eager pieces are cut before they get here (:func:`~graphdesc.descriptor.graph_path.center_pieces`).

    Returns:
        ``(G^T rows (C, ng, 4), sum of G over real rows (C, ng) or None)``.
    """
    if static and chunk_elements > 0:
        per = static_chunk_centers(config, chunk_elements)
        if piece["slots"].shape[0] > per:
            return _static_chunks(params, config, piece, want_sum, per)
    valid, slots = piece["valid"], piece["slots"]
    g = embed_rows(params, config, piece["x"])  # (R, ng)
    c, r = slots.shape[0], g.shape[0]
    center = piece_centers(slots, r)  # (R,)
    if config.attn_layer:
        pairs = _pairs(config, piece, center, c, static)
        for lp in params["attention"]:
            g = _attention_layer(lp, config, g, valid, pairs)
    total = segment_sum(g, center, c, mask=valid) if want_sum else None
    outer = g[:, :, None] * piece["rows"][:, None, :]  # (R, ng, 4)
    return segment_sum(outer, center, c, mask=valid), total


def static_chunk_centers(config: DPA1Config, chunk_elements: int) -> int:
    """Centers per chunk of the static layout: ``sel`` slots each, a center costs
    ``sel * max(sel * attn, 4 ng)`` floats (the cost rule of :func:`~graphdesc.descriptor.ragged.ragged_cuts`)."""
    return max(1, chunk_elements // (config.sel * max(config.sel * config.attn, 4 * config.ng)))


def _static_chunks(params, config: DPA1Config, piece: dict, want_sum: bool, per: int):
    """:func:`pair_stage` on a static piece in chunks of ``per`` centers, mapped inside the program.

    The ``C`` centers are padded to ``n * per`` with empty centers (``sel`` masked slots of zeros),
    each array is viewed as ``(n, per * rows, ...)`` and :func:`~graphdesc._backend.map_stacked`
    runs one chunk at a time; the padding's outputs are dropped.
    """
    xp = B.namespace(piece["x"])
    c, sel = piece["slots"].shape[0], config.sel
    n = -(-c // per)

    def chunked(x, rows: int):  # (c * rows, ...) -> (n, per * rows, ...), padded with zeros / False / sel
        fill = sel if x is piece["slots"] else 0
        pad = xp.full(((n * per - c) * rows,) + tuple(x.shape[1:]), fill, dtype=x.dtype, device=B.device(x))
        return xp.reshape(xp.concat([x, pad]), (n, per * rows) + tuple(x.shape[1:]))

    keys = [k for k in ("x", "rows", "sw", "u", "valid") if k in piece]
    xs = {k: chunked(piece[k], sel) for k in keys}
    xs["slots"] = chunked(piece["slots"], 1)
    gr, total = B.map_stacked(lambda chunk: pair_stage(params, config, chunk, static=True, want_sum=want_sum), xs)

    def whole(x):  # (n, per, ...) -> (c, ...)
        return None if x is None else xp.reshape(x, (n * per,) + tuple(x.shape[2:]))[:c]

    return whole(gr), whole(total)


def _pairs(config: DPA1Config, piece: dict, center, c, static: bool):
    """The layer-independent pair quantities: ``(query (P,), key (P,), pair_mask (P,), sw_pair (P,) or None,
    phantoms (R,) or None, post (P,) or None)``; ``post`` multiplies the softmax weights."""
    xp = B.namespace(piece["x"])
    valid, sw = piece["valid"], piece["sw"][:, 0]
    query, key, pair_mask = center_edge_pairs(center, valid, c, static_nnei=config.sel if static else None)
    sw_pair = phantoms = gate = None
    if config.smooth_type_embedding:
        sw_pair = B.gather(sw, query) * B.gather(sw, key)
        real = segment_sum(xp.astype(valid, sw.dtype), center, c)  # (C,) real rows, in floating point
        phantoms = B.gather(config.sel - real, center)  # (R,) each query's sel - deg
    if config.attn_dotr:
        gate = B.pair_dot(piece["u"], piece["u"], query, key)
    factors = [f for f in (sw_pair, gate) if f is not None]
    post = factors[0] * factors[1] if len(factors) == 2 else (factors[0] if factors else None)
    return query, key, pair_mask, sw_pair, phantoms, post


def _attention_layer(lp, config: DPA1Config, g, valid, pairs):
    """One gated self-attention layer with residual and LayerNorm on edge rows: ``(R, ng) -> (R, ng)``."""
    query, key, pair_mask, sw_pair, phantoms, post = pairs
    h = config.attn
    q, k, v = (B.affine(g, lp["in_w"][:, i * h : (i + 1) * h], lp["in_b"][i * h : (i + 1) * h]) for i in range(3))
    if config.normalize:
        q, k, v = unit_rows(q, valid, config.alpha), unit_rows(k, valid), unit_rows(v, valid)
    else:
        q = q * config.alpha
    logits = B.pair_dot(q, k, query, key)  # (P,)
    rows = g.shape[0]
    if config.smooth_type_embedding:
        logits = (logits + SMOOTH_SHIFT) * sw_pair
        w = segment_softmax(logits, query, rows, mask=pair_mask, phantom_count=phantoms, phantom_logit=0.0)
    else:
        w = segment_softmax(logits, query, rows, mask=pair_mask)
    if post is not None:
        w = w * post
    # masked pairs have weight exactly 0 and finite values (the edge stage's masked rows are finite)
    attended = B.pair_spread(w, v, query, key, rows)  # (R, attn)
    y = layer({"w": lp["out_w"], "b": lp["out_b"]}, attended, "linear", resnet=False)
    return layer_norm(g + y, lp["ln_w"], lp["ln_b"], config.ln_eps)
