"""The block stage's three layouts (one-width blocks, degree buckets, center-edge pairs) agree, in pieces too.

The parity matrix (``test_descriptor_parity.py``) checks every layout against the
dense reference in one piece; here: any cut into pieces gives the same values,
first and second derivatives (torch, float64, 1e-12), on a system whose
degrees are uneven; the piece rule keeps its budget; jax's jitted energy
model and the torch shell take the option; ``"auto"`` resolves as documented;
a wrong name is a clear error.
"""

from __future__ import annotations

import numpy as np
import pytest
from dpa1_cases import CONFIGS, make_config, make_system, random_params

from graphdesc.descriptor import cast_params, dpa1_graph
from graphdesc.descriptor.graph_path import attention_layout
from graphdesc.descriptor.ragged import ATTENTION, BUCKET_GROWTH, ragged_cuts
from graphdesc.graph import NeighborGraph, batch_graphs, build_graph

TOL = 1e-12


def _uneven_system(ntypes: int):
    """A dense cluster next to sparse atoms (degrees 0 to ~30), and a small periodic cell, batched."""
    rng = np.random.default_rng(7)
    core = np.stack(np.meshgrid(*[np.arange(3.0)] * 3, indexing="ij"), -1).reshape(-1, 3) * 1.1
    core = core + rng.normal(0, 0.05, core.shape)  # 27 atoms 1.1 A apart: degree 26
    sparse = np.array([[8.0, 0, 0], [11.0, 0, 0], [11.0, 3.2, 0], [30.0, 0, 0]])
    cell = np.diag([7.1, 7.3, 7.6])
    frames = [(np.concatenate([core, sparse]), None, False), (rng.uniform(0, 1, (9, 3)) @ cell, cell, True)]
    graph = batch_graphs([build_graph(p, 4.0, cell=c, pbc=b) for p, c, b in frames])
    atype = rng.integers(0, ntypes, sum(len(f[0]) for f in frames))
    deg = np.bincount(graph.dst, minlength=len(atype))
    assert deg.max() >= 3 * np.percentile(deg, 25) and deg.min() == 0, deg
    return graph, atype


def _torch_graph(graph):
    torch = pytest.importorskip("torch", reason="pieces and derivatives are checked with torch's autograd")
    return NeighborGraph(*(torch.as_tensor(np.asarray(getattr(graph, k)))
                           for k in ("edge_index", "edge_vec", "edge_mask", "n_node")))


@pytest.mark.parametrize("config_name", list(CONFIGS))
def test_layouts_agree_in_pieces_with_derivatives(monkeypatch, config_name):
    """Every layout, whole or cut into pieces of one center or a few, gives the one-piece blocks' descriptor,
    its gradient w.r.t. edge_vec and a second derivative (a force loss's), native and deepmd_compat."""
    import torch

    import graphdesc.descriptor.graph_path as gp

    config = make_config(config_name)
    params = cast_params(random_params(config, seed=3), torch.zeros(1, dtype=torch.float64))
    graph, atype = _uneven_system(config.ntypes)
    g, a = _torch_graph(graph), torch.as_tensor(atype)
    weights = torch.as_tensor(np.random.default_rng(0).normal(size=(len(atype), config.dim_out)))

    def run(attention, chunk_bytes, compat):
        monkeypatch.setattr(gp, "CHUNK_BYTES", chunk_bytes)
        vec = g.edge_vec.clone().requires_grad_(True)
        d = dpa1_graph(params, config, g.replace(edge_vec=vec), a, deepmd_compat=compat, attention=attention)[0]
        (grad,) = torch.autograd.grad((d * weights).sum(), vec, create_graph=True)
        (second,) = torch.autograd.grad((grad * grad).sum(), vec, allow_unused=True, materialize_grads=True)
        return [x.detach().numpy() for x in (d, grad, second)]

    for compat in (False, True):
        want = run("blocks", 2**40, compat)
        assert np.abs(want[2]).max() > 0
        for attention in ATTENTION:
            for chunk_bytes in (1, 20_000, 2**40):
                got = run(attention, chunk_bytes, compat)
                for name, x, y in zip(("descriptor", "gradient", "second derivative"), got, want):
                    # 1e-12 relative to the largest entry: the 1.1 A core makes second derivatives O(100)
                    np.testing.assert_allclose(x, y, rtol=0, atol=TOL * max(1.0, np.abs(y).max()),
                                               err_msg=f"{attention} {chunk_bytes} {name}")


SMOOTH = [name for name in CONFIGS if make_config(name).smooth_type_embedding and make_config(name).attn_layer]


@pytest.mark.parametrize("config_name", SMOOTH)
@pytest.mark.parametrize("sel", ["above", "equal", "below"])
def test_folded_smooth_attention_equals_the_masked_layer(monkeypatch, config_name, sel):
    """The folded smooth-attention layer (switches in the logit matmul, empty keys as phantoms, one extra
    key for the rest, an unmasked softmax) gives the masked layer's descriptor, gradient and second
    derivative with sel above the widest block (extra phantoms), equal to it (no extra key) and below it
    (``sel - width < 0``: a signed phantom term in the denominator)."""
    import torch

    import graphdesc.descriptor.graph_path as gp

    graph, atype = _uneven_system(make_config(config_name).ntypes)
    width = int(np.bincount(graph.dst, minlength=len(atype)).max())
    config = make_config(config_name, sel={"above": width + 9, "equal": width, "below": width - 3}[sel])
    params = cast_params(random_params(config, seed=5), torch.zeros(1, dtype=torch.float64))
    g, a = _torch_graph(graph), torch.as_tensor(atype)
    weights = torch.as_tensor(np.random.default_rng(1).normal(size=(len(atype), config.dim_out)))
    folded_calls = []
    layer, rule = gp._folded_attention_layer, gp.folded_phantoms
    monkeypatch.setattr(gp, "_folded_attention_layer", lambda *args: folded_calls.append(1) or layer(*args))

    def run(fold):
        monkeypatch.setattr(gp, "folded_phantoms", rule if fold else lambda config, width: None)
        vec = g.edge_vec.clone().requires_grad_(True)
        d = dpa1_graph(params, config, g.replace(edge_vec=vec), a, attention="blocks")[0]
        (grad,) = torch.autograd.grad((d * weights).sum(), vec, create_graph=True)
        (second,) = torch.autograd.grad((grad * grad).sum(), vec)
        return [x.detach().numpy() for x in (d, grad, second)]

    want = run(False)
    assert not folded_calls
    got = run(True)
    assert len(folded_calls) == config.attn_layer, folded_calls
    assert np.abs(want[2]).max() > 0
    for name, x, y in zip(("descriptor", "gradient", "second derivative"), got, want):
        np.testing.assert_allclose(x, y, rtol=0, atol=TOL * max(1.0, np.abs(y).max()), err_msg=name)


def test_folded_layer_runs_where_it_applies():
    """folded_phantoms: sel - width, of any sign, for smooth attention, else None (the masked layer)."""
    import graphdesc.descriptor.graph_path as gp

    smooth, rough = make_config("default"), make_config("rough_twoside_1layer")
    assert gp.folded_phantoms(smooth, smooth.sel - 5) == 5
    assert gp.folded_phantoms(smooth, smooth.sel) == 0
    assert gp.folded_phantoms(smooth, smooth.sel + 1) == -1
    assert gp.folded_phantoms(rough, 3) is None


def test_pieces_are_really_cut(monkeypatch):
    """With a small budget the ragged layouts run in several pieces, each a whole set of centers."""
    import torch

    import graphdesc.descriptor.graph_path as gp

    config = make_config("default")
    params = cast_params(random_params(config), torch.zeros(1, dtype=torch.float64))
    graph, atype = _uneven_system(config.ntypes)
    g, a = _torch_graph(graph), torch.as_tensor(atype)
    monkeypatch.setattr(gp, "CHUNK_BYTES", 20_000)
    for attention in ("buckets", "pairs"):
        _, parts = gp.center_inputs(params, config, g, a, attention=attention)
        pieces = gp.center_pieces(parts, config, attention)
        assert len(pieces) > 2, attention
        assert sum(p["slots"].shape[0] for p in pieces) == len(atype)
        assert all(p["x"].shape[0] == int(p["slots"].sum()) for p in pieces)
        if attention == "buckets":  # degree order, so each piece's centers are of one degree range
            slots = parts["slots"].numpy()
            assert np.all(np.diff(slots) >= 0)
            for p in pieces:
                s = p["slots"].numpy()
                assert max(s.max(), 2) <= BUCKET_GROWTH * max(s.min(), 2)


def _jax_static(graph, sel):
    jax = pytest.importorskip("jax", reason="the chunks inside a jitted program are jax's lax.map")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from graphdesc.graph import to_static

    static = to_static(graph, sel)
    return NeighborGraph(*(jnp.asarray(np.asarray(getattr(static, k)))
                           for k in ("edge_index", "edge_vec", "edge_mask", "n_node")))


@pytest.mark.parametrize("config_name", ["default", "rough_twoside_1layer", "raw_qkv_temp_oneside"])
def test_jitted_pairs_run_in_chunks_inside_the_program(monkeypatch, config_name):
    """Under jax.jit (static layout, one piece) the pair path maps over chunks of centers: with a budget of a
    few centers (the last chunk padded) the descriptor, its gradient and a second derivative equal the
    jitted blocks' (1e-12), native and deepmd_compat (whole pairs = blocks is the parity matrix's)."""
    import jax
    import jax.numpy as jnp

    import graphdesc.descriptor.graph_path as gp
    from graphdesc.descriptor.pair_path import static_chunk_centers

    config = make_config(config_name)
    graph, atype = _uneven_system(config.ntypes)
    sj, aj = _jax_static(graph, config.sel), jnp.asarray(atype)
    params = cast_params(random_params(config, seed=3), jnp.zeros(1))
    weights = jnp.asarray(np.random.default_rng(0).normal(size=(len(atype), config.dim_out)))
    small = 3 * config.sel * max(config.sel * config.attn, 4 * config.ng) * 8  # 3 centers' bytes (fp64)
    assert static_chunk_centers(config, small // 8) == 3 and len(atype) % 3 != 0  # a padded last chunk

    def program(chunk_bytes, attention, compat):
        monkeypatch.setattr(gp, "CHUNK_BYTES", chunk_bytes)

        def loss(vec):
            d = dpa1_graph(params, config, sj.replace(edge_vec=vec), aj, static=True, attention=attention,
                           deepmd_compat=compat)[0]
            return jnp.sum(d * weights), d

        def both(vec):
            (_, d), grad = jax.value_and_grad(loss, has_aux=True)(vec)
            return d, grad, jax.grad(lambda v: jnp.sum(jax.grad(lambda u: loss(u)[0])(v) ** 2))(vec)

        return both

    def loops(chunk_bytes):  # lax.map is a scan in the traced program (tracing only: cheap)
        return str(jax.make_jaxpr(program(chunk_bytes, "pairs", False))(sj.edge_vec)).count("scan[")

    assert loops(small) > loops(2**40), "the small budget did not map over chunks"
    for compat in (False, True):
        want = jax.jit(program(2**40, "blocks", compat))(sj.edge_vec)
        got = jax.jit(program(small, "pairs", compat))(sj.edge_vec)
        assert np.abs(np.asarray(want[2])).max() > 0
        for name, x, y in zip(("descriptor", "gradient", "second derivative"), got, want):
            y = np.asarray(y)
            np.testing.assert_allclose(np.asarray(x), y, rtol=0, atol=TOL * max(1.0, np.abs(y).max()),
                                       err_msg=f"{name} compat={compat}")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_static_pair_chunks_equal_the_whole(backend):
    """The in-program chunking of the static layout (map_stacked's loop on numpy and torch): G^T rows and
    the sum of G equal the whole piece's, for chunks of 1, 4 and 7 centers (padded last chunks)."""
    import graphdesc.descriptor.graph_path as gp
    from graphdesc.descriptor.pair_path import pair_stage, static_chunk_centers
    from graphdesc.graph import to_static

    config = make_config("default")
    graph, atype = _uneven_system(config.ntypes)
    static = to_static(graph, config.sel)
    if backend == "torch":
        torch = pytest.importorskip("torch")
        like = torch.zeros(1, dtype=torch.float64)
        static = NeighborGraph(*(torch.as_tensor(np.asarray(getattr(static, k)))
                                 for k in ("edge_index", "edge_vec", "edge_mask", "n_node")))
        atype = torch.as_tensor(atype)
    else:
        like = np.zeros(1)
    params = cast_params(random_params(config, seed=5), like)
    _, parts = gp.center_inputs(params, config, static, atype, static=True, attention="pairs")
    want = pair_stage(params, config, parts, static=True, want_sum=True)
    cost = config.sel * max(config.sel * config.attn, 4 * config.ng)
    for per in (1, 4, 7):
        assert static_chunk_centers(config, per * cost) == per
        got = pair_stage(params, config, parts, static=True, want_sum=True, chunk_elements=per * cost)
        for x, y in zip(got, want):
            x, y = np.asarray(x), np.asarray(y)
            assert x.shape == y.shape
            np.testing.assert_allclose(x, y, rtol=0, atol=TOL * max(1.0, np.abs(y).max()), err_msg=f"{per}")


def test_jitted_pairs_never_hold_the_pair_rows_whole():
    """XLA's buffer plan for the jitted energy model (forces included) of 32-atom fcc Cu with pairs needs
    less scratch memory than one ``(P, attn)`` array: the chunks are real (one piece needed 1.9 GB, 9.5 of them)."""
    pytest.importorskip("jax", reason="the chunks inside a jitted program are jax's lax.map")
    import jax.numpy as jnp

    from graphdesc.descriptor import DPA1Config
    from graphdesc.examples import fcc_positions
    from graphdesc.jax import energy_jit
    from graphdesc.model import EnergyConfig, init_model_params

    config = EnergyConfig(DPA1Config(ntypes=1, rcut=6.0, rcut_smth=0.5, sel=80))
    pos = fcc_positions(2)
    sj = _jax_static(build_graph(pos, 6.0, cell=np.eye(3) * 3.61 * 2, pbc=True), config.descriptor.sel)
    params = cast_params(init_model_params(config), jnp.zeros(1))
    compiled = energy_jit(config, attention="pairs").lower(params, sj, jnp.zeros(len(pos), dtype=jnp.int64)).compile()
    pair_rows = len(pos) * config.descriptor.sel ** 2 * config.descriptor.attn * 8
    assert compiled.memory_analysis().temp_size_in_bytes < pair_rows / 2


@pytest.mark.parametrize("attention", ["pairs", "buckets"])
def test_ragged_cuts_keep_the_budget(attention):
    rng = np.random.default_rng(1)
    slots = np.sort(rng.integers(0, 200, 500)) if attention == "buckets" else rng.integers(0, 200, 500)
    attn, ng, budget = 32, 16, 400_000
    sizes = ragged_cuts(slots, attention, attn, ng, budget)
    assert sum(sizes) == len(slots) and min(sizes) >= 1
    bounds = np.cumsum([0] + sizes)
    for a, b in zip(bounds[:-1], bounds[1:]):
        s = slots[a:b]
        if attention == "pairs":
            cost = s * np.maximum(s * attn, 4 * ng)
            assert cost[:-1].sum() <= budget  # a piece passes the budget by its last center at most
        else:
            w = max(s.max(), 2)
            assert b - a == 1 or (b - a) * w * max(w, attn) <= budget
    assert ragged_cuts(slots, attention, attn, ng, 0) == [len(slots)]
    assert ragged_cuts(slots[:0], attention, attn, ng, budget) == [0]


def test_auto_and_bad_names():
    torch = pytest.importorskip("torch")
    from graphdesc.model import EnergyConfig
    from graphdesc.torch import EnergyModel

    def graph_on(dst, like):  # edges into ``dst``, 3 centers
        dst = np.asarray(dst)
        return NeighborGraph(like(np.stack([np.zeros_like(dst), dst])), like(np.ones((len(dst), 3))),
                             like(np.ones(len(dst), dtype=bool)), like(np.ones(1, dtype=np.int64) * 3))

    even, uneven = [0, 1, 2, 0, 1, 2], [0, 1, 2, 2, 2, 2]  # n max / sum deg: 1.0 and 2.0
    for like in (np.asarray, torch.as_tensor):
        assert attention_layout("auto", graph_on(uneven, like), 3) == "buckets"
        assert attention_layout("auto", graph_on(even, like), 3) == "blocks"  # no padding to save
        assert attention_layout("pairs", graph_on(even, like), 3) == "pairs"
    meta = graph_on(uneven, torch.as_tensor).replace(edge_vec=torch.zeros((6, 3), device="meta"))
    assert attention_layout("auto", meta, 3) == "blocks"  # not on the CPU: one piece
    config = make_config("default")
    graph, atype, _ = make_system("cluster", config.ntypes)
    with pytest.raises(ValueError, match="attention must be one of 'auto', 'blocks', 'buckets', 'pairs'"):
        dpa1_graph(random_params(config), config, graph, atype, attention="dense")
    with pytest.raises(ValueError, match="attention must be one of"):
        EnergyModel(EnergyConfig(config), attention="pair")


def test_energy_model_shells_take_the_layout():
    """torch's EnergyModel (attribute ``attention``) and jax's jitted energy model give one-width blocks'
    energies, forces and virials with every layout."""
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from graphdesc.graph import to_static
    from graphdesc.jax import energy_jit
    from graphdesc.model import EnergyConfig, init_model_params
    from graphdesc.torch import EnergyModel

    config = EnergyConfig(make_config("default"), neuron=(16, 16))
    params = init_model_params(config, seed=2)
    graph, atype = _uneven_system(2)
    g, a = _torch_graph(graph), torch.as_tensor(atype)
    want = EnergyModel(config, params, attention="blocks")(g, a)
    static = to_static(graph, config.descriptor.sel)
    sj = NeighborGraph(*(jnp.asarray(np.asarray(getattr(static, k)))
                         for k in ("edge_index", "edge_vec", "edge_mask", "n_node")))
    pj = cast_params(params, jnp.zeros(1))
    for attention in ("auto", *ATTENTION):
        model = EnergyModel(config, params, attention=attention)
        got_t = model(g, a)
        got_j = energy_jit(config, attention=attention)(pj, sj, jnp.asarray(atype))
        for key in ("energy", "atom_energy", "force", "virial"):
            for got in (got_t[key].detach().numpy(), np.asarray(got_j[key])):
                np.testing.assert_allclose(got, want[key].detach().numpy(), rtol=0, atol=TOL,
                                           err_msg=f"{attention} {key}")


def test_accelerator_budget_cuts_ragged_pieces_only(monkeypatch):
    """Off the CPU (pretended here: no GPU in CI), one-width blocks stay one piece while the ragged layouts are
    cut by ACCEL_CHUNK_BYTES, so a pair piece never holds a whole system's gathered rows."""
    import torch

    import graphdesc._backend as B
    import graphdesc.descriptor.graph_path as gp

    config = make_config("default")
    params = cast_params(random_params(config), torch.zeros(1, dtype=torch.float64))
    graph, atype = _uneven_system(config.ntypes)
    g, a = _torch_graph(graph), torch.as_tensor(atype)
    like = g.edge_vec
    assert gp.chunk_elements(like, "pairs") == gp.CHUNK_BYTES // 8
    monkeypatch.setattr(B, "on_cpu", lambda x: False)
    assert gp.chunk_elements(like, "blocks") == 0
    assert gp.chunk_elements(like, "pairs") == gp.chunk_elements(like, "buckets") == gp.ACCEL_CHUNK_BYTES // 8
    monkeypatch.setattr(gp, "ACCEL_CHUNK_BYTES", 20_000)
    monkeypatch.setattr(gp, "CHUNK_BYTES", 2**40)  # the CPU budget would keep one piece
    _, blocks = gp.center_inputs(params, config, g, a, attention="blocks")
    assert len(gp.center_pieces(blocks, config, "blocks")) == 1
    for attention in ("pairs", "buckets"):
        _, parts = gp.center_inputs(params, config, g, a, attention=attention)
        assert len(gp.center_pieces(parts, config, attention)) > 2, attention


@pytest.mark.parametrize("sel_minus_width", [4, 0, -3, -40])
def test_held_phantoms_follow_the_masked_rule(sel_minus_width):
    """The folded layer's softmax in traced programs (no mask: every key finite, empty keys of logit 0 held as
    phantoms, ``sel - width`` more of any sign) gives the masked softmax's weights on the real query-key pairs,
    with its rule where the phantoms would make a denominator <= 0 (-40 reaches it: that branch is checked to
    run)."""
    import torch

    from graphdesc.segment import masked_softmax

    rng = np.random.default_rng(3)
    c, width = 6, 9
    deg = np.array([0, 1, 4, 9, 9, 7])
    valid = torch.as_tensor(np.arange(width)[None, :] < deg[:, None])
    pair = valid[:, :, None] & valid[:, None, :]
    logits = torch.as_tensor(rng.normal(0, 2, (c, width, width)))
    folded = torch.where(valid[:, None, :], logits, torch.zeros_like(logits))  # an empty key's logit is 0
    count = torch.full((1, 1, 1), float(sel_minus_width), dtype=torch.float64)
    empty = (width - valid.sum(1).double())[:, None, None]
    got = masked_softmax(folded, None, phantom_count=count, phantom_logit=0.0, held_phantoms=empty) * pair
    want = masked_softmax(logits, pair, phantom_count=(width + sel_minus_width) - valid.sum(1).double()[:, None, None],
                          phantom_logit=0.0)
    # a few ulps: the empty keys' terms are summed in, then subtracted where the phantoms are dropped
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=0, atol=1e-14 * max(1.0, float(want.abs().max())))
    dropped = (folded.exp().sum(-1, keepdim=True) + sel_minus_width <= 0) & (valid.any(1)[:, None, None])
    assert bool(dropped.any()) == (sel_minus_width == -40)
