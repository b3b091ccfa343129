"""center_edge_pairs against an O(E^2) brute-force enumeration, both layouts, three backends."""

import numpy as np
import pytest
from helpers import BACKENDS, Backend, brute_pairs, to_numpy
from hypothesis import given, settings
from hypothesis import strategies as st

from graphdesc.pairs import center_edge_pairs, pair_pattern

POLICIES = [(True, True), (False, True), (True, False), (False, False)]
POLICY_IDS = ["self-ordered", "noself-ordered", "self-unordered", "noself-unordered"]


def f_of(d, include_self, ordered):
    """Pairs per center of degree d, by the closed forms of the docstring."""
    return {
        (True, True): d * d,
        (False, True): d * (d - 1),
        (True, False): d * (d + 1) // 2,
        (False, False): d * (d - 1) // 2,
    }[(include_self, ordered)]


def as_pairs(q, k, m=None):
    q, k = to_numpy(q), to_numpy(k)
    keep = np.ones(len(q), bool) if m is None else to_numpy(m)
    return list(zip(q[keep].tolist(), k[keep].tolist()))


@st.composite
def compact_graphs(draw, few_shapes=False):
    n = draw(st.sampled_from([1, 3, 7]) if few_shapes else st.integers(0, 7))
    e = (draw(st.sampled_from([0, 5, 17, 40]) if few_shapes else st.integers(0, 40))) if n else 0
    dst = draw(st.lists(st.integers(0, max(n - 1, 0)), min_size=e, max_size=e))
    mask = draw(st.lists(st.booleans(), min_size=e, max_size=e))
    return n, np.array(dst, dtype=np.int64), np.array(mask, dtype=bool)


@st.composite
def static_graphs(draw, few_shapes=False):
    n = draw(st.sampled_from([1, 4]) if few_shapes else st.integers(0, 6))
    k = draw(st.sampled_from([1, 3, 6]) if few_shapes else st.integers(1, 6))
    mask = np.array(draw(st.lists(st.booleans(), min_size=n * k, max_size=n * k)), dtype=bool)
    # real edges sit in their center's slots; masked slots may hold any in-range dst
    noise = np.array(draw(st.lists(st.integers(0, max(n - 1, 0)), min_size=n * k, max_size=n * k)), dtype=np.int64)
    dst = np.where(mask, np.arange(n * k) // k, noise)
    return n, k, dst.astype(np.int64), mask


# Eager JAX compiles every op anew for each input shape (about 1 s per random
# graph here), so its examples draw from a few shapes and are fewer.
EXAMPLES = {"numpy": 60, "torch": 60, "jax": 15}


def run_property(name, strategy, check):
    """Run ``check(graph)`` on hypothesis examples of ``strategy``, with ``name``'s budget."""
    graphs = strategy(few_shapes=name == "jax")
    settings(max_examples=EXAMPLES[name], deadline=None)(given(graph=graphs)(check))()


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("include_self,ordered", POLICIES, ids=POLICY_IDS)
def test_compact_equals_brute_force(name, include_self, ordered):
    b = Backend(name)

    def check(graph):
        n, dst, mask = graph
        q, k, m = center_edge_pairs(b.asarray(dst), b.asarray(mask), n, include_self=include_self, ordered=ordered)
        got = as_pairs(q, k)
        assert to_numpy(m).all()
        assert sorted(got) == brute_pairs(dst, mask, include_self, ordered)
        # center-major, then query, then key in edge order
        assert got == sorted(got, key=lambda p: (dst[p[0]], p[0], p[1]))
        deg = np.bincount(dst[mask], minlength=n)
        assert len(got) == sum(f_of(int(d), include_self, ordered) for d in deg)

    run_property(name, compact_graphs, check)


@pytest.mark.parametrize("name", BACKENDS)
@pytest.mark.parametrize("include_self,ordered", POLICIES, ids=POLICY_IDS)
def test_static_equals_brute_force(name, include_self, ordered):
    b = Backend(name)

    def check(graph):
        n, k, dst, mask = graph
        q, kk, m = center_edge_pairs(b.asarray(dst), b.asarray(mask), n, include_self=include_self,
                                     ordered=ordered, static_nnei=k)
        assert to_numpy(q).shape == (n * f_of(k, include_self, ordered),)
        assert sorted(as_pairs(q, kk, m)) == brute_pairs(dst, mask, include_self, ordered)
        # shape-static: the index arrays depend on (n, k) only, never on the mask
        q0, k0, _ = center_edge_pairs(b.asarray(dst), b.asarray(np.zeros_like(mask)), n,
                                      include_self=include_self, ordered=ordered, static_nnei=k)
        np.testing.assert_array_equal(to_numpy(q0), to_numpy(q))
        np.testing.assert_array_equal(to_numpy(k0), to_numpy(kk))

    run_property(name, static_graphs, check)


@pytest.mark.parametrize("include_self,ordered", POLICIES, ids=POLICY_IDS)
def test_full_static_layout_lists_pairs_like_compact(backend, include_self, ordered):
    n, k = 4, 3
    dst = np.repeat(np.arange(n), k)
    mask = np.ones(n * k, bool)
    a = backend.asarray
    compact = center_edge_pairs(a(dst), a(mask), n, include_self=include_self, ordered=ordered)
    static = center_edge_pairs(a(dst), a(mask), n, include_self=include_self, ordered=ordered, static_nnei=k)
    assert as_pairs(*compact[:2]) == as_pairs(*static[:2])


def test_edge_cases(backend):
    a = backend.asarray
    empty_i, empty_b = a(np.zeros(0, np.int64)), a(np.zeros(0, bool))
    for n in (0, 3):
        q, k, m = center_edge_pairs(empty_i, empty_b, n)
        assert to_numpy(q).shape == to_numpy(k).shape == to_numpy(m).shape == (0,)
    # a center with one edge, one with none, one with a masked edge only, unsorted dst
    dst = np.array([2, 0, 2, 3])
    mask = np.array([True, True, True, False])
    q, k, _ = center_edge_pairs(a(dst), a(mask), 4)
    assert as_pairs(q, k) == [(1, 1), (0, 0), (0, 2), (2, 0), (2, 2)]
    q, k, _ = center_edge_pairs(a(dst), a(mask), 4, include_self=False, ordered=False)
    assert as_pairs(q, k) == [(0, 2)]
    q, k, m = center_edge_pairs(a(np.zeros(0, np.int64)), a(np.zeros(0, bool)), 0, static_nnei=2)
    assert to_numpy(q).shape == (0,)


def test_pair_pattern_counts():
    for k in range(1, 7):
        for (s, o) in POLICIES:
            m, n = pair_pattern(k, include_self=s, ordered=o)
            assert len(m) == f_of(k, s, o)
            assert len(set(zip(m, n))) == len(m)


def test_static_form_under_jax_jit():
    jax = pytest.importorskip("jax")
    b = Backend("jax")
    rng = np.random.default_rng(0)
    n, k = 5, 4
    mask = rng.random(n * k) < 0.6
    dst = np.repeat(np.arange(n), k)
    f = jax.jit(lambda d, m: center_edge_pairs(d, m, n, static_nnei=k, include_self=False))
    got = f(b.asarray(dst), b.asarray(mask))
    want = center_edge_pairs(b.asarray(dst), b.asarray(mask), n, static_nnei=k, include_self=False)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


@pytest.mark.parametrize("include_self,ordered", POLICIES, ids=POLICY_IDS)
def test_compact_form_under_torch_export(include_self, ordered):
    """Exported once with dynamic E and N (unbacked pair count), the program
    equals eager on graphs of other sizes, including ones with no real edge."""
    torch = pytest.importorskip("torch")

    class Pairs(torch.nn.Module):
        def forward(self, dst, edge_mask, nodes):
            return center_edge_pairs(dst, edge_mask, nodes.shape[0], include_self=include_self, ordered=ordered)

    rng = np.random.default_rng(1)

    def graph(n, e, p=0.8):
        return (torch.from_numpy(rng.integers(0, n, e)), torch.from_numpy(rng.random(e) < p), torch.zeros(n))

    E, N = torch.export.Dim("E", min=2), torch.export.Dim("N", min=2)
    shapes = {"dst": {0: E}, "edge_mask": {0: E}, "nodes": {0: N}}
    ep = torch.export.export(Pairs(), graph(6, 20), dynamic_shapes=shapes, strict=False)
    run = ep.module()
    for n, e, p in [(3, 7, 0.8), (40, 500, 0.8), (9, 2, 0.5), (5, 12, 0.0), (2, 30, 1.0)]:
        args = graph(n, e, p)
        for got, want in zip(run(*args), Pairs()(*args)):
            assert torch.equal(got, want)


@pytest.mark.parametrize("static", [None, 3])
def test_bad_input_errors_name_the_argument(backend, static):
    a = backend.asarray
    dst, mask = a(np.array([0, 0, 0, 1, 1, 1])), a(np.ones(6, bool))
    with pytest.raises(TypeError, match="dst must have an integer dtype"):
        center_edge_pairs(a(np.zeros(6)), mask, 2, static_nnei=static)
    with pytest.raises(ValueError, match=r"dst out of range: values span \[0, 1\] but must lie in \[0, 1\)"):
        center_edge_pairs(dst, mask, 1, static_nnei=static)
    with pytest.raises(ValueError, match="edge_mask must have shape"):
        center_edge_pairs(dst, a(np.ones(5, bool)), 2, static_nnei=static)
    with pytest.raises(TypeError, match="edge_mask must have dtype bool"):
        center_edge_pairs(dst, a(np.ones(6, np.int64)), 2, static_nnei=static)
    with pytest.raises(ValueError, match="num_centers must be >= 0"):
        center_edge_pairs(dst, mask, -2, static_nnei=static)


def test_bad_static_layout(backend):
    a = backend.asarray
    dst, mask = a(np.array([0, 0, 0, 1, 1, 1])), a(np.ones(6, bool))
    with pytest.raises(ValueError, match=r"static layout needs E == num_centers \* static_nnei = 2 \* 2"):
        center_edge_pairs(dst, mask, 2, static_nnei=2)
    with pytest.raises(ValueError, match="static_nnei must be >= 1"):
        center_edge_pairs(a(np.zeros(0, np.int64)), a(np.zeros(0, bool)), 2, static_nnei=0)
    with pytest.raises(ValueError, match="dst does not match the static layout"):
        center_edge_pairs(a(np.array([0, 0, 1, 1, 1, 1])), mask, 2, static_nnei=3)
    # a masked slot may point anywhere in range
    q, _, m = center_edge_pairs(a(np.array([0, 0, 0, 1, 1, 0])), a(np.array([1, 1, 1, 1, 1, 0], bool)), 2,
                                static_nnei=3)
    assert int(to_numpy(m).sum()) == 3 * 3 + 2 * 2


def _pair_case(seed=0):
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, 5, 23), rng.integers(0, 6, 23)
    return rng, i, j


def test_pair_products_equal_loops_on_every_backend():
    """pair_dot and pair_spread against plain Python loops over the pairs, numpy, torch and jax."""
    import graphdesc._backend as B

    rng, i, j = _pair_case()
    a, b, w = rng.normal(size=(5, 4)), rng.normal(size=(6, 4)), rng.normal(size=23)
    dot = np.array([a[p] @ b[q] for p, q in zip(i, j)])
    spread = np.zeros((5, 4))
    for p, (r, q) in enumerate(zip(i, j)):
        spread[r] += w[p] * b[q]
    for name in BACKENDS:
        backend = Backend(name)
        ai, aj = backend.asarray(i), backend.asarray(j)
        got_dot = B.pair_dot(backend.asarray(a), backend.asarray(b), ai, aj)
        got_spread = B.pair_spread(backend.asarray(w), backend.asarray(b), ai, aj, 5)
        np.testing.assert_allclose(to_numpy(got_dot), dot, rtol=0, atol=1e-14, err_msg=name)
        np.testing.assert_allclose(to_numpy(got_spread), spread, rtol=0, atol=1e-14, err_msg=name)


def test_pair_products_have_exact_first_and_second_derivatives():
    """torch's autograd functions (they save only their inputs): gradcheck and gradgradcheck in float64."""
    torch = pytest.importorskip("torch", reason="the autograd functions are torch's")
    import graphdesc._backend as B

    rng, i, j = _pair_case(1)
    i, j = torch.as_tensor(i), torch.as_tensor(j)

    def leaf(*shape):
        return torch.as_tensor(rng.normal(size=shape)).requires_grad_(True)

    a, b, w = leaf(5, 4), leaf(6, 4), leaf(23)
    dot = lambda a, b: B.pair_dot(a, b, i, j)  # noqa: E731
    spread = lambda w, b: B.pair_spread(w, b, i, j, 5)  # noqa: E731
    assert "pair_dot" in type(dot(a, b).grad_fn).__name__, type(dot(a, b).grad_fn).__name__
    for fn, args in ((dot, (a, b)), (spread, (w, b))):
        assert torch.autograd.gradcheck(fn, args)
        assert torch.autograd.gradgradcheck(fn, args)


def test_pair_operators_in_chunks_equal_the_whole(monkeypatch):
    """torch's operators gather at most PAIR_CHUNK_BYTES of rows at a time: cut into chunks of 2 pairs, the
    products, their gradients and second derivatives equal the plain formulas to 1e-14."""
    torch = pytest.importorskip("torch", reason="the chunked operators are torch's")
    import graphdesc._backend as B

    rng, i, j = _pair_case(2)
    i, j = torch.as_tensor(i), torch.as_tensor(j)
    a, b, w = (torch.as_tensor(rng.normal(size=s)).requires_grad_(True) for s in ((5, 4), (6, 4), (23,)))
    monkeypatch.setattr(B, "PAIR_CHUNK_BYTES", 2 * 4 * 8)
    assert len(B._pair_chunks(23, a)) == 12

    def products(dot, spread):
        out = torch.cat([dot(a, b, i, j), spread(w, b, i, j, 5).flatten()])
        first = torch.autograd.grad(out.square().sum(), (a, b, w), create_graph=True)
        second = torch.autograd.grad(sum(g.sin().sum() for g in first), (a, b, w))
        return [out, *first, *second]

    for got, want in zip(products(B.pair_dot, B.pair_spread), products(B._pair_dot, B._pair_spread)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-14)


def test_pair_path_saves_no_pair_rows():
    """The pair path's autograd graph (forces with create_graph, as in training) saves no (P, attn) tensor:
    every saved tensor is smaller than the pairs' gathered rows (the plain gather-multiply did save them)."""
    torch = pytest.importorskip("torch", reason="what autograd saves is torch's")
    from dpa1_cases import make_config, random_params
    from test_attention_layouts import _torch_graph, _uneven_system

    import graphdesc._backend as B
    from graphdesc.descriptor import cast_params, dpa1_graph

    config = make_config("default")
    params = cast_params(random_params(config), torch.zeros(1, dtype=torch.float64))
    graph, atype = _uneven_system(config.ntypes)
    g, a = _torch_graph(graph), torch.as_tensor(atype)
    deg = np.bincount(graph.dst[graph.edge_mask], minlength=len(atype))
    pair_rows = int((deg ** 2).sum()) * config.attn

    def largest_saved(pair_dot, pair_spread):
        saved = []
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(B, "pair_dot", pair_dot)
            mp.setattr(B, "pair_spread", pair_spread)
            with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
                vec = g.edge_vec.clone().requires_grad_(True)
                d = dpa1_graph(params, config, g.replace(edge_vec=vec), a, attention="pairs")[0]
                torch.autograd.grad(d.sum(), vec, create_graph=True)
        return max(saved)

    assert largest_saved(B.pair_dot, B.pair_spread) < pair_rows
    assert largest_saved(B._pair_dot, B._pair_spread) >= pair_rows  # the check can fail
