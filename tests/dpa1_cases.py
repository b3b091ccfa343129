"""DPA1 test cases: a covering matrix of configs, random parameters and systems.

``sel = 48`` is above every system's largest degree (checked), so graph and
dense semantics coincide ("sel not binding").
"""

from __future__ import annotations

import numpy as np

from graphdesc.descriptor import DPA1Config, init_params
from graphdesc.graph import NeighborGraph, batch_graphs, build_graph

RCUT, RCUT_SMTH, SEL = 4.0, 1.0, 48
SMALL = dict(neuron=(6, 12, 24), axis_neuron=4, attn=10)

# Each flag of the matrix takes each of its values somewhere:
# attn_layer 0/1/2, smooth, dotr, normalize, temperature, type_one_side,
# resnet_dt, 1..3 types, plus tebd residual (dt == ntypes, 2*ntypes), tebd bias,
# no concat, env_protection and a second activation.
CONFIGS = {
    "default": dict(ntypes=2, attn_layer=2),
    "no_attn_1type": dict(ntypes=1, attn_layer=0, resnet_dt=True),
    "rough_nodotr_3types": dict(ntypes=3, attn_layer=1, smooth_type_embedding=False, attn_dotr=False),
    "raw_qkv_temp_oneside": dict(ntypes=2, attn_layer=2, normalize=False, temperature=0.7,
                                 type_one_side=True, resnet_dt=True, tebd_dim=4),
    "rough_raw_3types": dict(ntypes=3, attn_layer=2, smooth_type_embedding=False, normalize=False,
                             resnet_dt=True),
    "temp_nodotr_gelu": dict(ntypes=1, attn_layer=1, attn_dotr=False, temperature=1.3, type_one_side=True,
                             tebd_dim=1, activation_function="gelu"),
    "tebd_bias_noconcat": dict(ntypes=2, attn_layer=2, temperature=0.4, resnet_dt=True, tebd_dim=2,
                               use_tebd_bias=True, concat_output_tebd=False, env_protection=0.1),
    "rough_twoside_1layer": dict(ntypes=2, attn_layer=1, smooth_type_embedding=False, scaling_factor=2.0),
}


def make_config(name: str, **overrides) -> DPA1Config:
    return DPA1Config(**{"rcut": RCUT, "rcut_smth": RCUT_SMTH, "sel": SEL, **SMALL, **CONFIGS[name], **overrides})


def random_params(config: DPA1Config, seed: int = 0, *, davg: bool = True, isotropic: bool = False) -> dict:
    """Parameters with every statistic and LayerNorm weight random (so each place they enter is tested).

    ``isotropic``: statistics of DeePMD's form, ``davg = [m, 0, 0, 0]`` and one
    angular std, which rotation invariance needs (random angular ``davg`` or
    unequal angular ``dstd`` single out directions).
    """
    rng = np.random.default_rng(seed)
    p = init_params(config, seed)
    dtype = p["dstd"].dtype
    if davg:
        p["davg"] = rng.normal(0, 0.3, (config.ntypes, 4)).astype(dtype)
    p["dstd"] = rng.uniform(0.2, 1.5, (config.ntypes, 4)).astype(dtype)
    if isotropic:
        p["davg"][:, 1:] = 0
        p["dstd"][:, 2:] = p["dstd"][:, 1:2]
    for lp in p["attention"]:
        lp["ln_w"] = rng.normal(1.0, 0.3, lp["ln_w"].shape).astype(dtype)
        lp["ln_b"] = rng.normal(0.0, 0.3, lp["ln_b"].shape).astype(dtype)
    for lp in p["embedding"]:
        if "idt" in lp:
            lp["idt"] = rng.normal(0.5, 0.2, lp["idt"].shape).astype(dtype)
    return p


def _triclinic(rng, n=24):
    cell = np.diag([7.0, 7.4, 7.9]) + rng.uniform(-0.8, 0.8, (3, 3)) * (1 - np.eye(3))
    return [(rng.uniform(0, 1, (n, 3)) @ cell, cell, True)]


def _small_cell(rng):
    cell = np.array([[3.1, 0.0, 0.0], [0.6, 3.3, 0.0], [0.3, -0.4, 3.6]])
    return [(rng.uniform(0, 1, (3, 3)) @ cell, cell, True)]


def _cluster(rng, n=10):
    return [(_spread(rng, n, 3.0), None, False)]


def _single(rng):
    return [(np.zeros((1, 3)), None, False)]


def _lonely(rng):
    pos = _spread(rng, 6, 2.5)
    return [(np.concatenate([pos, [[30.0, 0.0, 0.0]]]), None, False)]


def _batch(rng):
    return _triclinic(rng, 13) + _cluster(rng, 7)


def _spread(rng, n, size):
    """``n`` random points in a cube, at least 0.9 apart."""
    pts = []
    while len(pts) < n:
        p = rng.uniform(0, size, 3)
        if all(np.linalg.norm(p - q) > 0.9 for q in pts):
            pts.append(p)
    return np.array(pts)


SYSTEMS = {"triclinic": _triclinic, "small_cell": _small_cell, "cluster": _cluster,
           "single_atom": _single, "lonely_atom": _lonely, "ragged_batch": _batch}


def make_system(name: str, ntypes: int, seed: int = 0):
    """``(graph (numpy), atype (N,), frames)``; ``frames`` lists ``(pos, cell, pbc)``."""
    rng = np.random.default_rng(seed + 1000 * list(SYSTEMS).index(name))
    frames = SYSTEMS[name](rng)
    graphs = [build_graph(pos, RCUT, cell=cell, pbc=pbc) for pos, cell, pbc in frames]
    graph = graphs[0] if len(graphs) == 1 else batch_graphs(graphs)
    atype = rng.integers(0, ntypes, sum(len(f[0]) for f in frames))
    deg = np.bincount(graph.dst, minlength=len(atype))
    assert deg.max(initial=0) <= SEL, f"{name}: degree {deg.max()} > sel {SEL}"
    if name == "lonely_atom":
        assert deg[-1] == 0
    return graph, atype, frames


def convert(graph: NeighborGraph, backend) -> NeighborGraph:
    return NeighborGraph(*(backend.asarray(np.asarray(a)) for a in
                           (graph.edge_index, graph.edge_vec, graph.edge_mask, graph.n_node)))
