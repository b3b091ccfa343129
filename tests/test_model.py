"""The DPA1 energy model: DeePMD-kit parity, forces and virials, backends, checkpoints, bad input."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from dpa1_cases import RCUT, convert, make_config, make_system, random_params
from helpers import Backend, to_numpy

from graphdesc.graph import build_graph, to_static
from graphdesc.model import (
    EnergyConfig,
    atom_energy,
    frame_energy,
    init_model_params,
    load_model,
    model_from_deepmd,
    save_model,
)

torch = pytest.importorskip("torch")
from graphdesc.torch import EnergyModel  # noqa: E402

TOL = 1e-12
FIT = (16, 16)


def make_model_params(config: EnergyConfig, seed=0) -> dict:
    """Random descriptor statistics/LayerNorm (see dpa1_cases) and a random energy bias."""
    p = init_model_params(config, seed)
    p["descriptor"] = random_params(config.descriptor, seed)
    rng = np.random.default_rng(seed + 7)
    p["fitting"]["bias_atom_e"] = rng.normal(0, 1, config.ntypes)
    return p


def energy_config(name="default", **kw) -> EnergyConfig:
    return EnergyConfig(make_config(name), **{"neuron": FIT, **kw})


def periodic(n=20, seed=0, ntypes=2, scale=11.0):
    rng = np.random.default_rng(seed)
    cell = np.diag([1.0, 1.1, 0.9]) * (n * scale) ** (1 / 3) + rng.uniform(-0.5, 0.5, (3, 3)) * (1 - np.eye(3))
    pos = rng.uniform(0, 1, (n, 3)) @ cell
    return pos, cell, rng.integers(0, ntypes, n)


def torch_outputs(model, pos, cell, atype, pbc=True):
    g = build_graph(torch.as_tensor(pos), RCUT, cell=None if cell is None else torch.as_tensor(cell), pbc=pbc)
    return model.eval()(g, torch.as_tensor(atype))


# -- DeePMD-kit ---------------------------------------------------------------------------------------------
def deepmd_energy_model(mixed_types: bool, seed=0):
    """A DeePMD-kit EnergyModel (dpmodel) with random statistics, biases and LayerNorm weights."""
    from deepmd.dpmodel.model.model import get_model

    model = get_model({
        "type_map": ["Cu", "Al"],
        "descriptor": {"type": "se_atten", "sel": 60, "rcut": RCUT, "rcut_smth": 1.0, "neuron": [6, 12],
                       "axis_neuron": 4, "attn": 10, "attn_layer": 2, "tebd_dim": 4, "precision": "float64",
                       "seed": seed},
        "fitting_net": {"neuron": list(FIT), "precision": "float64", "seed": seed + 1, "mixed_types": mixed_types},
    })
    d = model.serialize()
    if not mixed_types:  # get_model forces DPA1's mixed_types; build DeePMD-kit's per-type fitting directly
        from deepmd.dpmodel.fitting import EnergyFittingNet

        fitting = EnergyFittingNet(2, d["fitting"]["dim_descrpt"], neuron=list(FIT), mixed_types=False,
                                   precision="float64", seed=seed + 1, type_map=["Cu", "Al"])
        d["fitting"] = fitting.serialize()
    rng = np.random.default_rng(seed)
    d["@variables"]["out_bias"] = rng.normal(size=d["@variables"]["out_bias"].shape)
    d["fitting"]["@variables"]["bias_atom_e"] = rng.normal(size=d["fitting"]["@variables"]["bias_atom_e"].shape)
    v = d["descriptor"]["@variables"]
    v["davg"] = np.repeat(rng.normal(0, 0.3, (2, 1, 4)), 60, axis=1)
    v["dstd"] = np.repeat(rng.uniform(0.3, 1.5, (2, 1, 4)), 60, axis=1)
    return type(model).deserialize(d), d


@pytest.mark.parametrize("mixed_types", [True, False])
def test_energy_matches_deepmd(mixed_types):
    pytest.importorskip("deepmd.dpmodel", reason="deepmd-kit is a test dependency (graphdesc[test])")
    ref_model, serialized = deepmd_energy_model(mixed_types, seed=3)
    config, params = model_from_deepmd(serialized)
    assert config.deepmd_compat and config.mixed_types == mixed_types
    assert len(params["fitting"]["nets"]) == (1 if mixed_types else 2)
    for seed in range(2):
        pos, cell, atype = periodic(20, seed)
        ref = ref_model.call(pos.reshape(1, -1), atype.reshape(1, -1), cell.reshape(1, 9))
        g = build_graph(pos, RCUT, cell=cell, pbc=True)
        ae = atom_energy(params, config, g, atype)
        np.testing.assert_allclose(ae, ref["atom_energy"].reshape(-1), rtol=0, atol=TOL)
        np.testing.assert_allclose(frame_energy(ae, g.n_node), ref["energy"].reshape(-1), rtol=0, atol=TOL * 20)
    # the torch module from the same dict gives the same energy; its forces are -dE/dx of
    # DeePMD-kit's own energy (central differences, h = 1e-5: truncation ~1e-10)
    model = EnergyModel.from_deepmd(serialized)
    pos, cell, atype = periodic(12, 5)
    out = torch_outputs(model, pos, cell, atype)

    def deepmd_e(p):
        return ref_model.call(p.reshape(1, -1), atype.reshape(1, -1), cell.reshape(1, 9))["energy"].item()

    h, fd = 1e-5, np.zeros_like(pos)
    for i in range(len(pos)):
        for k in range(3):
            step = np.zeros_like(pos)
            step[i, k] = h
            fd[i, k] = -(deepmd_e(pos + step) - deepmd_e(pos - step)) / (2 * h)
    assert abs(out["energy"].item() - deepmd_e(pos)) < TOL * 20
    np.testing.assert_allclose(to_numpy(out["force"]), fd, rtol=0, atol=1e-8)


def test_deepmd_refusals():
    pytest.importorskip("deepmd.dpmodel", reason="deepmd-kit is a test dependency (graphdesc[test])")
    _, d = deepmd_energy_model(True)
    for path, value, word in ((("fitting", "numb_fparam"), 2, "numb_fparam"),
                              (("fitting", "exclude_types"), [0], "exclude_types"),
                              (("atom_exclude_types",), [1], "atom_exclude_types"),
                              (("fitting", "dim_case_embd"), 3, "dim_case_embd")):
        bad = json.loads(json.dumps(d, default=lambda a: a.tolist()))
        node = bad
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        with pytest.raises(ValueError, match=word):
            model_from_deepmd(bad)
    with pytest.raises(ValueError, match="no DeePMD-kit energy model"):
        model_from_deepmd({"descriptor": d["descriptor"]})


# -- forces and virials -------------------------------------------------------------------------------------
def energy_of(model, pos, cell, atype, pbc=True):
    with torch.no_grad():
        g = build_graph(torch.as_tensor(pos), RCUT, cell=None if cell is None else torch.as_tensor(cell), pbc=pbc)
        return model.eval()(g, torch.as_tensor(atype), forces=False)["energy"].sum().item()


@pytest.mark.parametrize("mixed_types", [True, False])
def test_forces_and_virial_are_energy_derivatives(mixed_types):
    """force = -dE/dx and virial = -dE/d(strain), by central differences (h = 1e-5), float64."""
    config = energy_config(mixed_types=mixed_types)
    model = EnergyModel(config, make_model_params(config, 1))
    pos, cell, atype = periodic(10, 2)
    out = torch_outputs(model, pos, cell, atype)
    h = 1e-5
    fd = np.zeros_like(pos)
    for i in range(len(pos)):
        for k in range(3):
            step = np.zeros_like(pos)
            step[i, k] = h
            ep, em = energy_of(model, pos + step, cell, atype), energy_of(model, pos - step, cell, atype)
            fd[i, k] = -(ep - em) / (2 * h)
    force = to_numpy(out["force"])
    assert np.abs(force).max() > 1e-3  # a test of something
    np.testing.assert_allclose(force, fd, rtol=0, atol=1e-6 * np.abs(fd).max())
    w_fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = h
            ep = energy_of(model, pos @ (np.eye(3) + eps).T, cell @ (np.eye(3) + eps).T, atype)
            em = energy_of(model, pos @ (np.eye(3) - eps).T, cell @ (np.eye(3) - eps).T, atype)
            w_fd[a, b] = -(ep - em) / (2 * h)
    virial = to_numpy(out["virial"])[0]
    np.testing.assert_allclose(virial, w_fd, rtol=0, atol=1e-6 * np.abs(w_fd).max())
    np.testing.assert_allclose(to_numpy(out["atom_virial"]).sum(0), virial, rtol=0, atol=1e-12)
    np.testing.assert_allclose(to_numpy(out["force"]).sum(0), 0, atol=1e-12)


def test_ragged_batch_equals_frames_alone():
    config = energy_config()
    model = EnergyModel(config, make_model_params(config, 2)).eval()
    graph, atype, frames = make_system("ragged_batch", 2)
    tb = Backend("torch")
    out = model(convert(graph, tb), tb.asarray(atype))
    start = 0
    for f, (pos, cell, pbc) in enumerate(frames):
        n = len(pos)
        alone = torch_outputs(model, pos, cell, atype[start:start + n], pbc)
        for key in ("force", "atom_energy", "atom_virial"):
            np.testing.assert_allclose(to_numpy(out[key])[start:start + n], to_numpy(alone[key]), rtol=0, atol=TOL)
        for key in ("energy", "virial"):
            np.testing.assert_allclose(to_numpy(out[key])[f], to_numpy(alone[key])[0], rtol=0, atol=TOL * 10)
        start += n


@pytest.mark.parametrize("create_graph", [True, False], ids=["formula", "first_order_nodes"])
def test_masked_padding_never_matters(monkeypatch, create_graph):
    """Masked edges holding nan/inf and pointing anywhere change no output and no gradient: through the plain
    formula (``create_graph``, as a force loss) and through eval's first-order path, where the hand-written
    autograd node of the folded attention core runs (checked by counting its calls)."""
    import graphdesc._backend as B

    nodes, folded = [], B.folded_attention
    monkeypatch.setattr(B, "folded_attention", lambda *a: nodes.append(a) or folded(*a))
    config = energy_config()
    model = EnergyModel(config, make_model_params(config, 3))
    graph, atype, _ = make_system("triclinic", 2)
    tb = Backend("torch")
    g = convert(graph, tb)
    n = len(atype)
    pad = 6
    ei = torch.cat([g.edge_index, torch.tensor([[0, 3, n - 1, 2, 1, 0], [n - 1, 0, 2, 2, 5, 1]])], dim=1)
    vec = torch.cat([g.edge_vec, torch.tensor([[np.nan] * 3, [np.inf, 0, 0], [1e300, -np.inf, 1]] * 2)])
    mask = torch.cat([g.edge_mask, torch.zeros(pad, dtype=torch.bool)])
    padded = g.replace(edge_index=ei, edge_vec=vec, edge_mask=mask)
    a = tb.asarray(atype)
    ref = model(g, a, create_graph=create_graph)
    got = model(padded, a, create_graph=create_graph)
    static = to_static(g, config.descriptor.sel)
    assert int(torch.bincount(g.dst, minlength=n).max()) < config.descriptor.sel  # every center has empty slots
    poisoned = static.edge_vec.clone()
    empty = torch.nonzero(~static.edge_mask)[:, 0]
    poisoned[empty[0::3]], poisoned[empty[1::3]], poisoned[empty[2::3]] = np.nan, np.inf, -1e300
    compact_nodes = len(nodes)
    got_static = model(static.replace(edge_vec=poisoned), a, create_graph=create_graph, static=True)
    assert bool(compact_nodes) != create_graph and (len(nodes) > compact_nodes) != create_graph
    for out in (got, got_static):
        for key in ref:
            assert torch.isfinite(out[key]).all(), key
            np.testing.assert_allclose(to_numpy(out[key]), to_numpy(ref[key]), rtol=0, atol=TOL, err_msg=key)
    if not create_graph:
        return
    # second order: a force loss differentiates to the same, finite parameter gradients
    gr = torch.autograd.grad((ref["force"] ** 2).sum(), list(model.parameters()), allow_unused=True)
    gp = torch.autograd.grad((got["force"] ** 2).sum(), list(model.parameters()), allow_unused=True)
    for x, y in zip(gr, gp, strict=True):
        if x is not None:
            assert torch.isfinite(y).all()
            np.testing.assert_allclose(to_numpy(y), to_numpy(x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("mixed_types,deepmd_compat", [(True, False), (False, True)])
def test_piecewise_forces_equal_one_backward(monkeypatch, mixed_types, deepmd_compat):
    """Eval forces on CPU are taken one piece of centers at a time (first derivatives only):
    every output equals one backward through the whole model, for one center per piece
    and 3 per piece (the last short), with nan/inf planted in masked edges."""
    import graphdesc.descriptor.graph_path as gp
    import graphdesc.torch as gt

    config = energy_config(mixed_types=mixed_types, deepmd_compat=deepmd_compat)
    model = EnergyModel(config, make_model_params(config, 6)).eval()
    graph, atype, _ = make_system("ragged_batch", 2)
    g = convert(graph, Backend("torch"))
    n = len(atype)
    ei = torch.cat([torch.tensor([[0, n - 1], [n - 1, 0]]), g.edge_index], dim=1)
    vec = torch.cat([torch.tensor([[np.nan, 1.0, 2.0], [-np.inf, 0.0, 0.0]], dtype=torch.float64), g.edge_vec])
    g = g.replace(edge_index=ei, edge_vec=vec, edge_mask=torch.cat([torch.zeros(2, dtype=torch.bool), g.edge_mask]))
    a = torch.as_tensor(atype)
    calls = []
    piecewise = gt._piecewise_gradient
    monkeypatch.setattr(gt, "_piecewise_gradient", lambda *args: calls.append(1) or piecewise(*args))

    monkeypatch.setattr(gp, "CHUNK_BYTES", 2**40)
    model.attention = "blocks"
    whole = model(g, a)  # one piece: one autograd.grad of the total energy
    assert not calls
    width = int(torch.bincount(g.dst[g.edge_mask], minlength=n).max())
    row_bytes = width * max(width, config.descriptor.attn) * 8
    for attention in ("blocks", "buckets", "pairs"):  # each layout's pieces (buckets and pairs: ragged ones)
        model.attention = attention
        for chunk_bytes, pieces in ((1, n), (3 * row_bytes, -(-n // 3))):
            monkeypatch.setattr(gp, "CHUNK_BYTES", chunk_bytes)
            if attention == "blocks":
                assert len(gp._chunk_sizes(n, width, config.descriptor, g.edge_vec)) == pieces > 1
            got = model(g, a)
            assert len(calls) == 1 and not got["force"].requires_grad
            calls.clear()
            kept = model(g, a, create_graph=True)  # the chunked forward, one backward (the training path)
            assert not calls
            for key in whole:
                assert torch.isfinite(got[key]).all(), key
                np.testing.assert_allclose(to_numpy(got[key]), to_numpy(whole[key]), rtol=0, atol=TOL,
                                           err_msg=f"{attention} {key}")
                np.testing.assert_allclose(to_numpy(kept[key].detach()), to_numpy(whole[key]), rtol=0, atol=TOL,
                                           err_msg=f"{attention} {key}")


def test_backends_agree():
    """numpy (energy), torch and jax (energy, forces, virials; jax on the static layout) agree in float64."""
    pytest.importorskip("jax")
    from graphdesc.jax import energy_jit

    config = energy_config(mixed_types=False)
    params = make_model_params(config, 4)
    graph, atype, _ = make_system("ragged_batch", 2)
    ref = EnergyModel(config, params).eval()(convert(graph, Backend("torch")), Backend("torch").asarray(atype))
    e_np = frame_energy(atom_energy(params, config, graph, atype), graph.n_node)
    np.testing.assert_allclose(e_np, to_numpy(ref["energy"]), rtol=0, atol=TOL * 10)
    jb = Backend("jax")
    from graphdesc.descriptor import cast_params

    static = convert(to_static(graph, config.descriptor.sel), jb)
    out = energy_jit(config)(cast_params(params, jb.asarray(np.zeros(1))), static, jb.asarray(atype))
    for key in ref:
        np.testing.assert_allclose(to_numpy(out[key]), to_numpy(ref[key]), rtol=0, atol=TOL * 10, err_msg=key)


def test_float32_model_matches_float64():
    config = energy_config()
    params = make_model_params(config, 5)
    m64 = EnergyModel(config, params)
    m32 = EnergyModel(config, params).to(torch.float32)
    pos, cell, atype = periodic(16, 6)
    o64 = torch_outputs(m64, pos, cell, atype)
    g = build_graph(torch.as_tensor(pos, dtype=torch.float32), RCUT, cell=torch.as_tensor(cell, dtype=torch.float32),
                    pbc=True)
    o32 = m32.eval()(g, torch.as_tensor(atype))
    assert o32["force"].dtype == torch.float32
    np.testing.assert_allclose(to_numpy(o32["atom_energy"]), to_numpy(o64["atom_energy"]), rtol=0, atol=1e-4)
    np.testing.assert_allclose(to_numpy(o32["force"]), to_numpy(o64["force"]), rtol=0, atol=1e-4)


# -- checkpoints --------------------------------------------------------------------------------------------
def test_checkpoint_roundtrip(tmp_path):
    config = energy_config(mixed_types=False)
    model = EnergyModel(config, make_model_params(config, 6))
    path = model.save(tmp_path / "model", extra={"note": "x"})
    assert path.suffix == ".npz"
    again = EnergyModel.load(path)
    assert again.config == config
    for (ka, va), (kb, vb) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert [p.requires_grad for p in model.parameters()] == [p.requires_grad for p in again.parameters()]
    pos, cell, atype = periodic(8, 7)
    a, b = torch_outputs(model, pos, cell, atype), torch_outputs(again, pos, cell, atype)
    for key in a:
        assert torch.equal(a[key], b[key])
    assert load_model(path)[2] == {"note": "x"}
    # a float32 model saves as float32 and reloads as one
    p32 = EnergyModel(config).to(torch.float32).save(tmp_path / "m32.npz")
    assert EnergyModel.load(p32).config.precision == "float32"


def test_checkpoint_refuses_newer_and_foreign_files(tmp_path):
    config = energy_config()
    path = save_model(tmp_path / "m.npz", config, init_model_params(config))
    with np.load(path) as f:
        arrays = dict(f)
    header = json.loads(arrays["__graphdesc__"].tobytes())
    header["format_version"] = 99
    arrays["__graphdesc__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    newer = tmp_path / "newer.npz"
    np.savez(newer, **arrays)
    with pytest.raises(ValueError, match="format version 99.*Upgrade graphdesc"):
        load_model(newer)
    np.savez(tmp_path / "plain.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a graphdesc model checkpoint"):
        load_model(tmp_path / "plain.npz")
    (tmp_path / "junk.npz").write_text("hello")
    with pytest.raises(ValueError, match="not a graphdesc model checkpoint"):
        load_model(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.npz")


# -- configuration and bad input ----------------------------------------------------------------------------
def test_config_validation_and_dict_roundtrip():
    config = energy_config(mixed_types=False, activation_function="GELU")
    assert config.activation_function == "gelu"
    assert EnergyConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert hash(config) == hash(dataclasses.replace(config))
    with pytest.raises(ValueError, match="neuron"):
        energy_config(neuron=(16, 0))
    with pytest.raises(ValueError, match="activation_function"):
        energy_config(activation_function="swish2")
    with pytest.raises(ValueError, match="unknown EnergyConfig keys"):
        EnergyConfig.from_dict({**config.to_dict(), "bogus": 1})
    with pytest.raises(TypeError, match="descriptor"):
        EnergyConfig(descriptor={"rcut": 4})


def test_bad_input_is_named():
    config = energy_config()
    model = EnergyModel(config).eval()
    pos, cell, atype = periodic(8, 8)
    g = build_graph(torch.as_tensor(pos), RCUT, cell=torch.as_tensor(cell), pbc=True)
    with pytest.raises(ValueError, match="atype"):
        model(g, torch.as_tensor(np.full(8, 5)))
    with pytest.raises(TypeError, match="edge_vec has dtype"):
        model(g.replace(edge_vec=g.edge_vec.float()), torch.as_tensor(atype))
    bad = g.edge_vec.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="edge_vec"):
        model(g.replace(edge_vec=bad), torch.as_tensor(atype))
    with pytest.raises(TypeError, match="EnergyConfig"):
        EnergyModel(config.descriptor)
