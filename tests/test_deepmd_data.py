"""DeePMD-kit systems as training data: the reader against its writer, dpdata's files and DeePMD-kit's reader."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ase")
pytest.importorskip("h5py")
from ase.calculators.emt import EMT  # noqa: E402
from ase.cluster import Icosahedron  # noqa: E402

from graphdesc.safe_io import UnsafeFileError  # noqa: E402
from graphdesc.train import Dataset, emt_dataset  # noqa: E402
from graphdesc.train.deepmd_data import find_systems, read_systems, write_systems  # noqa: E402


@pytest.fixture(scope="module")
def frames():
    """Mixed-type periodic frames (32 atoms, Al on random sites) and non-periodic Cu clusters (13 atoms)."""
    rng = np.random.default_rng(5)
    clusters = []
    for _ in range(3):
        atoms = Icosahedron("Cu", 2, latticeconstant=3.61)
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        atoms.calc = EMT()
        clusters.append(atoms)
    periodic = emt_dataset(6, seed=2)
    return Dataset(periodic.frames + Dataset.from_atoms(clusters, periodic.type_map).frames, periodic.type_map)


def _same(a: Dataset, b: Dataset):
    """Equal frames, bit for bit (order within each kind of system kept)."""
    assert len(a) == len(b) and a.type_map == b.type_map
    key = lambda f: (f.natoms, f.energy)  # noqa: E731
    for x, y in zip(sorted(a.frames, key=key), sorted(b.frames, key=key)):
        assert np.array_equal(x.atype, y.atype) and np.array_equal(x.positions, y.positions)
        assert x.energy == y.energy and np.array_equal(x.forces, y.forces) and x.pbc == y.pbc
        assert (x.virial is None and y.virial is None) or np.array_equal(x.virial, y.virial)
        assert (x.cell is None and y.cell is None) or np.array_equal(x.cell, y.cell)


@pytest.mark.parametrize("fmt", ["npy", "hdf5"])
def test_round_trip(frames, tmp_path, fmt):
    target = tmp_path / ("data.h5" if fmt == "hdf5" else "data")
    names = write_systems(frames, target, fmt=fmt, set_size=4)  # several sets per system
    assert names == ["nopbc-13", "pbc-32"]
    _same(read_systems(target), frames)
    if fmt == "npy":
        assert (target / "pbc-32" / "set.001" / "real_atom_types.npy").exists()  # mixed: Al sites differ
        assert not (target / "nopbc-13" / "set.000" / "real_atom_types.npy").exists()  # one type sequence
        for source in ([target / "pbc-32", target / "nopbc-13"], str(target / "*")):
            _same(read_systems(source), frames)
    else:
        assert len(read_systems(f"{target}#/pbc-32")) == 6


def test_dpdata_written_systems(frames, tmp_path):
    """Systems written by dpdata (DeePMD-kit's data tool) in the npy, mixed and HDF5 formats read back
    to the source frames: positions, cells and energies exactly, forces and virials to 1e-12."""
    dpdata = pytest.importorskip("dpdata", reason="dpdata is in graphdesc[test]; pip install dpdata")
    systems = dpdata.MultiSystems(*[dpdata.LabeledSystem(a, fmt="ase/structure") for a in frames.to_atoms()
                                    if a.pbc.all()])
    systems.to("deepmd/npy", tmp_path / "npy")
    systems.to("deepmd/npy/mixed", tmp_path / "mixed")
    systems.to("deepmd/hdf5", tmp_path / "data.h5")
    want = Dataset([f for f in frames.frames if all(f.pbc)], frames.type_map)
    for source in (tmp_path / "npy", tmp_path / "mixed", tmp_path / "data.h5"):
        got = read_systems(source, type_map=frames.type_map)
        assert len(got) == len(want), source
        for g in got.frames:
            w = next(f for f in want.frames if f.energy == g.energy)
            # dpdata may reorder atoms (by type): compare atom by atom after sorting both
            order_g = np.lexsort(np.c_[g.positions, g.atype].T)
            order_w = np.lexsort(np.c_[w.positions, w.atype].T)
            assert np.array_equal(g.atype[order_g], w.atype[order_w])
            assert np.array_equal(g.positions[order_g], w.positions[order_w])
            assert np.array_equal(g.cell, w.cell)
            np.testing.assert_allclose(g.forces[order_g], w.forces[order_w], rtol=0, atol=1e-12)
            np.testing.assert_allclose(g.virial, w.virial, rtol=1e-12, atol=1e-12)


def test_deepmd_kit_reader_agrees(frames, tmp_path):
    """DeePMD-kit's own reader (deepmd.utils.data.DeepmdData) sees the same numbers in the files
    graphdesc writes, mixed and standard, npy and HDF5."""
    pytest.importorskip("deepmd", reason="deepmd-kit is in graphdesc[test]")
    from deepmd.utils.data import DeepmdData

    write_systems(frames, tmp_path / "npy")
    write_systems(frames, tmp_path / "data.h5", fmt="hdf5")
    for source in (tmp_path / "npy" / "pbc-32", tmp_path / "npy" / "nopbc-13", f"{tmp_path / 'data.h5'}#/pbc-32"):
        ours = read_systems(source).frames
        theirs = DeepmdData(str(source), type_map=list(frames.type_map), sort_atoms=False, shuffle_test=False)
        for key, ndof, atomic in (("energy", 1, False), ("force", 3, True), ("virial", 9, False)):
            theirs.add(key, ndof, atomic=atomic, must=False, high_prec=True)
        for i, f in enumerate(ours):
            item = theirs.get_item_torch(i)
            assert np.array_equal(item["coord"].reshape(-1, 3), f.positions)
            assert np.array_equal(item["atype"], f.atype)
            assert item["energy"][0] == f.energy
            assert np.array_equal(item["force"].reshape(-1, 3), f.forces)
            if f.virial is not None:
                assert np.array_equal(item["virial"].reshape(3, 3), f.virial)


def test_type_map_from_the_model(frames, tmp_path):
    """A given type_map renumbers the types; a missing element is named."""
    write_systems(frames, tmp_path / "d")
    data = read_systems(tmp_path / "d", type_map=["Cu", "Al", "Ni"])
    assert data.type_map == ("Cu", "Al", "Ni")
    back = read_systems(tmp_path / "d")
    assert all(np.array_equal(np.array(["Cu", "Al", "Ni"])[a.atype], np.array(back.type_map)[b.atype])
               for a, b in zip(data.frames, back.frames))
    with pytest.raises(ValueError, match=r"holds types \['Al'\] that are not in type_map \['Cu'\]"):
        read_systems(tmp_path / "d" / "pbc-32", type_map=["Cu"])


def test_bad_systems(frames, tmp_path):
    write_systems(frames, tmp_path / "d")
    sys_dir = tmp_path / "d" / "pbc-32"
    (sys_dir / "set.000" / "energy.npy").rename(tmp_path / "energy.npy")
    with pytest.raises(ValueError, match=r"pbc-32/set.000 has no energy.npy \(graphdesc trains on energies\)"):
        read_systems(sys_dir)
    (tmp_path / "energy.npy").rename(sys_dir / "set.000" / "energy.npy")
    np.save(sys_dir / "set.000" / "fparam.npy", np.zeros((6, 1)))
    with pytest.raises(ValueError, match=r"set.000 holds \['fparam.npy'\]: frame/atom parameters"):
        read_systems(sys_dir)
    (sys_dir / "set.000" / "fparam.npy").unlink()
    np.save(sys_dir / "set.000" / "force.npy", np.zeros((6, 95)))
    with pytest.raises(ValueError, match=r"force.npy has shape \(6, 95\), which does not fit 32 atoms"):
        read_systems(sys_dir)
    coord = np.load(sys_dir / "set.000" / "coord.npy")
    coord[2, 4] = np.nan
    np.save(sys_dir / "set.000" / "force.npy", np.zeros((6, 96)))
    np.save(sys_dir / "set.000" / "coord.npy", coord)
    with pytest.raises(ValueError, match=r"pbc-32/set.000 frame 2 has NaN or inf positions"):
        read_systems(sys_dir)
    np.save(sys_dir / "set.000" / "coord.npy", np.array([object()] * 6))
    with pytest.raises(ValueError, match=r"coord.npy: not a plain numeric .npy array") as err:
        read_systems(sys_dir)
    assert "allow_pickle" not in str(err.value)
    np.save(sys_dir / "set.000" / "coord.npy", np.nan_to_num(coord, nan=0.5))
    (sys_dir / "type_map.raw").unlink()
    with pytest.raises(ValueError, match="has no type_map.raw: give type_map"):
        read_systems(sys_dir)
    with pytest.raises(FileNotFoundError, match="no DeePMD-kit system matches the pattern"):
        find_systems(str(tmp_path / "nothing-*"))
    with pytest.raises(ValueError, match="no type.raw in it or below it"):
        find_systems(tmp_path / "d" / "pbc-32" / "set.000")


def test_hdf5_links_refused(frames, tmp_path):
    import h5py

    write_systems(frames, tmp_path / "data.h5", fmt="hdf5")
    with h5py.File(tmp_path / "data.h5", "a") as f:
        f["elsewhere"] = h5py.ExternalLink("/etc/passwd.h5", "/x")
    with pytest.raises(UnsafeFileError, match="elsewhere is a ExternalLink"):
        read_systems(tmp_path / "data.h5")
    with h5py.File(tmp_path / "data.h5", "a") as f:
        del f["elsewhere"]
        del f["pbc-32/set.000/energy.npy"]
        f["pbc-32/set.000/energy.npy"] = h5py.SoftLink("/nopbc-13/set.000/energy.npy")
    with pytest.raises(UnsafeFileError, match="energy.npy' is a SoftLink"):
        read_systems(tmp_path / "data.h5")


def test_cli_trains_on_systems(frames, tmp_path, capsys):
    """``graphdesc train SYSTEMS... --val SYSTEMS`` trains on the systems as read (no extxyz round trip)."""
    pytest.importorskip("torch")
    from graphdesc.cli import main
    from graphdesc.model.checkpoint import load_model

    train_set, val_set = frames.split(0.3, seed=1)
    write_systems(train_set, tmp_path / "train", set_size=3)
    write_systems(val_set, tmp_path / "val.h5", fmt="hdf5")
    status = main(["train", str(tmp_path / "train" / "pbc-32"), str(tmp_path / "train" / "nopbc-13"),
                   "--val", str(tmp_path / "val.h5"), "--preset", "small", "--rcut", "4.5", "--steps", "3",
                   "--batch-size", "2", "-o", str(tmp_path / "run"), "--no-progress"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert f"train: {train_set.summary()}" in out and f"val:   {val_set.summary()}" in out
    assert not (tmp_path / "run" / "train.extxyz").exists()
    assert load_model(tmp_path / "run" / "checkpoint.npz")[2]["step"] == 3


def test_mixed_format_drops_padding_atoms(frames, tmp_path):
    """In the mixed format an atom of type -1 is padding (DeePMD-kit pads smaller frames): it is dropped,
    with its coordinates and forces, whatever they hold."""
    periodic = Dataset([f for f in frames.frames if all(f.pbc)], frames.type_map)
    write_systems(periodic, tmp_path / "d")
    sset = tmp_path / "d" / "pbc-32" / "set.000"
    types = np.load(sset / "real_atom_types.npy")
    coord, force = np.load(sset / "coord.npy").reshape(len(types), 32, 3), np.load(sset / "force.npy")
    types[0, 5] = -1
    coord[0, 5] = np.nan  # poison: a dropped atom must not reach the geometry checks
    np.save(sset / "real_atom_types.npy", types)
    np.save(sset / "coord.npy", coord.reshape(len(types), -1))
    got = read_systems(tmp_path / "d")
    first = got.frames[0]
    assert first.natoms == 31 and got.frames[1].natoms == 32
    keep = np.arange(32) != 5
    assert np.array_equal(first.positions, periodic.frames[0].positions[keep])
    assert np.array_equal(first.forces, force[0].reshape(32, 3)[keep])
    assert np.array_equal(first.atype, periodic.frames[0].atype[keep])
