"""No geometry gives a silent NaN: coincident and near-coincident atoms, flat cells and absurd densities
raise a clear error where positions become a graph; everything else gives finite energies, forces and virials.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from helpers import to_numpy
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_model import energy_config, make_model_params

from graphdesc.descriptor import graph_path
from graphdesc.graph import MIN_DISTANCE, NeighborGraph, build_graph, check_min_distance, validate

torch = pytest.importorskip("torch")
from graphdesc.torch import EnergyModel  # noqa: E402

RCUT = 4.0  # energy_config()'s cutoff (dpa1_cases.RCUT)
GUARDS = ("refuses atoms closer than", "pairs within the cutoff", "neighbors within rcut")


@pytest.fixture(scope="module")
def models():
    config = energy_config()
    model = EnergyModel(config, make_model_params(config, 3)).eval()
    return {torch.float64: model, torch.float32: EnergyModel(config, make_model_params(config, 3)).float().eval()}


def _outputs(model, positions, cell=None, pbc=False, atype=None, **build):
    dtype = next(model.buffers()).dtype
    pos = torch.as_tensor(np.asarray(positions, dtype=np.float64), dtype=dtype)
    cell_t = None if cell is None else torch.as_tensor(np.asarray(cell, dtype=np.float64), dtype=dtype)
    graph = build_graph(pos, RCUT, cell=cell_t, pbc=pbc, **build)
    atype = torch.zeros(len(pos), dtype=torch.int64) if atype is None else torch.as_tensor(atype)
    return model(graph, atype)


def _all_finite(out):
    return {k: bool(torch.isfinite(v).all()) for k, v in out.items()}


# -- coincident and near-coincident atoms ------------------------------------------------------------------
def test_coincident_atoms_are_refused_on_every_backend(backend):
    pos = np.array([[0.0, 0.0, 0.0], [1.2, 0.3, 0.1], [1.2, 0.3, 0.1], [3.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match=r"^positions: atoms 1 and 2 coincide \(distance 0\)"):
        build_graph(backend.asarray(pos), RCUT)


def test_near_coincident_atoms_and_images_are_refused():
    with pytest.raises(ValueError, match=r"atoms 0 and 1 are 0\.05 A apart.*min_distance = 0\.1 A"):
        build_graph(np.array([[0.0, 0.0, 0.0], [0.05, 0.0, 0.0]]), RCUT)
    with pytest.raises(ValueError, match=r"atom 0 and its own periodic image \(image shift \[-?1, 0, 0\]\) are 0\.08"):
        build_graph(np.zeros((1, 3)), RCUT, cell=np.diag([0.08, 5.0, 5.0]), pbc=True)
    # an atom and the periodic image of another, across the boundary
    with pytest.raises(ValueError, match=r"atoms 0 and 1 \(image shift .*\) are 0\.02 A apart"):
        build_graph(np.array([[0.01, 1.0, 1.0], [4.99, 1.0, 1.0]]), RCUT, cell=np.eye(3) * 5.0, pbc=True)


def test_min_distance_is_a_setting_and_zero_is_always_refused():
    pos = np.array([[0.0, 0.0, 0.0], [0.05, 0.0, 0.0]])
    graph = build_graph(pos, RCUT, min_distance=0.01)
    assert graph.edge_vec.shape == (2, 3)
    with pytest.raises(ValueError, match="coincide"):
        build_graph(np.zeros((2, 3)), RCUT, min_distance=0.0)
    with pytest.raises(ValueError, match="are 1.5 A apart"):
        build_graph(np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]]), RCUT, min_distance=2.0)
    check_min_distance(np.array([[0.0, 0.0, 0.0], [MIN_DISTANCE, 0.0, 0.0]]))  # at the threshold: accepted


def test_validate_refuses_zero_length_real_edges():
    ei = np.array([[1, 0, 0], [0, 1, 1]])
    vec = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    graph = NeighborGraph(ei, vec, np.array([True, True, False]), np.array([2]))
    with pytest.raises(ValueError, match=r"edge_vec is zero on real edge 0 \(src 1, dst 0\)"):
        validate(graph)
    validate(graph.replace(edge_mask=np.array([False, True, False])))  # a masked zero edge is padding


def test_ase_calculator_and_training_data_refuse_coincident_atoms(models, tmp_path):
    from ase.build import bulk

    from graphdesc.ase import Calculator
    from graphdesc.train import Dataset, GraphCache

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.positions[1] = atoms.positions[0]
    atoms.calc = Calculator(models[torch.float64], type_map=["Cu", "Al"])
    with pytest.raises(ValueError, match="atoms 0 and 1 coincide"):
        atoms.get_potential_energy()
    labelled = bulk("Cu", "fcc", a=3.6, cubic=True)
    labelled.info["energy"] = 0.0
    bad = labelled.copy()
    bad.info["energy"] = 0.0
    bad.positions[3] = bad.positions[2] + [0.03, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"^frame 1: atoms 2 and 3 are 0\.03 A apart"):
        Dataset.from_atoms([labelled, bad])
    # frames made without the reader's check still meet build_graph's, with the frame named
    data = Dataset.from_atoms([labelled])
    frame = data[0]
    moved = type(frame)(frame.positions.copy(), frame.atype, frame.cell, frame.pbc, frame.energy)
    moved.positions[1] = moved.positions[0]
    with pytest.raises(ValueError, match=r"^frame 0: positions: atoms 0 and 1 coincide"):
        GraphCache(Dataset([moved], data.type_map), RCUT).graph(0)


# -- flat cells and absurd densities -----------------------------------------------------------------------
def test_flat_cell_is_refused_before_the_search():
    cell = np.array([[5.0, 0.0, 0.0], [0.0, 5.0, 0.0], [5.0, 5.0, 1e-5]])
    pos = np.array([[0.5, 0.5, 0.0], [2.0, 3.0, 0.0]])
    with pytest.raises(ValueError, match=r"about .* pairs within the cutoff 4 A .*max_edges"):
        build_graph(pos, RCUT, cell=cell, pbc=True)
    with pytest.raises(ValueError, match="max_edges = 10"):
        build_graph(np.random.default_rng(0).uniform(0, 6, (20, 3)), RCUT, cell=np.eye(3) * 6, pbc=True,
                    max_edges=10)
    graph = build_graph(np.random.default_rng(0).uniform(0, 6, (20, 3)), RCUT, cell=np.eye(3) * 6, pbc=True,
                        max_edges=None, min_distance=0.0)
    assert graph.edge_vec.shape[0] > 10


@pytest.mark.parametrize("attention", ["auto", "blocks", "buckets", "pairs"])
def test_absurd_density_is_a_clear_error_not_an_out_of_memory_kill(models, attention):
    """One atom in a 0.25 A cube has ~17,000 images within 4 A: one attention block of ~2 GiB (far more as
    the pair path's gathered rows), refused in every block-stage layout before anything that size is made."""
    model = models[torch.float64]
    model.attention = attention
    try:
        with pytest.raises(ValueError, match=r"center 0 has \d+ neighbors within rcut 4 A .*check the cell"):
            _outputs(model, np.zeros((1, 3)), cell=np.eye(3) * 0.25, pbc=True)
    finally:
        model.attention = "auto"


# -- the descriptor stays finite ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_finite_from_min_distance_to_the_cutoff(models, dtype):
    """Two and three atoms at every separation from MIN_DISTANCE to past the cutoff, edges at rcut included."""
    lengths = np.concatenate([np.geomspace(MIN_DISTANCE, RCUT, 40),
                              RCUT - np.geomspace(1e-12, 1e-3, 5), [RCUT, RCUT + 1e-9, 2 * RCUT]])
    for r in lengths:
        for pos in (np.array([[0.0, 0.0, 0.0], [r, 0.0, 0.0]]),
                    np.array([[0.0, 0.0, 0.0], [r, 0.0, 0.0], [0.0, 1.0, 0.5]])):
            out = _outputs(models[dtype], pos, atype=np.arange(len(pos)) % 2)
            assert all(_all_finite(out).values()), (r, _all_finite(out))


@pytest.mark.parametrize("dtype,shortest", [(torch.float64, 1e-90), (torch.float32, 1e-10)])
def test_finite_below_min_distance(models, dtype, shortest):
    """With the guard lowered (min_distance=0) the outputs stay finite far below 0.1 A: down to 1e-90 A in
    fp64 and 1e-10 A in fp32 (they overflow near 1e-103 and 1e-13: the forces go as 1/r^3)."""
    for r in np.geomspace(shortest, MIN_DISTANCE, 30):
        out = _outputs(models[dtype], np.array([[0.0, 0.0, 0.0], [r, 0.0, 0.0], [0.0, 1.0, 0.5]]),
                       atype=[0, 1, 0], min_distance=0.0)
        assert all(_all_finite(out).values()), (r, _all_finite(out))


def test_finite_far_beyond_sel(models):
    """A 0.6 A cube: ~1,200 neighbors per atom against sel 48 (negative phantom counts), still finite."""
    out = _outputs(models[torch.float64], np.array([[0.0, 0.0, 0.0], [0.3, 0.3, 0.3]]),
                   cell=np.eye(3) * 0.6, pbc=True, atype=[0, 1])
    assert all(_all_finite(out).values())


def _cell(data, kind):
    """A random cell: regular (lengths 0.6-12 A, any angles) or near-degenerate (third vector nearly in-plane)."""
    lengths = data.draw(st.lists(st.floats(0.6, 12.0), min_size=3, max_size=3))
    mixing = np.array(data.draw(st.lists(st.floats(-0.5, 0.5), min_size=9, max_size=9))).reshape(3, 3)
    cell = np.diag(lengths) + mixing * (1 - np.eye(3)) * np.array(lengths)[:, None]
    if kind == "flat":
        flatness = 10 ** data.draw(st.floats(-7.0, -0.3))
        a, b = cell[0], cell[1]
        cell[2] = data.draw(st.floats(-1, 1)) * a + data.draw(st.floats(-1, 1)) * b + \
            flatness * np.cross(a, b) / np.linalg.norm(np.cross(a, b)) * lengths[2]
    return cell


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_random_structures_are_finite_or_refused(models, data):
    """Random periodic, mixed and open structures: finite E, F, virials, or one of the guards' clear errors."""
    dtype = data.draw(st.sampled_from([torch.float64, torch.float32]))
    kind = data.draw(st.sampled_from(["periodic", "flat", "mixed", "open", "isolated", "near_cutoff"]))
    n = data.draw(st.integers(1, 8))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    atype = rng.integers(0, 2, n) if data.draw(st.booleans()) else np.full(n, data.draw(st.integers(0, 1)))
    cell, pbc = None, False
    if kind in ("periodic", "flat", "mixed"):
        cell = _cell(data, kind)
        pbc = [True] * 3 if kind != "mixed" else data.draw(st.lists(st.booleans(), min_size=3, max_size=3))
        pos = rng.uniform(-0.2, 1.2, (n, 3)) @ cell  # some atoms outside the cell: positions need no wrapping
    elif kind == "open":
        pos = rng.uniform(0, data.draw(st.floats(0.2, 10.0)), (n, 3))
    elif kind == "isolated":  # atoms further apart than the cutoff: no edges at all
        pos = np.arange(n)[:, None] * np.array([[RCUT * 1.5, 0.3, 0.0]])
    else:  # a pair within a hair of the cutoff, on either side
        gap = data.draw(st.sampled_from([-1e-3, -1e-9, -1e-14, 0.0, 1e-14, 1e-9]))
        direction = rng.normal(size=3)
        pos = np.concatenate([np.zeros((1, 3)), (RCUT + gap) * direction[None] / np.linalg.norm(direction),
                              rng.uniform(10, 20, (max(n - 2, 0), 3))])[:max(n, 2)]
        atype = np.resize(atype, len(pos))
    try:
        # a lower block limit keeps each example fast; the guard itself is tested at its real limit above
        with mock.patch.object(graph_path, "MAX_BLOCK_BYTES", 2**24):
            out = _outputs(models[dtype], pos, cell=cell, pbc=pbc, atype=atype)
    except ValueError as err:
        assert any(g in str(err) for g in GUARDS), f"unexpected error: {err}"
        event(f"{kind}: refused ({next(g for g in GUARDS if g in str(err))})")
        return
    event(f"{kind}: finite")
    finite = _all_finite(out)
    assert all(finite.values()), (kind, finite)
    assert to_numpy(out["force"]).shape == (len(pos), 3)
