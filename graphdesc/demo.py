"""The demo job: DeePMD-style smooth attention weights on an edge graph vs a dense padded layout.

On a jittered fcc copper cluster it builds the edge graph, enumerates the
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
from .examples import cluster_edges, fcc_positions
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


def dense_weights(xp, dst, edge_vec, num_nodes: int, sel: int, rs: float, rc: float):
    """The same weights on the padded ``(N, sel)`` layout.

    Returns ``(weight (N, sel, sel), slot (E,))``, ``slot[e] = c*sel + m`` the
    padded position of edge ``e`` (whose center is ``c``).
    """
    deg = segment_sum(xp.ones(dst.shape, dtype=xp.int64), dst, num_nodes)
    first = B.gather(xp.cumulative_sum(deg) - deg, dst)  # edges are center-major
    slot = dst * sel + (B.arange(dst.shape[0], dst) - first)
    vec = segment_sum(edge_vec, slot, num_nodes * sel)  # one edge per slot; padding stays 0
    real = segment_sum(xp.ones(dst.shape, dtype=edge_vec.dtype), slot, num_nodes * sel) > 0
    r = xp.linalg.vector_norm(vec, axis=-1)
    r_safe = xp.where(real, r, xp.ones_like(r))
    unit = xp.reshape(vec / r_safe[:, None], (num_nodes, sel, 3))
    sw = xp.reshape(xp.where(real, smooth_switch(xp, r_safe, rs, rc), xp.zeros_like(r)), (num_nodes, sel))
    cos = xp.matmul(unit, xp.matrix_transpose(unit))
    logit = (cos + SHIFT) * sw[:, :, None] * sw[:, None, :] - SHIFT
    logit = logit - xp.max(logit, axis=-1, keepdims=True)
    e = xp.exp(logit)
    return e / xp.sum(e, axis=-1, keepdims=True), slot


def run_demo(backends=None, ncell: int = 4, cutoff: float = 6.0, rcut_smth: float = 0.5, repeats: int = 3):
    """Build the example, run graph and dense paths on each backend, return table rows."""
    pos = fcc_positions(ncell, jitter=0.05)
    src, dst, vec = cluster_edges(pos, cutoff)
    n = len(pos)
    deg = np.bincount(dst, minlength=n)
    sel = int(deg.max()) + 8
    rows = []
    for name in backends or ("numpy", "torch", "jax"):
        if importlib.util.find_spec(name) is None:
            rows.append(dict(backend=name, skipped="not installed"))
            continue
        xp, conv = _converter(name)
        d, v = conv(dst), conv(vec)
        t_graph, (q, k, w) = _timed(lambda: graph_weights(xp, d, v, n, sel, rcut_smth, cutoff), repeats)
        t_dense, (wd, slot) = _timed(lambda: dense_weights(xp, d, v, n, sel, rcut_smth, cutoff), repeats)
        q_np, k_np, w_np = (np.asarray(B.to_numpy(a)) for a in (q, k, w))
        slot_np = np.asarray(B.to_numpy(slot))
        ref = np.asarray(B.to_numpy(wd))[dst[q_np], slot_np[q_np] % sel, slot_np[k_np] % sel]
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
