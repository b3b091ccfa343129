"""DPA1 properties: invariances, smoothness at rcut, gradients, bad input, the torch and jax shells."""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import pytest
from dpa1_cases import SEL, convert, make_config, make_system, random_params
from helpers import Backend, to_numpy

from graphdesc.descriptor import DPA1Config, cast_params, dpa1_graph, params_to_deepmd
from graphdesc.graph import build_graph, to_static

TOL = 1e-12


def _rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


@pytest.mark.parametrize("system", ["triclinic", "cluster"])
@pytest.mark.parametrize("config_name", ["default", "rough_raw_3types"])
def test_rotation_translation_permutation(config_name, system):
    config = make_config(config_name)
    params = random_params(config, isotropic=True)
    _, atype, frames = make_system(system, config.ntypes)
    pos, cell, pbc = frames[0]

    def run(p, c, t):
        return dpa1_graph(params, config, build_graph(p, config.rcut, cell=c, pbc=pbc), t)

    d0, r0 = run(pos, cell, atype)
    rot = _rotation(1)
    d, r = run(pos @ rot.T, None if cell is None else cell @ rot.T, atype)
    np.testing.assert_allclose(d, d0, rtol=0, atol=TOL)
    np.testing.assert_allclose(r, r0 @ rot.T, rtol=0, atol=TOL)  # rot_mat is equivariant
    d, r = run(pos + np.array([0.37, -1.21, 2.05]), cell, atype)
    np.testing.assert_allclose(d, d0, rtol=0, atol=TOL)
    perm = np.random.default_rng(2).permutation(len(atype))
    d, r = run(pos[perm], cell, atype[perm])
    np.testing.assert_allclose(d, d0[perm], rtol=0, atol=TOL)
    np.testing.assert_allclose(r, r0[perm], rtol=0, atol=TOL)


def crossing_steps(config, params, *, h=5e-6, n=200):
    """Descriptor changes between consecutive samples as atom 4 moves across rcut from atom 0.

    Returns ``(step_changes (2n,), index of the step that crosses rcut)``.
    """
    base = np.array([[0, 0, 0], [1.5, 0.3, 0.1], [-0.4, 1.7, 0.2], [0.3, -0.2, 1.9], [0, 0, 0]], float)
    atype = np.array([0, 1, 2, 1, 1]) % config.ntypes
    direction = np.array([0.6, 0.7, 0.38]) / np.linalg.norm([0.6, 0.7, 0.38])
    xs = config.rcut + h * (np.arange(-n, n + 1) + 0.5)
    out = []
    for x in xs:
        pos = base.copy()
        pos[4] = x * direction
        out.append(dpa1_graph(params, config, build_graph(pos, config.rcut), atype)[0])
    out = np.array(out)
    assert np.all(np.isfinite(out))
    return np.abs(np.diff(out, axis=0)).max(axis=(1, 2)), n - 1  # step n-1 -> n crosses


@pytest.mark.parametrize("sel", [SEL, 3], ids=["sel_not_binding", "deg_above_sel"])
@pytest.mark.parametrize("config_name", ["default", "raw_qkv_temp_oneside", "no_attn_1type"])
def test_smooth_attention_is_continuous_at_rcut(config_name, sel):
    """Smooth models: the step across rcut is no larger than the steps around it (random davg)."""
    config = make_config(config_name, sel=sel)
    steps, cross = crossing_steps(config, random_params(config))
    typical = np.median(steps)
    assert steps[cross] <= 3 * typical, (steps[cross], typical)


@pytest.mark.parametrize("config_name", ["rough_nodotr_3types", "rough_twoside_1layer"])
def test_rough_attention_jumps_at_rcut(config_name):
    """Without smooth_type_embedding the other neighbors' weights jump (DPA1_MATH S10)."""
    config = make_config(config_name)
    steps, cross = crossing_steps(config, random_params(config))
    assert steps[cross] > 100 * np.median(steps)


def test_deepmd_compat_jumps_when_types_differ():
    """DeePMD's empty-slot rows carry the first atom's type: a neighbor of another type leaving jumps."""
    config = make_config("default")
    params = random_params(config)
    steps, cross = crossing_steps(config, params)
    base = np.array([[0, 0, 0], [1.5, 0.3, 0.1], [-0.4, 1.7, 0.2], [0.3, -0.2, 1.9]], float)
    atype = np.array([0, 1, 0, 1, 1])
    outs = []
    for x in (config.rcut - 1e-9, config.rcut + 1e-9):
        pos = np.concatenate([base, [[x, 0, 0]]])
        outs.append(dpa1_graph(params, config, build_graph(pos, config.rcut), atype, deepmd_compat=True)[0])
    assert np.abs(outs[1] - outs[0]).max() > 1e3 * np.median(steps)


def _torch_case(config_name="default", system="cluster"):
    torch = pytest.importorskip("torch")
    config = make_config(config_name)
    params = cast_params(random_params(config), torch.zeros(1, dtype=torch.float64))
    graph, atype, _ = make_system(system, config.ntypes)
    tb = Backend("torch")
    return torch, config, params, convert(graph, tb), tb.asarray(atype)


def test_gradcheck_wrt_edge_vec():
    torch, config, params, graph, atype = _torch_case()
    vec = graph.edge_vec.clone().requires_grad_(True)

    def f(v):
        d, r = dpa1_graph(params, config, graph.replace(edge_vec=v), atype)
        return d, r

    assert torch.autograd.gradcheck(f, (vec,), eps=1e-6, atol=1e-8, rtol=1e-6)


def test_second_order_force_loss_reaches_every_parameter():
    torch, config, params, graph, atype = _torch_case()
    leaves = [p.requires_grad_(True) for p in _leaves(params) if p is not params["davg"] and p is not params["dstd"]]
    vec = graph.edge_vec.clone().requires_grad_(True)
    d, _ = dpa1_graph(params, config, graph.replace(edge_vec=vec), atype)
    weights = torch.linspace(-1, 1, d.shape[1], dtype=d.dtype)
    energy = (torch.tanh(d) * weights).sum()
    (force,) = torch.autograd.grad(energy, vec, create_graph=True)
    grads = torch.autograd.grad((force**2).sum(), leaves)
    assert all(bool(torch.all(torch.isfinite(g))) for g in grads)
    assert all(float(g.abs().max()) > 0 for g in grads), "a parameter gets no second-order gradient"


def _leaves(tree):
    from graphdesc.descriptor.params import tree_leaves

    return [v for _, v in tree_leaves(tree)]


def test_fused_affine_and_layer_norm_equal_the_formulas(backend):
    """``B.affine`` and ``B.layer_norm`` (torch: addmm and the fused LayerNorm kernel) equal plain numpy
    formulas at 1e-12 on every backend; in torch also in first and second derivatives (gradgradcheck)."""
    import graphdesc._backend as B

    rng = np.random.default_rng(3)
    x, w, b = rng.normal(size=(4, 5, 6)), rng.normal(size=(6, 7)), rng.normal(size=7)
    ln_w, ln_b, eps = rng.normal(size=6), rng.normal(size=6), 1e-5
    mean = x.mean(-1, keepdims=True)
    expected_ln = (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps) * ln_w + ln_b
    xb, wb, bb, lw, lb = (backend.asarray(a) for a in (x, w, b, ln_w, ln_b))
    np.testing.assert_allclose(to_numpy(B.affine(xb, wb, bb)), np.einsum("abi,ij->abj", x, w) + b,
                               rtol=0, atol=TOL)
    np.testing.assert_allclose(to_numpy(B.affine(xb, wb)), np.einsum("abi,ij->abj", x, w), rtol=0, atol=TOL)
    np.testing.assert_allclose(to_numpy(B.layer_norm(xb, lw, lb, eps)), expected_ln, rtol=0, atol=TOL)
    if backend.name == "torch":
        import torch

        args = [torch.tensor(a, requires_grad=True) for a in (x, ln_w, ln_b)]
        assert torch.autograd.gradgradcheck(lambda *t: B.layer_norm(*t, eps), args)
        args = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
        assert torch.autograd.gradgradcheck(lambda *t: torch.tanh(B.affine(*t)), args)


def test_unit_rows_equals_the_formula(backend):
    """``B.unit_rows`` equals ``scale * x / |x|`` in numpy at 1e-12, masked rows divided by 1, with a float and
    a per-row scale. In torch, within ``B.first_order`` (one autograd node with a hand-written backward) as
    outside it, also in first derivatives w.r.t. ``x`` and the scale (gradcheck: the node's own backward) and
    second ones (gradgradcheck: its backward differentiated, which falls back to the formula's graph)."""
    import graphdesc._backend as B

    rng = np.random.default_rng(5)
    x, scale = rng.normal(size=(3, 4, 6)), rng.normal(size=(3, 4, 1))
    mask = rng.random((3, 4)) > 0.3
    mask[0, 0], mask[0, 1] = True, False
    norm = np.where(mask[..., None], np.linalg.norm(x, axis=-1, keepdims=True), 1.0)
    xb, sb, mb = backend.asarray(x), backend.asarray(scale), backend.asarray(mask)
    for context in (contextlib.nullcontext, B.first_order):
        with context():
            np.testing.assert_allclose(to_numpy(B.unit_rows(xb, mb, 0.7)), 0.7 * x / norm, rtol=0, atol=TOL)
            np.testing.assert_allclose(to_numpy(B.unit_rows(xb, mb, sb)), scale * x / norm, rtol=0, atol=TOL)
    if backend.name == "torch":
        import torch

        m = torch.tensor(mask)
        args = [torch.tensor(a, requires_grad=True) for a in (x, scale)]
        with B.first_order():
            assert B.unit_rows(*args[:1], m, 0.7).grad_fn.name() == "UnitRowsBackward"
            f = lambda xt, st: B.unit_rows(xt, m, st) ** 2  # noqa: E731
            assert torch.autograd.gradcheck(f, args)
            assert torch.autograd.gradgradcheck(f, args)
            assert torch.autograd.gradgradcheck(lambda xt: torch.sin(B.unit_rows(xt, m, 0.7)), args[:1])


def _grad_fns(t):
    """The names of every node in ``t``'s autograd graph."""
    seen, stack = set(), [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is not None and fn not in seen:
            seen.add(fn)
            stack.extend(f for f, _ in fn.next_functions)
    return {fn.name() for fn in seen}


@pytest.mark.parametrize("count", [0, 3])
def test_folded_attention_node_equals_its_formula(count):
    """The eager-torch node of the folded attention core equals its plain-op formula at 1e-12 (masked rows
    included), and so do its first derivatives w.r.t. every input (gradcheck: the node's hand-written
    backward) and its second ones (gradgradcheck: the formula's graph, re-derived when the backward is
    differentiated), with and without the phantoms' key row (``count`` 3 and 0)."""
    torch = pytest.importorskip("torch")
    from graphdesc._torch_attention import FoldedAttention, formula

    gen = torch.Generator().manual_seed(count)
    c, w, h = 3, 5, 4
    q, k, v = (torch.randn(c, w, h, dtype=torch.float64, generator=gen) for _ in range(3))
    valid = torch.rand(c, w, generator=gen) > 0.3
    valid[0, 0], valid[0, 1] = True, False
    sw = torch.where(valid[..., None], torch.rand(c, w, 1, dtype=torch.float64, generator=gen), 0.0)
    post = torch.randn(c, w, w, dtype=torch.float64, generator=gen)
    args = [x.requires_grad_(True) for x in (q, k, v, sw, post)]
    np.testing.assert_allclose(to_numpy(FoldedAttention.apply(*args, valid, 0.7, count)),
                               to_numpy(formula(*args, valid, 0.7, count)), rtol=0, atol=TOL)
    node = lambda *a: FoldedAttention.apply(*a, valid, 0.7, count)  # noqa: E731
    assert torch.autograd.gradcheck(node, args)
    assert torch.autograd.gradgradcheck(node, args)


@pytest.mark.parametrize("name", ["default", "temp_nodotr_gelu", "tebd_bias_noconcat"])
@pytest.mark.parametrize("sel", ["above", "equal"])
def test_first_order_descriptor_gradient_equals_the_formula(name, sel):
    """Within ``B.first_order`` the block stage runs the hand-written nodes (the folded attention core, checked
    to be in the autograd graph); the descriptor and its gradient w.r.t. ``edge_vec`` equal the plain formula's
    at 1e-12, with phantoms beyond the block (``sel`` above the largest degree) and without (``sel`` equal)."""
    import graphdesc._backend as B

    torch, _, _, graph, atype = _torch_case(name)
    deg = np.bincount(to_numpy(graph.dst), minlength=atype.shape[0]).max()
    config = make_config(name, sel=int(deg) if sel == "equal" else SEL)
    params = cast_params(random_params(config), torch.zeros(1, dtype=torch.float64))
    weights = torch.linspace(-1, 1, config.dim_out, dtype=torch.float64)
    results = []
    for context in (contextlib.nullcontext, B.first_order):
        vec = graph.edge_vec.clone().requires_grad_(True)
        with context():
            d, _ = dpa1_graph(params, config, graph.replace(edge_vec=vec), atype, attention="blocks")
            energy = (torch.tanh(d) * weights).sum()
            assert ("FoldedAttentionBackward" in _grad_fns(energy)) == (context is B.first_order)
            (g,) = torch.autograd.grad(energy, vec)
        results.append((to_numpy(d), to_numpy(g)))
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=0, atol=TOL)


def test_poisoned_padding_gives_finite_zero_gradients():
    torch, config, params, graph, atype = _torch_case(system="triclinic")
    static = to_static(graph, SEL)
    vec = static.edge_vec.clone()
    vec[~static.edge_mask] = float("nan")
    vec.requires_grad_(True)
    d, r = dpa1_graph(params, config, static.replace(edge_vec=vec), atype, static=True)
    (g,) = torch.autograd.grad(d.sum() + r.sum(), vec)
    assert bool(torch.all(torch.isfinite(g)))
    assert bool(torch.all(g[~static.edge_mask] == 0)) and float(g[static.edge_mask].abs().max()) > 0


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("change, match", [
    (dict(rcut_smth=4.0), "rcut_smth must satisfy"),
    (dict(rcut=-1.0), "rcut must be > 0"),
    (dict(sel=[10, 20]), "sel: DPA1 mixes types"),
    (dict(sel=0), "sel must be >= 1"),
    (dict(ntypes=0), "ntypes must be >= 1"),
    (dict(neuron=[]), "neuron must be a non-empty list"),
    (dict(neuron=[4, 0]), r"neuron\[1\] must be >= 1"),
    (dict(axis_neuron=100), "axis_neuron .* must be <= neuron"),
    (dict(tebd_input_mode="strip"), "'strip' is not implemented"),
    (dict(attn_mask=True), "attn_mask=True is not supported"),
    (dict(precision="float16"), "precision must be"),
    (dict(activation_function="swish9"), "activation_function must be one of"),
    (dict(temperature=float("nan")), "temperature must be finite"),
    (dict(normalize="yes"), "normalize must be a bool"),
    (dict(type_map=["Cu"]), "type_map has 1 names but ntypes = 2"),
    (dict(ln_eps=0.0), "ln_eps must be > 0"),
])
def test_bad_config(change, match):
    base = dict(rcut=4.0, rcut_smth=0.5, sel=20, ntypes=2, neuron=[4, 8], axis_neuron=4)
    with pytest.raises(ValueError, match=match):
        DPA1Config(**{**base, **change})


def test_bad_inputs(backend):
    config = make_config("default")
    params = cast_params(random_params(config), backend.asarray(np.zeros(1)))
    graph, atype, _ = make_system("cluster", 2)
    g, a = convert(graph, backend), backend.asarray(atype)
    with pytest.raises(ValueError, match="atype must be < ntypes = 2"):
        dpa1_graph(params, config, g, backend.asarray(np.where(atype == 0, 2, atype)))
    with pytest.raises(ValueError, match="atype must be >= 0"):
        dpa1_graph(params, config, g, backend.asarray(atype - 1))
    with pytest.raises(ValueError, match="atype has 9 entries but the graph has sum.n_node. = 10"):
        dpa1_graph(params, config, g, backend.asarray(atype[:-1]))
    with pytest.raises(TypeError, match="atype must be a 1-D integer array"):
        dpa1_graph(params, config, g, backend.asarray(atype.astype(float)))
    with pytest.raises(TypeError, match="edge_vec has dtype .*float32 but the model's parameters are .*float64"):
        dpa1_graph(params, config, convert(graph.replace(edge_vec=graph.edge_vec.astype(np.float32)), backend), a)
    bad = np.array(graph.edge_vec)
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="edge_vec holds NaN or inf on real edge 3"):
        dpa1_graph(params, config, convert(graph.replace(edge_vec=bad), backend), a)
    with pytest.raises(ValueError, match="static layout needs E = N \\* sel"):
        dpa1_graph(params, config, g, a, static=True)
    with pytest.raises(TypeError, match="graph must be a NeighborGraph"):
        dpa1_graph(params, config, (g.edge_index, g.edge_vec), a)
    with pytest.raises(TypeError, match="config must be a DPA1Config"):
        dpa1_graph(params, config.to_dict(), g, a)


# --------------------------------------------------------------------------- shells
def test_torch_module():
    torch = pytest.importorskip("torch")
    from graphdesc.torch import DPA1Descriptor

    config = make_config("default", trainable_ln=False)
    params = random_params(config)
    graph, atype, _ = make_system("triclinic", 2)
    ref = dpa1_graph(params, config, graph, atype)[0]
    module = DPA1Descriptor(config, params)
    tg, ta = convert(graph, Backend("torch")), torch.from_numpy(atype)
    np.testing.assert_allclose(module(tg, ta)[0].detach().numpy(), ref, rtol=0, atol=TOL)
    frozen = {n for n, p in module.named_parameters() if not p.requires_grad}
    assert frozen == {f"attention__{i}__ln_{w}" for i in range(2) for w in "wb"}
    assert {n for n, _ in module.named_buffers()} == {"davg", "dstd"}

    restored = DPA1Descriptor(config, seed=123)
    restored.load_state_dict(module.state_dict())
    np.testing.assert_array_equal(restored(tg, ta)[0].detach().numpy(), module(tg, ta)[0].detach().numpy())
    again = DPA1Descriptor.from_deepmd(module.to_deepmd())
    np.testing.assert_array_equal(again(tg, ta)[0].detach().numpy(), module(tg, ta)[0].detach().numpy())

    m32 = DPA1Descriptor(config, params).to(torch.float32)
    out32 = m32(tg.replace(edge_vec=tg.edge_vec.float()), ta)[0]
    assert out32.dtype == torch.float32 and m32.to_deepmd()["precision"] == "float32"
    np.testing.assert_allclose(out32.detach().numpy(), ref, rtol=0, atol=2e-5 * np.abs(ref).max())
    with pytest.raises(TypeError, match="edge_vec has dtype torch.float64"):
        m32(tg, ta)

    module.compute_stats([(graph, atype)])
    assert float(module.davg[0, 0]) > 0 and torch.all(module.davg[:, 1:] == 0)
    with pytest.raises(ValueError, match=r"davg must have shape \(2, 4\)"):
        module.set_stats(np.zeros((3, 4)), np.ones((2, 4)))


def test_jax_jit_on_static_layout():
    pytest.importorskip("jax")
    import jax
    import jax.numpy as jnp

    from graphdesc.jax import dpa1_jit

    config = make_config("default")
    params = random_params(config)
    jb = Backend("jax")
    f = dpa1_jit(config, deepmd_compat=True)
    p = cast_params(params, jnp.zeros(1))
    for seed in (0, 1):  # two geometries with the same N: one compilation
        graph, atype, _ = make_system("triclinic", 2, seed=seed)
        ref = dpa1_graph(params, config, graph, atype, deepmd_compat=True)
        out = f(p, convert(to_static(graph, SEL), jb), jnp.asarray(atype))
        np.testing.assert_allclose(np.asarray(out[0]), ref[0], rtol=0, atol=TOL)
        np.testing.assert_allclose(np.asarray(out[1]), ref[1], rtol=0, atol=TOL)
    assert f._cache_size() == 1

    static = convert(to_static(graph, SEL), jb)

    def energy(vec):
        return jnp.sum(jnp.tanh(f(p, static.replace(edge_vec=vec), jnp.asarray(atype))[0]))

    grad = jax.grad(energy)(static.edge_vec)
    assert bool(jnp.all(jnp.isfinite(grad))) and bool(jnp.all(grad[~static.edge_mask] == 0))


def test_params_to_deepmd_config_keys_round_trip():
    config = make_config("tebd_bias_noconcat", type_map=["Cu", "Al"])
    d = params_to_deepmd(config, random_params(config))
    assert d["sel"] == [SEL] and d["type_map"] == ["Cu", "Al"] and d["@variables"]["davg"].shape == (2, SEL, 4)
    assert dataclasses.replace(config) == config


def test_torch_export_with_dynamic_sizes():
    """The compact graph path exports (dynamic E and N) and matches eager on other graphs."""
    torch = pytest.importorskip("torch")
    from graphdesc.graph import NeighborGraph
    from graphdesc.torch import DPA1Descriptor

    config = make_config("default")
    module = DPA1Descriptor(config, random_params(config))

    class Flat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.descriptor = module

        def forward(self, atype, edge_index, edge_vec, edge_mask, n_node):
            return self.descriptor(NeighborGraph(edge_index, edge_vec, edge_mask, n_node), atype)

    tb = Backend("torch")
    graph, atype, _ = make_system("triclinic", 2)
    g = convert(graph, tb)
    e, n = torch.export.Dim("E", min=2), torch.export.Dim("N", min=2)
    program = torch.export.export(
        Flat(), (tb.asarray(atype), g.edge_index, g.edge_vec, g.edge_mask, g.n_node),
        dynamic_shapes={"atype": {0: n}, "edge_index": {1: e}, "edge_vec": {0: e}, "edge_mask": {0: e},
                        "n_node": None}, strict=False).module()
    for system in ("cluster", "small_cell", "lonely_atom"):
        graph, atype, _ = make_system(system, 2)
        g, a = convert(graph, tb), tb.asarray(atype)
        got, want = program(a, g.edge_index, g.edge_vec, g.edge_mask, g.n_node), module(g, a)
        for x, y in zip(got, want, strict=True):
            np.testing.assert_allclose(x.detach().numpy(), y.detach().numpy(), rtol=0, atol=TOL)
