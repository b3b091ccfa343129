"""DPA1: the graph path equals the independent dense reference (float64, 1e-12), on every backend.

Matrix: 8 configs x 6 systems x {native, deepmd_compat} on numpy and torch, and
on jax the systems of each kind (:data:`JAX_SYSTEMS`), each run
with every block-stage layout (one-width blocks, degree buckets, center-edge
pairs) on the compact graph (with poisoned masked guard edges) and on the
shape-static layout (with poisoned padding); the dense reference gets
poisoned empty slots. Cross-backend agreement is checked against numpy.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from dpa1_cases import CONFIGS, SEL, SYSTEMS, convert, make_config, make_system, random_params
from helpers import BACKENDS, to_numpy

from graphdesc.descriptor import cast_params, dense_inputs, dpa1_dense, dpa1_graph
from graphdesc.descriptor.ragged import ATTENTION
from graphdesc.graph import NeighborGraph, to_static

TOL = 1e-12
JAX_SYSTEMS = ("small_cell", "single_atom", "lonely_atom", "ragged_batch")
"""jax's systems: a batch of a periodic and an open frame (what ``triclinic`` and ``cluster`` are alone), more
images than atoms, no edges, an atom without neighbors. jax runs these layouts op by op and compiles every
op at every new shape: about 40 s per system on the 2-core CI machine, which the other two would add."""
CASES = [(b, s) for b in BACKENDS for s in SYSTEMS if b != "jax" or s in JAX_SYSTEMS]


def _poison_static(graph: NeighborGraph) -> NeighborGraph:
    vec = np.array(graph.edge_vec)
    pad = np.flatnonzero(~np.asarray(graph.edge_mask))
    vec[pad[::2]] = np.nan
    vec[pad[1::2]] = np.inf
    return graph.replace(edge_vec=vec)


def _with_guard_edges(graph: NeighborGraph) -> NeighborGraph:
    """Two masked edges holding NaN / -inf, placed first (any edge order is allowed)."""
    n = int(np.sum(graph.n_node))
    ei = np.concatenate([np.array([[0, n - 1], [n - 1, 0]]), graph.edge_index], axis=1)
    vec = np.concatenate([[[np.nan, 1.0, 2.0], [-np.inf, 0.0, 0.0]], graph.edge_vec])
    mask = np.concatenate([[False, False], graph.edge_mask])
    return NeighborGraph(ei, vec, mask, graph.n_node)


@functools.lru_cache(maxsize=None)
def _case(config_name, system, compat):
    config = make_config(config_name)
    params = random_params(config, seed=len(config_name))
    graph, atype, _ = make_system(system, config.ntypes)
    reference = dpa1_graph(params, config, graph, atype, deepmd_compat=compat)
    return config, params, graph, atype, reference


@pytest.mark.parametrize("compat", [False, True], ids=["native", "deepmd_compat"])
@pytest.mark.parametrize("config_name", list(CONFIGS))
@pytest.mark.parametrize("backend,system", CASES, indirect=["backend"], ids=["-".join(c) for c in CASES])
def test_graph_equals_dense(backend, config_name, system, compat):
    config, params, graph, atype, (ref_d, ref_r) = _case(config_name, system, compat)
    p = cast_params(params, backend.asarray(np.zeros(1)))
    a = backend.asarray(atype)

    guarded = convert(_with_guard_edges(graph), backend)
    padded = convert(_poison_static(to_static(graph, SEL)), backend)
    paths = {}
    for attention in ATTENTION:
        paths[f"compact {attention}"] = dpa1_graph(p, config, guarded, a, deepmd_compat=compat, attention=attention)
        paths[f"static {attention}"] = dpa1_graph(p, config, padded, a, deepmd_compat=compat, static=True,
                                                  attention=attention)
    inputs = {k: np.array(v) for k, v in dense_inputs(graph, atype, SEL).items()}
    empty = ~inputs["mask"]
    inputs["vec"][empty] = np.nan
    inputs["nei_type"][empty] = 10**6
    dense = dpa1_dense(p, config, **{k: backend.asarray(v) for k, v in inputs.items()}, deepmd_compat=compat)

    d_dense, r_dense = to_numpy(dense[0]), to_numpy(dense[1])
    assert d_dense.shape == (len(atype), config.dim_out) and r_dense.shape == (len(atype), config.ng, 3)
    assert np.all(np.isfinite(d_dense))
    if graph.num_edges or compat or config.concat_output_tebd:  # else all zero by definition
        assert np.abs(d_dense).max() > 1e-3
    for name, (d, r) in paths.items():
        assert type(d) is type(dense[0]), f"{name}: output library differs from input's"
        np.testing.assert_allclose(to_numpy(d), d_dense, rtol=0, atol=TOL, err_msg=f"{name} descriptor")
        np.testing.assert_allclose(to_numpy(r), r_dense, rtol=0, atol=TOL, err_msg=f"{name} rot_mat")
    # cross-backend: against the numpy graph path
    for name in ("compact blocks", "compact pairs"):
        np.testing.assert_allclose(to_numpy(paths[name][0]), ref_d, rtol=0, atol=TOL, err_msg=name)
        np.testing.assert_allclose(to_numpy(paths[name][1]), ref_r, rtol=0, atol=TOL, err_msg=name)


def test_compat_term_is_what_separates_the_semantics():
    """With random davg the S2 padding term is O(0.1-1); with davg = 0 it vanishes exactly."""
    config = make_config("default")
    graph, atype, _ = make_system("cluster", config.ntypes)
    params = random_params(config)
    native, compat = (dpa1_graph(params, config, graph, atype, deepmd_compat=c)[0] for c in (False, True))
    assert np.abs(native - compat).max() > 1e-2
    params = random_params(config, davg=False)
    native, compat = (dpa1_graph(params, config, graph, atype, deepmd_compat=c)[0] for c in (False, True))
    np.testing.assert_allclose(native, compat, rtol=0, atol=TOL)


def test_float32_matches_float64():
    config64 = make_config("default")
    config32 = make_config("default", precision="float32")
    params = random_params(config64)
    graph, atype, _ = make_system("triclinic", 2)
    ref = dpa1_graph(params, config64, graph, atype)[0]
    p32 = cast_params(params, dtype="float32")
    out = dpa1_graph(p32, config32, graph.replace(edge_vec=graph.edge_vec.astype(np.float32)), atype)[0]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-5 * np.abs(ref).max())


@pytest.mark.parametrize("system", list(SYSTEMS))
@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_chunked_block_stage(monkeypatch, config_name, system):
    """On CPU the block stage runs in chunks of centers: any chunking gives the one-piece
    values and the same edge_vec gradients (torch), native and deepmd_compat."""
    torch = pytest.importorskip("torch", reason="chunking is checked with torch's autograd")
    import graphdesc.descriptor.graph_path as gp

    config, params, graph, atype, _ = _case(config_name, system, False)
    p = cast_params(params, torch.zeros(1, dtype=torch.float64))
    guarded = _with_guard_edges(graph)
    g = NeighborGraph(*(torch.as_tensor(np.asarray(getattr(guarded, k)))
                        for k in ("edge_index", "edge_vec", "edge_mask", "n_node")))
    a = torch.as_tensor(atype)
    weights = torch.as_tensor(np.random.default_rng(0).normal(size=(len(atype), config.dim_out)))

    def run(chunk_bytes, compat):
        monkeypatch.setattr(gp, "CHUNK_BYTES", chunk_bytes)
        vec = g.edge_vec.clone().requires_grad_(True)
        d = dpa1_graph(p, config, g.replace(edge_vec=vec), a, deepmd_compat=compat)[0]
        (grad,) = torch.autograd.grad((d * weights).sum(), vec, allow_unused=True, materialize_grads=True)
        return d.detach().numpy(), grad.numpy()

    width = max(int(torch.bincount(g.dst[g.edge_mask], minlength=len(atype)).max()), 2)
    row_bytes = width * max(width, config.attn) * 8
    for compat in (False, True):
        whole = run(2**40, compat)
        for chunk_bytes in (1, 3 * row_bytes):  # one center per chunk; 3 per chunk, the last one short
            chunked = run(chunk_bytes, compat)
            sizes = gp._chunk_sizes(len(atype), width, config, g.edge_vec)
            assert len(sizes) == -(-len(atype) // max(1, chunk_bytes // row_bytes)) and sum(sizes) == len(atype)
            np.testing.assert_allclose(chunked[0], whole[0], rtol=0, atol=TOL)
            np.testing.assert_allclose(chunked[1], whole[1], rtol=0, atol=TOL)
