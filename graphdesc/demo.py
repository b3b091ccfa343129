"""The demo job: DeePMD-style smooth attention weights on an edge graph vs a dense padded layout.

On a jittered periodic fcc copper box it builds the edge graph, enumerates the
center-edge pairs, forms DPA1's smooth logits ``(cos + 20) sw_q sw_k - 20``
(``cos`` between the two bond vectors) and normalizes them with
``segment_softmax`` plus ``sel - deg`` phantom terms at -20. The dense
reference pads every center to ``sel`` slots, gives padding keys ``sw = 0``
(logit exactly -20, as DeePMD does) and takes a plain softmax over the slots.
The two must agree to rounding; the table shows the error and the timings on
every installed backend.
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np

from . import _backend as B
from .examples import fcc_positions
from .graph import build_graph, to_static
from .pairs import center_edge_pairs
from .segment import segment_softmax, segment_sum

SHIFT = 20.0  # DeePMD's smooth-attention shift
# graph vs dense weights in float64: both sum ~100 terms of order 1e-2, so a
# few hundred ulps of 1.0 is the rounding budget
TOLERANCE = 1e-13


def smooth_switch(xp, r, rs: float, rc: float):
    """DPA1's switch: 1 below ``rs``, 0 above ``rc``, C2 in between."""
    u = xp.clip((r - rs) / (rc - rs), 0.0, 1.0)
    return u**3 * (-6.0 * u**2 + 15.0 * u - 10.0) + 1.0


def graph_weights(xp, dst, edge_vec, num_nodes: int, sel: int, rs: float, rc: float):
    """Attention weights per (query edge, key edge) pair on the compact graph.

    Returns ``(query (P,), key (P,), weight (P,))``.
    """
    mask = xp.ones(dst.shape, dtype=xp.bool)
    query, key, _ = center_edge_pairs(dst, mask, num_nodes)
    r = xp.linalg.vector_norm(edge_vec, axis=-1)
    unit, sw = edge_vec / r[:, None], smooth_switch(xp, r, rs, rc)
    cos = xp.sum(B.gather(unit, query) * B.gather(unit, key), axis=-1)
    logit = (cos + SHIFT) * B.gather(sw, query) * B.gather(sw, key) - SHIFT
    deg = segment_sum(xp.ones(dst.shape, dtype=edge_vec.dtype), dst, num_nodes)
    phantoms = B.gather(sel - deg, dst)  # per query edge
    weight = segment_softmax(logit, query, dst.shape[0], phantom_count=phantoms, phantom_logit=-SHIFT)
    return query, key, weight


def dense_weights(xp, vec, mask, rs: float, rc: float):
    """The same weights on the padded layout.

    Args:
        vec: ``(N, sel, 3)`` edge vectors, 0 on padding slots.
        mask: ``(N, sel)`` bool, real slots.

    Returns:
        ``(N, sel, sel)`` weights; padding keys have ``sw = 0``, so logit -20.
    """
    r = xp.linalg.vector_norm(vec, axis=-1)
    r_safe = xp.where(mask, r, xp.ones_like(r))
    unit = vec / r_safe[..., None]
    sw = xp.where(mask, smooth_switch(xp, r_safe, rs, rc), xp.zeros_like(r))
    cos = xp.matmul(unit, xp.matrix_transpose(unit))
    logit = (cos + SHIFT) * sw[:, :, None] * sw[:, None, :] - SHIFT
    logit = logit - xp.max(logit, axis=-1, keepdims=True)
    e = xp.exp(logit)
    return e / xp.sum(e, axis=-1, keepdims=True)


def run_demo(backends=None, ncell: int = 4, cutoff: float = 6.0, rcut_smth: float = 0.5, repeats: int = 3):
    """Build the example, run graph and dense paths on each backend, return table rows."""
    pos = fcc_positions(ncell, jitter=0.05)
    cell = np.eye(3) * 3.61 * ncell
    graph = build_graph(pos, cutoff, cell=cell, pbc=True)
    n, dst = len(pos), graph.dst
    sel = int(np.bincount(dst, minlength=n).max()) + 8
    static = to_static(graph, sel)
    slot = np.flatnonzero(static.edge_mask) % sel  # slot of each compact edge
    rows = []
    for name in backends or ("numpy", "torch", "jax"):
        if importlib.util.find_spec(name) is None:
            rows.append(dict(backend=name, skipped="not installed"))
            continue
        xp, conv = _converter(name)
        d, v = conv(dst), conv(graph.edge_vec)
        dense_vec = conv(static.edge_vec.reshape(n, sel, 3))
        dense_mask = conv(static.edge_mask.reshape(n, sel))
        t_graph, (q, k, w) = _timed(lambda: graph_weights(xp, d, v, n, sel, rcut_smth, cutoff), repeats)
        t_dense, wd = _timed(lambda: dense_weights(xp, dense_vec, dense_mask, rcut_smth, cutoff), repeats)
        q_np, k_np, w_np = (B.to_numpy(a) for a in (q, k, w))
        ref = B.to_numpy(wd)[dst[q_np], slot[q_np], slot[k_np]]
        rows.append(dict(backend=name, atoms=n, edges=len(dst), pairs=len(q_np), sel=sel,
                         graph_ms=1e3 * t_graph, dense_ms=1e3 * t_dense,
                         max_abs_err=float(np.max(np.abs(w_np - ref)))))
    return rows


def _converter(name):
    if name == "torch":
        import torch

        return B.namespace(torch.zeros(1)), torch.from_numpy
    if name == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        return B.namespace(jnp.zeros(1)), jnp.asarray
    return B.namespace(np.zeros(1)), np.asarray


def _timed(fn, repeats):
    out = fn()  # warm-up (JAX compiles here)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def format_rows(rows) -> str:
    head = f"{'backend':8} {'atoms':>6} {'edges':>7} {'pairs':>9} {'sel':>4} {'graph ms':>9} {'dense ms':>9} {'max|graph-dense|':>17}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['backend']:8} skipped: {r['skipped']}")
            continue
        lines.append(f"{r['backend']:8} {r['atoms']:6d} {r['edges']:7d} {r['pairs']:9d} {r['sel']:4d} "
                     f"{r['graph_ms']:9.1f} {r['dense_ms']:9.1f} {r['max_abs_err']:17.2e}")
    return "\n".join(lines)
