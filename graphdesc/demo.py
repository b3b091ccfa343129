"""The demo job: the DPA1 descriptor on an edge graph vs the dense reference, every backend.

On a jittered periodic fcc copper box it builds the edge graph, installs
DeePMD-style input statistics computed from the box itself, and evaluates
DPA1 (DeePMD-kit's documented configuration: neuron [25, 50, 100],
axis_neuron 16, attn 128, two smooth attention layers) twice: on the graph
(segment sums, center-edge pairs, phantom-term softmax) and on the padded
``(N, sel)`` layout (the independent dense reference). The two must agree to
rounding; the table shows the error and the timings on every installed backend.
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np

from . import _backend as B
from .descriptor import DPA1Config, cast_params, compute_stats, dense_inputs, dpa1_dense, dpa1_graph, init_params
from .examples import fcc_positions
from .graph import NeighborGraph, build_graph

# graph vs dense in float64: descriptor entries are sums of ~100 products of
# order-1 factors; a few thousand ulps of 1.0 is the rounding budget
TOLERANCE = 1e-12


def demo_model(cutoff: float, sel: int) -> DPA1Config:
    return DPA1Config(rcut=cutoff, rcut_smth=0.5, sel=sel, ntypes=1, neuron=(25, 50, 100), axis_neuron=16,
                      tebd_dim=8, attn=128, attn_layer=2)


def run_demo(backends=None, ncell: int = 4, cutoff: float = 6.0, repeats: int = 2):
    """Build the example, run graph and dense paths on each backend, return table rows."""
    pos = fcc_positions(ncell, jitter=0.05)
    graph = build_graph(pos, cutoff, cell=np.eye(3) * 3.61 * ncell, pbc=True)
    n = len(pos)
    atype = np.zeros(n, dtype=np.int64)
    deg = np.bincount(graph.dst, minlength=n)
    config = demo_model(cutoff, sel=int(deg.max()) + 8)
    params = init_params(config, seed=0)
    params["davg"], params["dstd"] = compute_stats(config, [(graph, atype)])
    rows = []
    for name in backends or ("numpy", "torch", "jax"):
        if importlib.util.find_spec(name) is None:
            rows.append(dict(backend=name, skipped="not installed"))
            continue
        conv = _converter(name)
        g = NeighborGraph(*(conv(np.asarray(a)) for a in (graph.edge_index, graph.edge_vec, graph.edge_mask,
                                                           graph.n_node)))
        a = conv(atype)
        p = cast_params(params, g.edge_vec)
        dense = dense_inputs(g, a, config.sel)
        t_graph, (dg, rg) = _timed(lambda: dpa1_graph(p, config, g, a), repeats)  # noqa: B023
        t_dense, (dd, rd) = _timed(lambda: dpa1_dense(p, config, **dense), repeats)  # noqa: B023
        err = max(float(np.max(np.abs(B.to_numpy(dg) - B.to_numpy(dd)))),
                  float(np.max(np.abs(B.to_numpy(rg) - B.to_numpy(rd)))))
        rows.append(dict(backend=name, atoms=n, edges=int(graph.num_edges), pairs=int(np.sum(deg**2)),
                         sel=config.sel, graph_ms=1e3 * t_graph, dense_ms=1e3 * t_dense, max_abs_err=err,
                         descriptor_dim=config.dim_out))
    return rows


def _converter(name):
    if name == "torch":
        import torch

        return torch.from_numpy
    if name == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp

        return jnp.asarray
    return np.asarray


def _timed(fn, repeats):
    out = fn()  # warm-up (JAX compiles here)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def format_rows(rows) -> str:
    head = (f"{'backend':8} {'atoms':>6} {'edges':>7} {'pairs':>9} {'sel':>4} {'graph ms':>9} {'dense ms':>9} "
            f"{'max|graph-dense|':>17}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['backend']:8} skipped: {r['skipped']}")
            continue
        lines.append(f"{r['backend']:8} {r['atoms']:6d} {r['edges']:7d} {r['pairs']:9d} {r['sel']:4d} "
                     f"{r['graph_ms']:9.1f} {r['dense_ms']:9.1f} {r['max_abs_err']:17.2e}")
    return "\n".join(lines)
