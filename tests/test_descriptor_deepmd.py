"""DPA1 against DeePMD-kit 3.2 itself (``deepmd.dpmodel``, its numpy backend), float64 at 1e-12.

The DeePMD-kit side is built natively (``DescrptDPA1(...)``), given random
slot-uniform statistics and LayerNorm weights through its own serialized
dict, and evaluated with its dense ``call`` on an extended quartet. graphdesc
loads that same dict.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from dpa1_cases import SEL, make_config, make_system

from graphdesc.descriptor import (
    DPA1Config,
    compute_stats,
    dpa1_graph,
    load_deepmd,
    params_from_deepmd,
    params_to_deepmd,
)
from graphdesc.graph import batch_graphs, build_graph, from_dense_quartet, to_quartet

dpa1 = pytest.importorskip("deepmd.dpmodel.descriptor.dpa1", reason="deepmd-kit is a test dependency (graphdesc[test])")
DescrptDPA1 = dpa1.DescrptDPA1
TOL = 1e-12
PARITY_CONFIGS = ["default", "no_attn_1type", "rough_nodotr_3types", "raw_qkv_temp_oneside",
                  "temp_nodotr_gelu", "tebd_bias_noconcat", "rough_twoside_1layer"]
PARITY_SYSTEMS = ["triclinic", "small_cell", "cluster"]


def native_deepmd(config: DPA1Config, seed=0, *, davg=True):
    """A DeePMD-kit DescrptDPA1 made by DeePMD-kit, with random stats and LayerNorm weights."""
    kw = config.to_dict()
    kw["sel"] = [config.sel]
    desc = DescrptDPA1(**kw, seed=seed)
    d = desc.serialize()
    rng = np.random.default_rng(seed)
    mean = rng.normal(0, 0.3, (config.ntypes, 1, 4)) if davg else np.zeros((config.ntypes, 1, 4))
    d["@variables"]["davg"] = np.repeat(mean, config.sel, axis=1).astype(config.precision)
    d["@variables"]["dstd"] = np.repeat(rng.uniform(0.2, 1.5, (config.ntypes, 1, 4)), config.sel,
                                        axis=1).astype(config.precision)
    for layer in d["attention_layers"]["attention_layers"]:
        v = layer["attn_layer_norm"]["@variables"]
        v["w"] = rng.normal(1, 0.3, v["w"].shape).astype(config.precision)
        v["b"] = rng.normal(0, 0.3, v["b"].shape).astype(config.precision)
    return DescrptDPA1.deserialize(d), d


def deepmd_call(desc, graph, atype, frames):
    pos = np.concatenate([f[0] for f in frames])
    quartet = to_quartet(graph, pos, atype, SEL)
    coord_ext, atype_ext, nlist, mapping = quartet
    out = desc.call(coord_ext.reshape(len(coord_ext), -1), atype_ext, nlist, mapping)
    n = len(atype)
    return out[0].reshape(n, -1), out[1].reshape(n, -1, 3), quartet


@pytest.mark.parametrize("system", PARITY_SYSTEMS)
@pytest.mark.parametrize("config_name", PARITY_CONFIGS)
def test_matches_deepmd_with_compat(config_name, system):
    config = make_config(config_name)
    desc, serialized = native_deepmd(config, seed=3)
    graph, atype, frames = make_system(system, config.ntypes)
    ref_d, ref_r, quartet = deepmd_call(desc, graph, atype, frames)

    loaded_config, params = params_from_deepmd(serialized)
    assert loaded_config == config
    for attention in ("blocks", "buckets", "pairs"):  # every block-stage layout gives DeePMD-kit's numbers
        d, r = dpa1_graph(params, loaded_config, graph, atype, deepmd_compat=True, attention=attention)
        np.testing.assert_allclose(d, ref_d, rtol=0, atol=TOL, err_msg=attention)
        np.testing.assert_allclose(r, ref_r, rtol=0, atol=TOL, err_msg=attention)
    # the same through DeePMD's own quartet read back as a graph
    g2, a2 = from_dense_quartet(*quartet)
    d2, _ = dpa1_graph(params, loaded_config, g2, a2, deepmd_compat=True)
    np.testing.assert_allclose(d2, ref_d, rtol=0, atol=TOL)
    # native semantics differ from DeePMD by the S2 term when davg != 0
    native, _ = dpa1_graph(params, loaded_config, graph, atype)
    assert np.abs(native - ref_d).max() > 1e-6


@pytest.mark.parametrize("config_name", PARITY_CONFIGS)
def test_matches_deepmd_natively_when_davg_is_zero(config_name):
    config = make_config(config_name)
    desc, serialized = native_deepmd(config, seed=4, davg=False)
    graph, atype, frames = make_system("triclinic", config.ntypes)
    ref_d, ref_r, _ = deepmd_call(desc, graph, atype, frames)
    d, r = dpa1_graph(*_swap(params_from_deepmd(serialized)), graph, atype)
    np.testing.assert_allclose(d, ref_d, rtol=0, atol=TOL)
    np.testing.assert_allclose(r, ref_r, rtol=0, atol=TOL)


def _swap(config_params):
    config, params = config_params
    return params, config


def test_deepmd_own_neighbor_list():
    """DeePMD-kit's own extended system and neighbor list (its slot order), read back as a graph."""
    from deepmd.dpmodel.utils.nlist import extend_input_and_build_neighbor_list

    config = make_config("default")
    desc, serialized = native_deepmd(config, seed=5)
    graph, atype, frames = make_system("triclinic", config.ntypes)
    pos, cell, _ = frames[0]
    coord_ext, atype_ext, mapping, nlist = extend_input_and_build_neighbor_list(
        pos.reshape(1, -1, 3), atype.reshape(1, -1), config.rcut, [config.sel], mixed_types=True,
        box=cell.reshape(1, 9))
    ref = desc.call(coord_ext, atype_ext, nlist, mapping)
    g, a = from_dense_quartet(coord_ext, atype_ext, nlist, mapping)
    config, params = params_from_deepmd(serialized)
    d, r = dpa1_graph(params, config, g, a, deepmd_compat=True)
    np.testing.assert_allclose(d, ref[0][0], rtol=0, atol=TOL)
    np.testing.assert_allclose(r, ref[1][0], rtol=0, atol=TOL)


def test_float32_model_matches_deepmd_float32():
    config = make_config("default", precision="float32")
    desc, serialized = native_deepmd(config, seed=6)
    graph, atype, frames = make_system("triclinic", config.ntypes)
    ref_d, _, _ = deepmd_call(desc, graph, atype, frames)
    cfg, params = params_from_deepmd(serialized)
    assert params["davg"].dtype == np.float32
    d, _ = dpa1_graph(params, cfg, graph.replace(edge_vec=graph.edge_vec.astype(np.float32)), atype,
                      deepmd_compat=True)
    np.testing.assert_allclose(d, ref_d, rtol=0, atol=1e-5 * np.abs(ref_d).max())


def test_export_to_deepmd_round_trips():
    """params_to_deepmd -> DescrptDPA1.deserialize evaluates like graphdesc; reading it back is exact."""
    config = make_config("raw_qkv_temp_oneside")
    _, serialized = native_deepmd(config, seed=7)
    cfg, params = params_from_deepmd(serialized)
    exported = params_to_deepmd(cfg, params)
    graph, atype, frames = make_system("cluster", cfg.ntypes)
    ref, _, _ = deepmd_call(DescrptDPA1.deserialize(exported), graph, atype, frames)
    np.testing.assert_allclose(dpa1_graph(params, cfg, graph, atype, deepmd_compat=True)[0], ref, rtol=0, atol=TOL)
    cfg2, params2 = params_from_deepmd(exported)
    assert cfg2 == cfg
    for (a, b) in zip(_leaves(params), _leaves(params2)):
        np.testing.assert_array_equal(a, b)


def _leaves(tree):
    from graphdesc.descriptor.params import tree_leaves

    return [v for _, v in tree_leaves(tree)]


@pytest.mark.parametrize("suffix", [".pkl", ".json", ".yaml", ".dp"])
def test_load_model_files(tmp_path, suffix):
    from deepmd.dpmodel.utils.serialization import save_dp_model

    config = make_config("default")
    _, serialized = native_deepmd(config, seed=8)
    path = tmp_path / f"model{suffix}"
    wrapped = {"model": {"type": "standard", "descriptor": serialized}}
    if suffix == ".pkl":
        path.write_bytes(pickle.dumps(serialized))
    elif suffix == ".json":
        path.write_text(json.dumps(serialized, default=lambda a: a.tolist()))
    else:
        save_dp_model(str(path), wrapped)
    cfg, params = load_deepmd(path)
    assert cfg == config
    ref_cfg, ref = params_from_deepmd(serialized)
    for a, b in zip(_leaves(ref), _leaves(params)):
        np.testing.assert_array_equal(a, b)


def test_statistics_match_deepmd():
    config = make_config("default", sel=SEL)
    desc = DescrptDPA1(**{**config.to_dict(), "sel": [SEL]}, seed=0)
    rng = np.random.default_rng(11)
    cell = np.diag([8.0, 8.5, 9.0]) + rng.uniform(-0.5, 0.5, (3, 3)) * (1 - np.eye(3))
    frames = [(rng.uniform(0, 1, (30, 3)) @ cell, rng.integers(0, 2, 30)) for _ in range(2)]
    frames.append((frames[0][0], np.zeros(30, dtype=np.int64)))  # type 1 absent in one frame
    desc.compute_input_stats([
        {"coord": pos.reshape(1, -1, 3), "atype": at.reshape(1, -1), "box": cell.reshape(1, 9),
         "natoms": np.array([[30, 30, np.sum(at == 0), np.sum(at == 1)]])}
        for pos, at in frames
    ])
    mean, std = desc.get_stat_mean_and_stddev()
    davg, dstd = compute_stats(config, [(build_graph(p, config.rcut, cell=cell, pbc=True), a) for p, a in frames])
    np.testing.assert_allclose(davg, mean[:, 0, :], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dstd, std[:, 0, :], rtol=1e-12, atol=1e-14)
    assert np.all(davg[:, 1:] == 0) and np.all(davg[:, 0] > 0)


@pytest.mark.parametrize("change, match", [
    ({"tebd_input_mode": "strip"}, "tebd_input_mode 'strip'"),
    ({"exclude_types": [[0, 1]]}, "exclude_types"),
    ({"type": "se_e2_a"}, "DPA1 descriptor dict"),
])
def test_unsupported_deepmd_features_are_refused(change, match):
    _, serialized = native_deepmd(make_config("default"))
    with pytest.raises(ValueError, match=match):
        params_from_deepmd({**serialized, **change})


def test_slot_dependent_statistics_are_refused():
    _, serialized = native_deepmd(make_config("default"))
    serialized["@variables"]["davg"][0, 3, 0] += 1.0
    with pytest.raises(ValueError, match="differs between neighbor slots"):
        params_from_deepmd(serialized)


def test_two_frame_batch_uses_each_frames_first_atom():
    """DeePMD's empty slots take the type of their own frame's first atom: checked on nf = 2."""
    config = make_config("rough_nodotr_3types")
    desc, serialized = native_deepmd(config, seed=9)
    rng = np.random.default_rng(2)
    cell = np.diag([7.0, 7.4, 7.9])
    frames = [(rng.uniform(0, 1, (12, 3)) @ cell, cell, True) for _ in range(2)]
    graph = batch_graphs([build_graph(p, config.rcut, cell=c, pbc=b) for p, c, b in frames])
    atype = rng.integers(0, 3, 24)
    atype[0], atype[12] = 0, 2  # different first-atom types
    ref_d, ref_r, _ = deepmd_call(desc, graph, atype, frames)
    cfg, params = params_from_deepmd(serialized)
    d, r = dpa1_graph(params, cfg, graph, atype, deepmd_compat=True)
    np.testing.assert_allclose(d, ref_d, rtol=0, atol=TOL)
    np.testing.assert_allclose(r, ref_r, rtol=0, atol=TOL)
