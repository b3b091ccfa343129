"""NeighborGraph: builders against ASE, layouts, validation, force/virial assembly."""

import itertools

import numpy as np
import pytest
from helpers import to_numpy

from graphdesc.examples import fcc_positions
from graphdesc.graph import (
    NeighborGraph,
    batch_graphs,
    build_graph,
    edge_force_virial,
    from_dense_quartet,
    to_dense,
    to_quartet,
    to_static,
    truncate,
    validate,
)

ase_nl = pytest.importorskip("ase.neighborlist", reason="ase is a test dependency: pip install 'graphdesc[test]'")
from ase import Atoms  # noqa: E402

RNG = np.random.default_rng(42)
TRICLINIC = np.array([[9.0, 0.0, 0.0], [2.5, 8.2, 0.0], [-1.5, 1.8, 8.8]])
SMALL = np.array([[3.0, 0.0, 0.0], [1.0, 2.8, 0.0], [0.5, 0.7, 3.1]])


def _system(name):
    """(positions, cell, pbc, cutoff) of the named test system."""
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    if name == "triclinic-periodic":
        return rng.random((40, 3)) @ TRICLINIC, TRICLINIC, True, 4.5
    if name == "small-cell":  # cell much smaller than 2*cutoff: many images, self-images
        return rng.random((3, 3)) @ SMALL, SMALL, True, 5.0
    if name == "single-atom-cell":
        return np.array([[0.3, 0.2, 0.1]]), np.eye(3) * 2.5, True, 5.5
    if name == "cluster":
        return rng.random((30, 3)) * 8.0, None, False, 3.5
    if name == "mixed-pbc":
        return rng.random((25, 3)) @ SMALL * 2.0, SMALL * 2.0, [True, False, True], 4.0
    if name == "cell-not-periodic":
        return rng.random((20, 3)) @ TRICLINIC, TRICLINIC, False, 4.0
    if name == "unwrapped":  # atoms outside the cell
        return (rng.random((20, 3)) * 3.0 - 1.0) @ TRICLINIC, TRICLINIC, True, 4.0
    raise KeyError(name)


SYSTEMS = ["triclinic-periodic", "small-cell", "single-atom-cell", "cluster", "mixed-pbc", "cell-not-periodic",
           "unwrapped"]


def ase_edges(pos, cell, pbc, cutoff):
    atoms = Atoms(positions=pos, cell=cell if cell is not None else np.zeros((3, 3)), pbc=pbc,
                  numbers=np.ones(len(pos), int))
    i, j, d = ase_nl.neighbor_list("ijD", atoms, cutoff)
    return canonical(j, i, d)


def canonical(src, dst, vec):
    """Edges as a sorted list of (dst, src, rounded vec) keys, plus vec in that order."""
    vec = np.asarray(vec)
    keys = [(int(c), int(s), *np.round(v, 6)) for c, s, v in zip(dst, src, vec)]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return [keys[k][:2] for k in order], vec[order]


@pytest.mark.parametrize("system", SYSTEMS)
def test_neighbor_sets_equal_ase(backend, system):
    pos, cell, pbc, cutoff = _system(system)
    g = build_graph(backend.asarray(pos), cutoff, cell=cell, pbc=pbc)
    validate(g)
    src, dst, vec = (to_numpy(a) for a in (g.src, g.dst, g.edge_vec))
    assert type(g.edge_vec) is type(backend.asarray(pos))
    ours, ours_vec = canonical(src, dst, vec)
    ref, ref_vec = ase_edges(pos, cell, pbc, cutoff)
    assert len(ref) > 0 or system == "cluster"
    assert ours == ref
    np.testing.assert_allclose(ours_vec, ref_vec, rtol=0, atol=1e-12)
    # center-major, nearest first
    r = np.linalg.norm(vec, axis=1)
    assert np.all(np.diff(dst) >= 0)
    same = np.diff(dst) == 0
    assert np.all(np.diff(r)[same] >= 0)
    assert to_numpy(g.n_node).tolist() == [len(pos)]


@pytest.mark.parametrize("seed", range(8))
def test_random_triclinic_boxes_equal_ase(seed):
    """Random skew, size, density and cutoff: cells from well above to well
    below twice the cutoff, each periodic direction on or off at random."""
    rng = np.random.default_rng(seed)
    cell = np.diag(rng.uniform(2.5, 9.0, 3)) + np.triu(rng.uniform(-2.0, 2.0, (3, 3)), 1).T
    pbc = rng.random(3) < 0.8
    n = int(rng.integers(1, 30))
    pos = (rng.random((n, 3)) * rng.uniform(0.8, 1.5)) @ cell
    cutoff = float(rng.uniform(1.5, 6.0))
    g = build_graph(pos, cutoff, cell=cell, pbc=pbc.tolist())
    validate(g)
    ours, ours_vec = canonical(*_edges(g))
    ref, ref_vec = ase_edges(pos, cell, pbc.tolist(), cutoff)
    assert ours == ref
    np.testing.assert_allclose(ours_vec, ref_vec, rtol=0, atol=1e-12)


def test_small_cell_has_images_and_self_images():
    pos, cell, pbc, cutoff = _system("single-atom-cell")
    g = build_graph(pos, cutoff, cell=cell, pbc=pbc)
    assert np.all(g.src == 0) and np.all(g.dst == 0)
    lattice = [n for n in itertools.product(range(-3, 4), repeat=3) if 0 < 2.5 * np.linalg.norm(n) < cutoff]
    assert g.num_edges == len(lattice) == 32  # 6 + 12 + 8 + 6 images at 2.5, 3.54, 4.33, 5.0
    r = np.linalg.norm(g.edge_vec, axis=1)
    assert np.all(r > 0) and np.all(r < cutoff)


def test_isolated_atoms_and_cutoff_is_exclusive():
    pos = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [10.0, 10.0, 10.0]])
    g = build_graph(pos, 2.0)
    assert g.num_edges == 0 and g.edge_vec.shape == (0, 3) and g.n_node.tolist() == [3]
    validate(g)
    g = build_graph(pos, np.nextafter(2.0, 3.0))
    assert g.num_edges == 2 and set(g.dst.tolist()) == {0, 1}


def test_translation_and_wrapping_invariance():
    pos, cell, pbc, cutoff = _system("triclinic-periodic")
    ref_keys, ref_vec = canonical(*(a for a in _edges(build_graph(pos, cutoff, cell=cell, pbc=pbc))))
    moved = pos + np.array([0.7, -3.1, 12.4])
    images = pos + RNG.integers(-2, 3, size=(len(pos), 1)) * cell[0] + RNG.integers(-2, 3, size=(len(pos), 1)) * cell[2]
    for p in (moved, images):
        keys, vec = canonical(*_edges(build_graph(p, cutoff, cell=cell, pbc=pbc)))
        assert keys == ref_keys
        np.testing.assert_allclose(vec, ref_vec, atol=1e-11)


def _edges(g):
    return to_numpy(g.src), to_numpy(g.dst), to_numpy(g.edge_vec)


def test_torch_gradients_reach_positions_and_cell():
    torch = pytest.importorskip("torch")
    pos, cell, pbc, cutoff = _system("small-cell")
    p = torch.from_numpy(pos).requires_grad_()
    c = torch.from_numpy(cell).requires_grad_()
    g = build_graph(p, cutoff, cell=c, pbc=pbc)
    gp, gc = torch.autograd.grad(g.edge_vec.sum(0) @ torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), (p, c))
    # d/dr_k of sum_e vec_e = (#edges with src k - #edges with dst k) per axis
    counts = np.bincount(g.src.numpy(), minlength=3) - np.bincount(g.dst.numpy(), minlength=3)
    np.testing.assert_allclose(gp.numpy(), counts[:, None] * [1.0, 2.0, 3.0], atol=1e-12)
    shift = np.linalg.solve(cell.T, (g.edge_vec.detach().numpy() - (pos[g.src] - pos[g.dst])).T).T
    np.testing.assert_allclose(gc.numpy(), np.round(shift).sum(0)[:, None] * [1.0, 2.0, 3.0], atol=1e-9)


def test_sel_keeps_nearest_with_documented_tie_rule(backend):
    """fcc with a = 4 (exact binary coordinates): 12 exactly equidistant first
    neighbors; sel = 5 keeps the first five by (src, image shift)."""
    pos = fcc_positions(2, a=4.0)
    cell = np.eye(3) * 8.0
    full = build_graph(backend.asarray(pos), 3.5, cell=cell, pbc=True)
    g = build_graph(backend.asarray(pos), 3.5, cell=cell, pbc=True, sel=5)
    src, dst, vec = _edges(g)
    assert np.bincount(dst).tolist() == [5] * len(pos)
    # independent rule from ASE's list: sort by (center, distance, src, shift)
    atoms = Atoms(positions=pos, cell=cell, pbc=True, numbers=np.ones(len(pos), int))
    i, j, s, d = ase_nl.neighbor_list("ijSd", atoms, 3.5)
    order = sorted(range(len(i)), key=lambda k: (i[k], d[k], j[k], *s[k]))
    keep = [k for k in order if sum(1 for m in order if i[m] == i[k] and order.index(m) < order.index(k)) < 5]
    np.testing.assert_array_equal(src, j[keep])
    np.testing.assert_array_equal(dst, i[keep])
    # images of one atom at equal distance: ties go to the lexicographically
    # smallest integer shift (sx, sy, sz)
    one = build_graph(backend.asarray(np.array([[0.5, 0.5, 0.5]])), 3.0, cell=np.eye(3) * 2.0, pbc=True, sel=3)
    np.testing.assert_array_equal(to_numpy(one.edge_vec), [[-2.0, 0, 0], [0, -2.0, 0], [0, 0, -2.0]])
    # truncate() on the full graph is the same thing
    t = truncate(full, 5)
    np.testing.assert_array_equal(to_numpy(t.edge_index), to_numpy(g.edge_index))


def test_static_and_dense_layouts_round_trip(backend):
    pos, cell, pbc, cutoff = _system("triclinic-periodic")
    g = build_graph(backend.asarray(pos), cutoff, cell=cell, pbc=pbc)
    n, sel = len(pos), int(np.bincount(to_numpy(g.dst)).max()) + 3
    s = to_static(g, sel)
    validate(s)
    assert s.edge_vec.shape == (n * sel, 3)
    dst_s = to_numpy(s.dst)
    np.testing.assert_array_equal(dst_s, np.repeat(np.arange(n), sel))
    keep = to_numpy(s.edge_mask)
    # dropping the padding gives back the (nearest-first) graph exactly
    np.testing.assert_array_equal(to_numpy(s.edge_index)[:, keep], to_numpy(g.edge_index))
    np.testing.assert_array_equal(to_numpy(s.edge_vec)[keep], to_numpy(g.edge_vec))
    assert np.all(to_numpy(s.edge_vec)[~keep] == 0) and np.all(to_numpy(s.src)[~keep] == dst_s[~keep])
    nlist, vec, mask = (to_numpy(a) for a in to_dense(g, sel))
    assert nlist.shape == (n, sel) and vec.shape == (n, sel, 3)
    np.testing.assert_array_equal(nlist.reshape(-1)[keep], to_numpy(g.src))
    assert np.all(nlist[~mask] == -1) and np.all(vec[~mask] == 0)
    assert np.all(np.diff(np.where(mask, np.linalg.norm(vec, axis=-1), 1e300), axis=1) >= 0)  # nearest first
    with pytest.raises(ValueError, match=f"a center has {sel - 3} neighbors but sel = {sel - 4}"):
        to_static(g, sel - 4)
    # any edge order gives the same static layout (slots are sorted, not copied)
    perm = backend.asarray(RNG.permutation(g.num_edges))
    shuffled = NeighborGraph(g.edge_index[:, perm], g.edge_vec[perm], g.edge_mask[perm], g.n_node)
    s2 = to_static(shuffled, sel)
    np.testing.assert_array_equal(to_numpy(s2.edge_index), to_numpy(s.edge_index))
    np.testing.assert_array_equal(to_numpy(s2.edge_vec), to_numpy(s.edge_vec))


def test_quartet_round_trip_and_deepmd_style_extension(backend):
    pos, cell, pbc, cutoff = _system("small-cell")
    atype = np.array([0, 1, 0])
    g = build_graph(pos, cutoff, cell=cell, pbc=pbc)
    sel = int(np.bincount(g.dst).max())
    coord_ext, atype_ext, nlist, mapping = to_quartet(g, pos, atype, sel)
    a = backend.asarray
    g2, atype2 = from_dense_quartet(a(coord_ext), a(atype_ext), a(nlist), a(mapping))
    validate(g2, atype2, ntypes=2)
    np.testing.assert_array_equal(to_numpy(g2.edge_index), g.edge_index)
    np.testing.assert_allclose(to_numpy(g2.edge_vec), g.edge_vec, atol=1e-13)
    np.testing.assert_array_equal(to_numpy(atype2), atype)

    # an independent DeePMD-style extension: wrap, replicate by integer shifts,
    # brute-force distances, nearest first, -1 padding, two frames
    nnei = sel + 4
    frames = [pos, pos + RNG.normal(scale=0.1, size=pos.shape)]
    quartet = [_deepmd_like_quartet(p, cell, cutoff, nnei) for p in frames]
    coord_ext, nlist, mapping = (np.stack(x) for x in zip(*quartet))
    atype_ext = np.stack([atype[m] for m in mapping])
    gq, aq = from_dense_quartet(a(coord_ext), a(atype_ext), a(nlist), a(mapping), compact=True)
    ref = batch_graphs([build_graph(p, cutoff, cell=cell, pbc=True) for p in frames])
    assert canonical(*_edges(gq))[0] == canonical(*_edges(ref))[0]
    np.testing.assert_allclose(canonical(*_edges(gq))[1], canonical(*_edges(ref))[1], atol=1e-12)
    gs, _ = from_dense_quartet(a(coord_ext), a(atype_ext), a(nlist), a(mapping), compact=False)
    validate(gs)
    assert gs.edge_vec.shape == (2 * 3 * nnei, 3)
    np.testing.assert_array_equal(to_numpy(gs.edge_mask), nlist.reshape(-1) >= 0)


def _deepmd_like_quartet(pos, cell, rcut, nnei):
    frac = np.linalg.solve(cell.T, pos.T).T % 1.0
    pos = frac @ cell
    h = np.abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    nb = np.ceil(rcut / h).astype(int)
    shifts = sorted(itertools.product(*(range(-k, k + 1) for k in nb)), key=lambda s: np.linalg.norm(s))
    ext = np.concatenate([pos + np.array(s) @ cell for s in shifts])
    mapping = np.tile(np.arange(len(pos)), len(shifts))
    nlist = np.full((len(pos), nnei), -1)
    for i in range(len(pos)):
        d = np.linalg.norm(ext - pos[i], axis=1)
        d[i] = -1
        order = np.argsort(d, kind="stable")[1:]
        order = order[d[order] <= rcut][:nnei]
        nlist[i, : len(order)] = order
    return ext, nlist, mapping


def test_batch_graphs():
    frames = [_system("triclinic-periodic"), _system("small-cell"), _system("cluster")]
    graphs = [build_graph(p, c_, cell=c, pbc=pb) for p, c, pb, c_ in frames]
    b = batch_graphs(graphs)
    validate(b)
    assert b.n_node.tolist() == [40, 3, 30]
    np.testing.assert_array_equal(b.edge_index[:, graphs[0].num_edges:][:, : graphs[1].num_edges],
                                  graphs[1].edge_index + 40)
    with pytest.raises(ValueError, match="at least one graph"):
        batch_graphs([])


# --- forces and virials -------------------------------------------------------


def pair_energy(vec, switch_at=2.5, cutoff=4.0):
    """E = 1/2 sum_e phi(r_e), phi(r) = 3 exp(-1.3 r) (1 + cos(pi r / rc)) / 2 ... a smooth
    C1-at-cutoff pair potential; returns (E, g = dE/dvec)."""
    r = np.linalg.norm(vec, axis=1)
    a = np.pi / cutoff
    phi = 3.0 * np.exp(-1.3 * r) * 0.5 * (1 + np.cos(a * r))
    dphi = 3.0 * np.exp(-1.3 * r) * (-1.3 * 0.5 * (1 + np.cos(a * r)) - 0.5 * a * np.sin(a * r))
    return 0.5 * phi.sum(), (0.5 * dphi / r)[:, None] * vec


def test_forces_and_virial_match_finite_differences():
    pos, cell, pbc, _ = _system("triclinic-periodic")
    cutoff = 4.0

    def energy(p, c):
        return pair_energy(build_graph(p, cutoff, cell=c, pbc=pbc).edge_vec, cutoff=cutoff)[0]

    g = build_graph(pos, cutoff, cell=cell, pbc=pbc)
    force, atom_virial, virial = edge_force_virial(pair_energy(g.edge_vec, cutoff=cutoff)[1], g)
    h = 1e-5
    fd = np.zeros_like(pos)
    for k, a in itertools.product(range(len(pos)), range(3)):
        d = np.zeros_like(pos)
        d[k, a] = h
        fd[k, a] = -(energy(pos + d, cell) - energy(pos - d, cell)) / (2 * h)
    assert np.max(np.abs(force - fd)) <= 1e-7 * np.max(np.abs(fd))
    fd_w = np.zeros((3, 3))
    for a, b in itertools.product(range(3), range(3)):
        eps = np.zeros((3, 3))
        eps[a, b] = h
        up, dn = np.eye(3) + eps, np.eye(3) - eps
        fd_w[a, b] = -(energy(pos @ up.T, cell @ up.T) - energy(pos @ dn.T, cell @ dn.T)) / (2 * h)
    assert np.max(np.abs(virial[0] - fd_w)) <= 1e-7 * np.max(np.abs(fd_w))
    np.testing.assert_allclose(atom_virial.sum(0), virial[0], atol=1e-12)
    np.testing.assert_allclose(force.sum(0), 0.0, atol=1e-12)


def directional_energy(vec, c, d=np.array([0.3, -0.8, 0.5])):
    """E = sum_e c_e exp(-r_e) (d . vec_e) with fixed per-edge weights c_e: not
    rotation invariant (asymmetric virial), and the two edges of a pair carry
    different virials. Returns (E, g)."""
    r = np.linalg.norm(vec, axis=1)
    dv = vec @ d
    e = c * np.exp(-r)
    return (e * dv).sum(), e[:, None] * (d[None, :] - (dv / r)[:, None] * vec)


def test_asymmetric_virial_and_src_attribution():
    pos, cell, pbc, _ = _system("triclinic-periodic")
    cutoff = 4.0
    g = build_graph(pos, cutoff, cell=cell, pbc=pbc)
    c = 1.0 + (3 * g.src + 7 * g.dst) % 5
    grad = directional_energy(g.edge_vec, c)[1]
    force, atom_virial, virial = edge_force_virial(grad, g)
    h = 1e-5
    fd_w = np.zeros((3, 3))
    for a, b in itertools.product(range(3), range(3)):
        eps = np.zeros((3, 3))
        eps[a, b] = h
        # fixed topology: strain the edge vectors themselves
        e_up = directional_energy(g.edge_vec @ (np.eye(3) + eps).T, c)[0]
        e_dn = directional_energy(g.edge_vec @ (np.eye(3) - eps).T, c)[0]
        fd_w[a, b] = -(e_up - e_dn) / (2 * h)
    assert np.max(np.abs(fd_w - fd_w.T)) > 1e-2  # the check below can tell W from W^T
    np.testing.assert_allclose(virial[0], fd_w, rtol=0, atol=1e-7 * np.abs(fd_w).max())
    loop = np.zeros((len(pos), 3, 3))
    for e_, (s_, v_) in enumerate(zip(g.src, g.edge_vec)):
        loop[s_] -= np.outer(grad[e_], v_)
    np.testing.assert_allclose(atom_virial, loop, atol=1e-13)


def test_two_atom_case_by_hand():
    """phi(r) = k/2 (r - r0)^2 per pair, E = 1/2 sum over both directed edges.
    By hand: F_0 = k (d - r0) x, F_1 = -F_0; W_xx = -k (d - r0) d, half per atom."""
    k, r0, d = 2.0, 1.0, 1.5
    g = build_graph(np.array([[0.0, 0.0, 0.0], [d, 0.0, 0.0]]), 3.0)
    vec = g.edge_vec
    r = np.linalg.norm(vec, axis=1)
    grad = (0.5 * k * (r - r0) / r)[:, None] * vec
    force, atom_virial, virial = edge_force_virial(grad, g)
    np.testing.assert_allclose(force, [[k * (d - r0), 0, 0], [-k * (d - r0), 0, 0]], atol=1e-15)
    expect = np.zeros((3, 3))
    expect[0, 0] = -k * (d - r0) * d
    np.testing.assert_allclose(virial[0], expect, atol=1e-15)
    np.testing.assert_allclose(atom_virial, [expect / 2, expect / 2], atol=1e-15)


def test_padding_edges_contribute_nothing_and_frames_separate(backend):
    frames = [_system("triclinic-periodic"), _system("small-cell")]
    graphs = [build_graph(p, c_, cell=c, pbc=pb) for p, c, pb, c_ in frames]
    separate = [edge_force_virial(pair_energy(g.edge_vec)[1], g) for g in graphs]
    b = batch_graphs(graphs)
    s = to_static(b, 90)
    grad = pair_energy(np.where(s.edge_mask[:, None], s.edge_vec, 1.0))[1]
    grad[~s.edge_mask] = np.array([np.nan, np.inf, -np.inf])
    a = backend.asarray
    s_x = NeighborGraph(a(s.edge_index), a(s.edge_vec), a(s.edge_mask), a(s.n_node))
    force, atom_virial, virial = (to_numpy(x) for x in edge_force_virial(a(grad), s_x))
    np.testing.assert_allclose(force, np.concatenate([f for f, _, _ in separate]), atol=1e-13)
    np.testing.assert_allclose(virial, np.concatenate([v for _, _, v in separate]), atol=1e-12)


# --- bad input ----------------------------------------------------------------


def _good():
    g = build_graph(_system("triclinic-periodic")[0], 4.0, cell=TRICLINIC, pbc=True)
    return g, np.zeros(40, dtype=np.int64)


def test_validate_accepts_good_graph():
    g, atype = _good()
    validate(g, atype, ntypes=1)
    validate(to_static(g, 80), atype, ntypes=1)


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda g, t: (g.replace(edge_index=g.edge_index[0]), t), r"edge_index must have shape \(2, E\)"),
        (lambda g, t: (g.replace(edge_index=g.edge_index.astype(float)), t), "edge_index must have an integer dtype"),
        (lambda g, t: (g.replace(edge_vec=g.edge_vec[:, :2]), t), r"edge_vec must have shape \(E, 3\)"),
        (lambda g, t: (g.replace(edge_vec=g.edge_vec.astype(int)), t), "edge_vec must have a real floating dtype"),
        (lambda g, t: (g.replace(edge_mask=g.edge_mask[1:]), t), r"edge_mask must have shape \(E,\)"),
        (lambda g, t: (g.replace(edge_mask=g.edge_mask.astype(int)), t), "edge_mask must have dtype bool"),
        (lambda g, t: (g.replace(n_node=np.array([40.0])), t), "n_node must be a 1-D integer array"),
        (lambda g, t: (g.replace(n_node=np.array([41, -1])), t), "n_node must be >= 0"),
        (lambda g, t: (g, t[1:]), r"atype has 39 entries but the graph has sum\(n_node\) = 40 nodes"),
        (lambda g, t: (g, t.astype(float)), "atype must be a 1-D integer array"),
        (lambda g, t: (g, t - 1), "atype must be >= 0"),
        (lambda g, t: (g, t + 1), "atype must be < ntypes = 1"),
        (lambda g, t: (g.replace(edge_index=g.edge_index + 1), t), r"edge_index out of range: values span \[1, 40\]"),
        (lambda g, t: (g.replace(n_node=np.array([20, 20])), t), "joins two frames"),
        (lambda g, t: (g.replace(edge_vec=_put(g.edge_vec, 3, np.nan)), t), "edge_vec holds NaN or inf on real edge 3"),
        (lambda g, t: (g.replace(edge_mask=_put(g.edge_mask, 5, False)), t), "masked edge 5 has a non-zero edge_vec"),
        (lambda g, t: ("graph", t), "graph must be a NeighborGraph"),
    ],
)
def test_validate_errors(change, match):
    g, atype = change(*_good())
    with pytest.raises((TypeError, ValueError), match=match):
        validate(g, atype, ntypes=1)


def _put(a, i, v):
    a = a.copy()
    a[i] = v
    return a


def test_validate_rejects_mixed_libraries():
    torch = pytest.importorskip("torch")
    g, atype = _good()
    with pytest.raises(TypeError, match="one library"):
        validate(g.replace(edge_vec=torch.from_numpy(g.edge_vec)), atype)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(positions=np.zeros((4, 2))), r"positions must have shape \(N, 3\)"),
        (dict(positions=np.zeros((4, 3), dtype=np.int64)), "positions must have a real floating dtype"),
        (dict(positions=np.array([[0.0, 0, 0], [np.nan, 0, 0]])), r"positions holds NaN or inf \(atom 1\)"),
        (dict(cutoff=0.0), "cutoff must be a positive number"),
        (dict(cutoff=-1.0), "cutoff must be a positive number"),
        (dict(pbc=True), "pbc is True in some direction but no cell was given"),
        (dict(pbc=True, cell=np.ones((3, 3))), "cell is degenerate"),
        (dict(cell=np.eye(2)), r"cell must have shape \(3, 3\)"),
        (dict(pbc=[True, False], cell=np.eye(3)), "pbc must be a bool or three bools"),
        (dict(sel=0), "sel must be a positive integer"),
    ],
)
def test_build_graph_bad_input(kwargs, match):
    args = dict(positions=np.zeros((4, 3)) + np.arange(4)[:, None], cutoff=2.0)
    args.update(kwargs)
    with pytest.raises((TypeError, ValueError), match=match):
        build_graph(args.pop("positions"), args.pop("cutoff"), **args)


def test_poisoned_padding_gradient_stays_out_of_backward():
    """Backward through the assembly (as force/virial training does): NaN in g on
    padding edges gives zero, finite gradients w.r.t. g and edge_vec."""
    torch = pytest.importorskip("torch")
    g0 = to_static(build_graph(_system("small-cell")[0], 5.0, cell=SMALL, pbc=True), 80)
    vec = torch.from_numpy(g0.edge_vec).requires_grad_()
    mask = torch.from_numpy(g0.edge_mask)
    graph = NeighborGraph(torch.from_numpy(g0.edge_index), vec, mask, torch.from_numpy(g0.n_node))
    grad = (vec * 0.3).detach().clone()
    grad[~mask] = float("nan")
    grad.requires_grad_()
    force, atom_virial, virial = edge_force_virial(grad, graph)
    d_grad, d_vec = torch.autograd.grad(force.square().sum() + virial.sum(), (grad, vec))
    assert torch.isfinite(d_grad).all() and torch.isfinite(d_vec).all()
    assert torch.all(d_grad[~mask] == 0) and torch.all(d_vec[~mask] == 0)
