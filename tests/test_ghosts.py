"""Local and ghost atoms (package schema 2): domain decomposition equals the whole box.

A periodic triclinic box of two types is cut into slabs; each slab gets its
local atoms plus an ``rcut`` halo of ghosts with their own coordinates (and
a wider, edgeless ring, as an engine's halo has). One call per slab; the
local energies and virials are summed and every node's force (ghosts
included) is sent back to its owner atom. The sum must equal one whole-box
call: to 1e-12 in float64 (eager and the ``.pt2``), at float32 tolerance in
float32.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from graphdesc.graph import build_graph
from graphdesc.graph.halo import batch_halos, fold_ghosts, halo_graph

torch = pytest.importorskip("torch")
from graphdesc.export import OUTPUTS, load_package  # noqa: E402

RCUT = 4.0
TOL64 = 1e-12
KEYS = ("energy", "force", "virial", "atom_energy", "atom_virial")


def box(n=44, seed=0, empty_band=None):
    """A triclinic periodic box with two types; ``empty_band=(lo, hi)`` leaves that fractional-x band empty."""
    rng = np.random.default_rng(seed)
    cell = np.array([[9.2, 0.0, 0.0], [1.3, 8.7, 0.0], [0.8, -1.1, 9.6]])
    frac = rng.uniform(0, 1, (n, 3))
    if empty_band is not None:
        lo, hi = empty_band
        inside = (frac[:, 0] >= lo) & (frac[:, 0] < hi)
        frac[inside, 0] -= hi - lo  # move them into the band below
    return frac @ cell, cell, rng.integers(0, 2, n), frac


def tensors(h, dtype):
    g = h.graph
    return (torch.as_tensor(h.atype[: h.num_local]), torch.as_tensor(g.edge_index),
            torch.as_tensor(g.edge_vec, dtype=dtype), torch.as_tensor(g.edge_mask), torch.as_tensor(g.n_node),
            torch.as_tensor(h.atype[h.num_local:]))


def call_eager(model, h, dtype):
    atype, ei, vec, mask, n_node, ghost = tensors(h, dtype)
    from graphdesc.graph import NeighborGraph

    out = model(NeighborGraph(ei, vec, mask, n_node), torch.cat([atype, ghost]), num_local=h.num_local)
    return {k: v.detach() for k, v in out.items()}


def call_package(package, h, dtype):
    return package(*tensors(h, dtype))


def whole_box(model, pos, cell, atype, dtype):
    graph = build_graph(torch.as_tensor(pos, dtype=dtype), RCUT, cell=torch.as_tensor(cell, dtype=dtype), pbc=True)
    out = model(graph, torch.as_tensor(atype))
    return {k: v.detach().double().numpy() for k, v in out.items()}


def decomposed(call, pos, cell, atype, frac, slabs, dtype):
    """Sum of one call per slab: energies and virials added, per-node results folded onto the owners."""
    n = len(pos)
    total = {"energy": np.zeros(1), "virial": np.zeros((1, 3, 3)), "force": np.zeros((n, 3)),
             "atom_energy": np.zeros(n), "atom_virial": np.zeros((n, 3, 3))}
    sizes = []
    for k in range(slabs):
        local = np.floor(frac[:, 0] * slabs) == k
        h = halo_graph(pos, atype, local, RCUT, cell=cell, pbc=True, extra_ghosts=1.5)
        out = {key: v.double().numpy() for key, v in call(h, dtype).items()}
        assert np.all(out["atom_energy"][h.num_local:] == 0), "a ghost got an atom energy"
        total["energy"] += out["energy"]
        total["virial"] += out["virial"]
        for key in ("force", "atom_energy", "atom_virial"):
            total[key] += fold_ghosts(out[key], h.owner, n)
        sizes.append((h.num_local, h.num_ghosts, h.graph.edge_vec.shape[0]))
    return total, sizes


def assert_close(got, want, tol, what):
    for key in KEYS:
        scale = max(np.abs(want[key]).max(), 1.0) if tol > TOL64 else 1.0
        err = np.abs(got[key] - want[key]).max() if want[key].size else 0.0
        assert err <= tol * scale, f"{what} {key}: {err:.3g}"


@pytest.fixture(scope="module")
def model32(typed_models):
    """A native float32 model: the LAMMPS tests' two-type model (``typed_models``), whose float32 package
    is compiled once per run for both."""
    return copy.deepcopy(typed_models[0]).float().eval()


@pytest.fixture(scope="module")
def package32(typed_models):
    return load_package(typed_models[1]["float32"])


@pytest.mark.parametrize("slabs", [1, 2, 3])
@pytest.mark.parametrize("path", ["eager", "package"])
def test_slabs_equal_the_whole_box_float64(model64, package64, path, slabs):
    model = model64[0]
    pos, cell, atype, frac = box()
    want = whole_box(model, pos, cell, atype, torch.float64)
    call = (lambda h, dt: call_eager(model, h, dt)) if path == "eager" else \
        (lambda h, dt: call_package(package64, h, dt))
    got, sizes = decomposed(call, pos, cell, atype, frac, slabs, torch.float64)
    assert_close(got, want, TOL64, f"{path}, {slabs} slabs")
    assert sum(s[0] for s in sizes) == len(pos) and (slabs == 1 or all(s[1] > s[0] for s in sizes))


@pytest.mark.parametrize("path", ["eager", "package"])
def test_a_slab_with_no_local_atoms(model64, package64, path):
    """Four slabs of a box whose third quarter is empty: that call has L = 0, G = 0, E = 0."""
    model = model64[0]
    pos, cell, atype, frac = box(empty_band=(0.5, 0.75))
    want = whole_box(model, pos, cell, atype, torch.float64)
    call = (lambda h, dt: call_eager(model, h, dt)) if path == "eager" else \
        (lambda h, dt: call_package(package64, h, dt))
    got, sizes = decomposed(call, pos, cell, atype, frac, 4, torch.float64)
    assert (0, 0, 0) in sizes
    assert_close(got, want, TOL64, f"{path}, empty slab")


@pytest.mark.parametrize("path", ["eager", "package"])
def test_several_slabs_and_an_edgeless_frame_in_one_call(model64, package64, path):
    """Three slabs plus a lone atom (no edges) as four frames of one call: locals of every frame first."""
    model = model64[0]
    pos, cell, atype, frac = box(seed=3)
    halos = [halo_graph(pos, atype, np.floor(frac[:, 0] * 3) == k, RCUT, cell=cell, pbc=True) for k in range(3)]
    halos.append(halo_graph(np.zeros((1, 3)), np.array([1]), np.array([True]), RCUT))
    h = batch_halos(halos)
    assert h.graph.n_node.tolist() == [x.num_local for x in halos] and halos[-1].graph.edge_vec.shape[0] == 0
    call = (lambda hh: call_eager(model, hh, torch.float64)) if path == "eager" else \
        (lambda hh: call_package(package64, hh, torch.float64))
    joint = call(h)
    separate = [call(x) for x in halos]
    np.testing.assert_allclose(joint["energy"].numpy(), [s["energy"].item() for s in separate], rtol=0, atol=TOL64)
    np.testing.assert_allclose(joint["virial"].numpy(), np.concatenate([s["virial"].numpy() for s in separate]),
                               rtol=0, atol=TOL64)
    want = whole_box(model, pos, cell, atype, torch.float64)
    assert abs(joint["energy"][:3].sum().item() - want["energy"][0]) < TOL64
    force = sum(fold_ghosts(joint["force"].numpy()[mask], h.owner[mask], len(pos))
                for mask in _frame_node_masks(h, halos)[:3])
    np.testing.assert_allclose(force, want["force"], rtol=0, atol=TOL64)


def _frame_node_masks(h, halos):
    """Boolean node masks of each frame of a batch_halos result (locals then ghosts of that frame)."""
    n = len(h.owner)
    local_off = np.cumsum([0] + [x.num_local for x in halos])
    ghost_off = h.num_local + np.cumsum([0] + [x.num_ghosts for x in halos])
    masks = []
    for k in range(len(halos)):
        m = np.zeros(n, dtype=bool)
        m[local_off[k]:local_off[k + 1]] = True
        m[ghost_off[k]:ghost_off[k + 1]] = True
        masks.append(m)
    return masks


@pytest.mark.parametrize("path", ["eager", "package"])
def test_slabs_equal_the_whole_box_float32(model32, package32, path):
    pos, cell, atype, frac = box(seed=5)
    want = whole_box(model32, pos, cell, atype, torch.float32)
    call = (lambda h, dt: call_eager(model32, h, dt)) if path == "eager" else \
        (lambda h, dt: call_package(package32, h, dt))
    for slabs in (2, 3):
        got, _ = decomposed(call, pos, cell, atype, frac, slabs, torch.float32)
        assert_close(got, want, 2e-5, f"float32 {path}, {slabs} slabs")


def test_without_ghosts_schema_2_is_schema_1(model64, package64):
    """No ghosts: num_local = N is the plain eager call bit for bit; the package's 5-input call is its 6-input
    one (to rounding: the compiled CPU program's scatter-adds are threaded, so two calls differ in the last bits)."""
    model = model64[0]
    pos, cell, atype, _ = box(seed=7)
    graph = build_graph(torch.as_tensor(pos), RCUT, cell=torch.as_tensor(cell), pbc=True)
    at = torch.as_tensor(atype)
    plain, local = model(graph, at), model(graph, at, num_local=len(pos))
    for key in KEYS:
        assert torch.equal(plain[key], local[key]), key
    five = package64(at, graph.edge_index, graph.edge_vec, graph.edge_mask, graph.n_node)
    six = package64(at, graph.edge_index, graph.edge_vec, graph.edge_mask, graph.n_node,
                    torch.zeros(0, dtype=torch.int64))
    for key in KEYS:
        assert (five[key] - six[key]).abs().max().item() < TOL64, key
        assert (five[key] - plain[key].detach()).abs().max().item() < TOL64, key


def test_ghost_inputs_are_checked(model64, package64):
    model = model64[0]
    pos, cell, atype, frac = box(seed=9)
    h = halo_graph(pos, atype, frac[:, 0] < 0.5, RCUT, cell=cell, pbc=True)
    atype_l, ei, vec, mask, n_node, ghost = tensors(h, torch.float64)
    with pytest.raises(TypeError, match="ghost_atype must be int64"):
        package64(atype_l, ei, vec, mask, n_node, ghost.int())
    with pytest.raises(ValueError, match="ghost_atype must be 1-D"):
        package64(atype_l, ei, vec, mask, n_node, ghost[:, None])
    with pytest.raises(ValueError, match="atype must be < ntypes = 2"):
        package64(atype_l, ei, vec, mask, n_node, ghost + 2)
    with pytest.raises(ValueError, match=r"n_node sums to \d+ but num_local is \d+"):
        package64(atype_l, ei, vec, mask, n_node + 1, ghost)
    bad = ei.clone()
    bad[1, 0] = h.num_local  # a ghost as a center
    with pytest.raises(ValueError, match=r"edge 0 has ghost node \d+ as its center \(dst\)"):
        package64(atype_l, bad, vec, mask, n_node, ghost)
    with pytest.raises(ValueError, match="edge_index out of range"):
        package64(atype_l, ei, vec, mask, n_node, ghost[:-5])  # too few ghost types for the nodes used
    from graphdesc.graph import NeighborGraph

    with pytest.raises(ValueError, match=r"n_node sums to \d+ but num_local is 3"):
        model(NeighborGraph(ei, vec, mask, n_node), torch.cat([atype_l, ghost]), num_local=3)


class _OneProgram(torch.nn.Module):
    """A stand-in for a graphdesc 0.1 package's single program: each output a known function of the inputs."""

    def forward(self, atype, edge_index, edge_vec, edge_mask, n_node, ghost_atype=None):
        nodes = atype if ghost_atype is None else torch.cat([atype, ghost_atype])
        n = nodes.shape[0]
        energy = n_node.to(edge_vec.dtype) + edge_vec.sum()
        force = nodes.to(edge_vec.dtype)[:, None].expand(n, 3) * 2.0
        return (energy, nodes.to(edge_vec.dtype), force, energy[:, None, None].expand(-1, 3, 3) * 3.0,
                force[:, :, None].expand(n, 3, 3) + 1.0)


@pytest.fixture(scope="module")
def one_program_packages(model64, tmp_path_factory):
    """Packages as graphdesc wrote them before schema 3: one program named "model" (schema 1: five inputs)."""
    folder = tmp_path_factory.mktemp("old_pt2")
    config = model64[0].config.to_dict()
    pos, cell, atype, frac = box(seed=1)
    sample = tensors(halo_graph(pos, atype, frac[:, 0] < 0.5, RCUT, cell=cell, pbc=True), torch.float64)
    paths = {}
    for schema in (1, 2):
        args = sample[:5 + (schema > 1)]
        dim = torch.export.Dim
        e = dim("E", min=0)
        shapes = ({0: dim("L", min=0)}, {1: e}, {0: e}, {0: e}, {0: dim("nf", min=1)}) + ((
            {0: dim("G", min=0)},) if schema > 1 else ())
        with torch.fx.experimental._config.patch(backed_size_oblivious=True):
            program = torch.export.export(_OneProgram(), args, dynamic_shapes=shapes, strict=False)
        meta = {"graphdesc.schema": str(schema), "graphdesc.dtype": "float64", "graphdesc.device": "cpu",
                "graphdesc.config": json.dumps(config)}
        paths[schema] = folder / f"schema{schema}.pt2"
        torch._inductor.aoti_compile_and_package(program, package_path=str(paths[schema]),
                                                 inductor_configs={"aot_inductor.metadata": meta})
    return paths


@pytest.mark.parametrize("schema", [1, 2])
def test_one_program_packages_still_run(one_program_packages, schema):
    """Schema 1 and 2 packages (one compiled program) load and run as one call, outputs in the schema's order;
    a schema-1 package given ghosts says how to re-export it."""
    package = load_package(one_program_packages[schema])
    assert package.schema == schema
    pos, cell, atype, frac = box(seed=9)
    h = halo_graph(pos, atype, frac[:, 0] < 0.5, RCUT, cell=cell, pbc=True)
    inputs = tensors(h, torch.float64)
    if schema == 1:
        with pytest.raises(ValueError, match=r"schema 1, which has no ghost atoms; re-export it .*graphdesc export"):
            package(*inputs)
        g = build_graph(torch.as_tensor(pos), RCUT, cell=torch.as_tensor(cell), pbc=True)
        inputs = (torch.as_tensor(atype), g.edge_index, g.edge_vec, g.edge_mask, g.n_node, None)
    out = package(*inputs)
    want = _OneProgram()(*(x for x in inputs if x is not None))
    assert list(out) == list(OUTPUTS)
    for key, value in zip(OUTPUTS, want):  # the compiled sum of edge_vec may round differently
        torch.testing.assert_close(out[key], value, rtol=1e-13, atol=1e-12, msg=key)


def test_edge_order_and_memory_layout_do_not_matter(model64, package64):
    """Edges in any order (LAMMPS lists them unsorted), and a non-contiguous edge_index (a transposed (E, 2)
    array), give the eager numbers: the loader hands the compiled program contiguous inputs (it reads them
    with the traced strides, and a transposed edge_index was read as other indices)."""
    model = model64[0]
    pos, cell, atype, frac = box(seed=11)
    h = halo_graph(pos, atype, frac[:, 0] < 0.6, RCUT, cell=cell, pbc=True, extra_ghosts=1.5)
    order = np.random.default_rng(0).permutation(h.graph.edge_vec.shape[0])
    atype_l, ei, vec, mask, n_node, ghost = tensors(h, torch.float64)
    ei, vec = ei[:, order], vec[order]
    transposed = ei.T.contiguous().T
    assert not transposed.is_contiguous()
    from graphdesc.graph import NeighborGraph

    want = model(NeighborGraph(ei, vec, mask, n_node), torch.cat([atype_l, ghost]), num_local=h.num_local)
    got = package64(atype_l, transposed, vec, mask, n_node, ghost)
    for key in KEYS:
        assert (got[key] - want[key].detach()).abs().max().item() < TOL64, key
