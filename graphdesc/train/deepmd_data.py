"""DeePMD-kit training data ("systems"): read them into a :class:`~graphdesc.train.Dataset`, and write them.

A system is a directory (or an HDF5 group) holding one kind of frame::

    type.raw          per-atom type index, one per line (all 0 in the mixed format)
    type_map.raw      type names, one per line (optional; else give type_map)
    nopbc             present for non-periodic frames
    set.000/coord.npy (nf, 3N) Å        box.npy (nf, 9) Å, lattice vectors as rows
            energy.npy (nf,) eV         force.npy (nf, 3N) eV/Å (optional)
            virial.npy (nf, 9) eV (optional; DeePMD's sign, the same as graphdesc's)
            real_atom_types.npy (nf, N) (mixed format: per-frame types, -1 = no atom)

The HDF5 variant stores the same names as datasets inside groups of one file
(``data.h5`` holds every system in it; ``data.h5#/path`` names one).

graphdesc reads these with its own small reader rather than ``dpdata``: the
format is a handful of ``.npy`` files, the reader is exact (float64 as
stored, no unit or sign conversion), reads ``.npy`` with
``allow_pickle=False`` and HDF5 through :func:`graphdesc.safe_io.hdf5_array`
(no links or plugins), checks every frame like any other reader
(:func:`~graphdesc.train.data.checked_frame`), and needs no extra package for
the npy format. The tests check it against systems written by dpdata
(DeePMD-kit's data tool) and against DeePMD-kit's own reader.

Frame and atom parameters (``fparam.npy``, ``aparam.npy``) are refused: a
graphdesc model takes neither. Label files graphdesc does not train on
(``atom_ener.npy``, ``atom_pref.npy``, ``dipole.npy``, ...) are read by no one,
as in DeePMD-kit when its loss does not ask for them.
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from .data import Dataset, checked_frame

__all__ = ["read_systems", "write_systems", "find_systems", "is_systems_source"]

_REFUSED = ("fparam.npy", "aparam.npy")
_H5_SUFFIXES = (".h5", ".hdf5")


def is_systems_source(source) -> bool:
    """Whether ``source`` names DeePMD-kit systems (a directory, an HDF5 file, a glob, or a list)
    rather than one ASE-readable file."""
    if isinstance(source, (list, tuple)):
        return len(source) != 1 or is_systems_source(source[0])
    text = str(source)
    path = Path(text.split("#")[0])
    return path.is_dir() or path.suffix in _H5_SUFFIXES or any(c in text for c in "*?[")


def find_systems(source) -> list:
    """The systems ``source`` names, as ``(path, group)`` pairs (``group`` None for directories).

    ``source``: a system directory; a directory searched recursively for
    ``type.raw``; an HDF5 file (every group with a ``type.raw``) or
    ``file.h5#/group``; a glob pattern (``data/*/sys-*``); or a list of these.
    """
    sources = list(source) if isinstance(source, (list, tuple)) else [source]
    if not sources:
        raise ValueError("no DeePMD-kit systems given (an empty list)")
    found = []
    for src in sources:
        text = str(src)
        if any(c in text for c in "*?[") and not Path(text).exists():
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise FileNotFoundError(f"no DeePMD-kit system matches the pattern {text!r}")
            found += find_systems(matches)
            continue
        file, _, group = text.partition("#")
        path = Path(file)
        if not path.exists():
            raise FileNotFoundError(f"DeePMD-kit system {text!r} does not exist")
        if path.suffix in _H5_SUFFIXES and path.is_file():
            found += [(path, g) for g in _h5_systems(path, group or "/")]
        elif path.is_dir():
            systems = [path] if (path / "type.raw").is_file() else sorted(p.parent for p in path.rglob("type.raw"))
            if not systems:
                raise ValueError(f"{path} is not a DeePMD-kit system: no type.raw in it or below it")
            found += [(p, None) for p in systems]
        else:
            raise ValueError(f"{text!r} is neither a DeePMD-kit system directory nor an HDF5 file (.h5/.hdf5)")
    return found


def read_systems(source, type_map=None) -> Dataset:
    """Every frame of the DeePMD-kit systems ``source`` names (see :func:`find_systems`).

    Args:
        type_map: element names, one per model type; default the names of the
            systems' ``type_map.raw`` files, sorted by atomic number. Systems
            without ``type_map.raw`` need it (their types index into it).

    Errors name the system and set (``data/sys-1/set.002: ...``).
    """
    systems = [_read_system(path, group) for path, group in find_systems(source)]
    if type_map is None:
        names = [n for _, names, _ in systems for n in (names or [])]
        if any(names_ is None for _, names_, _ in systems):
            where = next(str(label) for label, names_, _ in systems if names_ is None)
            raise ValueError(f"{where} has no type_map.raw: give type_map (the element of each type index)")
        type_map = _by_atomic_number(dict.fromkeys(names))
    type_map = [str(t) for t in type_map]
    frames = []
    for label, names, raw_frames in systems:
        names = names or type_map
        unknown = sorted(set(names) - set(type_map))
        lookup = np.array([type_map.index(n) if n in type_map else -1 for n in names], dtype=np.int64)
        for name, f in raw_frames:
            used = np.unique(f["atype"])
            if used.max(initial=0) >= len(names):
                raise ValueError(f"{name}: atom type {int(used.max())} but the system names {len(names)} types")
            if unknown and (lookup[used] < 0).any():
                raise ValueError(f"{name} holds types {unknown} that are not in type_map {type_map}")
            frames.append(checked_frame(name, f["positions"], lookup[f["atype"]], f["cell"], f["pbc"], f["energy"],
                                        f["forces"], f["virial"]))
    return Dataset(frames, type_map)


def write_systems(dataset: Dataset, path, *, fmt: str = "npy", set_size: int = 2000) -> list:
    """Write ``dataset`` as DeePMD-kit systems under ``path`` (a directory, or an HDF5 file with ``fmt="hdf5"``).

    Frames are grouped by atom count; a group whose frames share one type
    sequence is a standard system, otherwise the mixed format
    (``real_atom_types.npy``). ``force.npy``/``virial.npy`` are written when
    every frame of the group has them. Returns the system names written.
    """
    if fmt not in ("npy", "hdf5"):
        raise ValueError(f"fmt must be 'npy' or 'hdf5', got {fmt!r}")
    groups = {}
    for f in dataset.frames:
        if any(f.pbc) and not all(f.pbc):
            raise ValueError(f"DeePMD-kit systems are periodic in all three directions or none, got pbc {f.pbc}")
        groups.setdefault((f.natoms, all(f.pbc)), []).append(f)
    names, out = [], {}
    for (n, periodic), frames in sorted(groups.items()):
        name = f"{'pbc' if periodic else 'nopbc'}-{n}"
        atypes = np.stack([f.atype for f in frames])
        mixed = bool((atypes != atypes[0]).any())
        files = {"type.raw": np.zeros(n, dtype=np.int64) if mixed else atypes[0],
                 "type_map.raw": list(dataset.type_map)}
        if not periodic:
            files["nopbc"] = None
        for k, start in enumerate(range(0, len(frames), set_size)):
            part = frames[start:start + set_size]
            data = {"coord": np.stack([f.positions.reshape(-1) for f in part]),
                    "box": np.stack([(f.cell if f.cell is not None else np.zeros((3, 3))).reshape(-1) for f in part]),
                    "energy": np.array([f.energy for f in part])}
            if all(f.forces is not None for f in part):
                data["force"] = np.stack([f.forces.reshape(-1) for f in part])
            if all(f.virial is not None for f in part):
                data["virial"] = np.stack([f.virial.reshape(-1) for f in part])
            if mixed:
                data["real_atom_types"] = atypes[start:start + set_size]
            files.update({f"set.{k:03d}/{key}.npy": value for key, value in data.items()})
        out[name] = files
        names.append(name)
    (_write_hdf5 if fmt == "hdf5" else _write_npy)(Path(path), out)
    return names


# -- reading ---------------------------------------------------------------------------------------------------
class _Dir:
    """A system directory: files are read with ``allow_pickle=False``."""

    def __init__(self, path: Path):
        self.path, self.label = path, str(path)

    def has(self, name):
        return (self.path / name).exists()

    def lines(self, name):
        return (self.path / name).read_text().split()

    def sets(self):
        return sorted(p.name for p in self.path.glob("set.*") if p.is_dir())

    def array(self, name):
        try:
            return np.load(self.path / name, allow_pickle=False)
        except ValueError:  # numpy's message would suggest allow_pickle: never right for training data
            raise ValueError(f"{self.label}/{name}: not a plain numeric .npy array (an object array holds "
                             "pickled Python objects, which graphdesc does not load)") from None
        except (OSError, EOFError) as err:
            raise ValueError(f"{self.label}/{name}: corrupt or truncated .npy file ({err})") from None


class _Group:
    """A system group in an HDF5 file, read through :func:`graphdesc.safe_io.hdf5_array`."""

    def __init__(self, handle, path: Path, group: str):
        self.g, self.path, self.label = handle[group], path, f"{path}#{group}"

    def has(self, name):
        return name in self.g

    def lines(self, name):
        from ..safe_io import hdf5_array

        value = hdf5_array(self.g, name, self.label, text=True)
        return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(value)]

    def sets(self):
        return sorted(k for k in self.g if k.startswith("set."))

    def array(self, name):
        from ..safe_io import hdf5_array

        return hdf5_array(self.g, name, self.label)


def _read_system(path: Path, group):
    """``(label, type names or None, [(frame name, fields)])`` of one system."""
    if group is None:
        return _parse(_Dir(path))
    from ..safe_io import open_hdf5

    with open_hdf5(path, "DeePMD-kit HDF5 data file") as handle:
        return _parse(_Group(handle, path, group))


def _parse(src):
    label = src.label
    try:
        base_types = np.array([int(t) for t in src.lines("type.raw")], dtype=np.int64)
    except ValueError:
        raise ValueError(f"{label}/type.raw must hold one integer type per atom") from None
    names = src.lines("type_map.raw") if src.has("type_map.raw") else None
    periodic = not src.has("nopbc")
    n = len(base_types)
    if n == 0:
        raise ValueError(f"{label}/type.raw lists no atoms")
    sets = src.sets()
    if not sets:
        raise ValueError(f"{label} has no set.* directories")
    frames = []
    for s in sets:
        where = f"{label}/{s}"
        refused = [f for f in _REFUSED if src.has(f"{s}/{f}")]
        if refused:
            raise ValueError(f"{where} holds {refused}: frame/atom parameters are not supported by graphdesc models")
        for required in ("coord.npy", "energy.npy") + (("box.npy",) if periodic else ()):
            if not src.has(f"{s}/{required}"):
                raise ValueError(f"{where} has no {required}" + (" (graphdesc trains on energies)"
                                                                 if required == "energy.npy" else ""))
        coord = _shaped(src.array(f"{s}/coord.npy"), (-1, n, 3), f"{where}/coord.npy", n)
        nf = len(coord)
        fields = {"energy": _shaped(src.array(f"{s}/energy.npy"), (nf,), f"{where}/energy.npy", n),
                  "box": _shaped(src.array(f"{s}/box.npy"), (nf, 3, 3), f"{where}/box.npy", n) if periodic else None}
        for key, shape in (("force", (nf, n, 3)), ("virial", (nf, 3, 3)), ("real_atom_types", (nf, n))):
            file = f"{s}/{key}.npy"
            fields[key] = _shaped(src.array(file), shape, f"{label}/{file}", n) if src.has(file) else None
        for i in range(nf):
            atype = base_types if fields["real_atom_types"] is None else fields["real_atom_types"][i].astype(np.int64)
            real = atype >= 0  # the mixed format pads frames with type -1 atoms
            forces = None if fields["force"] is None else fields["force"][i][real]
            frames.append((f"{where} frame {i}", {
                "positions": coord[i][real], "atype": atype[real], "energy": fields["energy"][i],
                "cell": None if fields["box"] is None else fields["box"][i], "pbc": (periodic,) * 3,
                "forces": forces, "virial": None if fields["virial"] is None else fields["virial"][i]}))
    return label, names, frames


def _shaped(array, shape, name, n):
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} holds {array.dtype}, not numbers")
    try:
        return array.astype(np.float64 if array.dtype.kind == "f" else array.dtype).reshape(shape)
    except ValueError:
        raise ValueError(f"{name} has shape {array.shape}, which does not fit {n} atoms per frame "
                         f"(expected {tuple(d if d != -1 else 'nf' for d in shape)})") from None


def _h5_systems(path: Path, root: str) -> list:
    """Groups under ``root`` holding a ``type.raw`` (hard links only)."""
    import h5py

    from ..safe_io import UnsafeFileError, open_hdf5

    with open_hdf5(path, "DeePMD-kit HDF5 data file") as handle:
        if root not in handle:
            raise ValueError(f"{path} has no group {root!r}")
        found, todo = [], [root]
        while todo:
            name = todo.pop()
            group = handle[name]
            if "type.raw" in group:
                found.append(group.name)
                continue
            for key in group:
                link = group.get(key, getlink=True)
                if not isinstance(link, h5py.HardLink):
                    raise UnsafeFileError(f"{path}: refused to load: {group.name}/{key} is a "
                                          f"{type(link).__name__}, not data stored in the file")
                if isinstance(group[key], h5py.Group):
                    todo.append(f"{group.name.rstrip('/')}/{key}")
    if not found:
        raise ValueError(f"{path}#{root} holds no DeePMD-kit system (no group with a type.raw)")
    return sorted(found)


def _by_atomic_number(names) -> list:
    from ase.data import atomic_numbers

    names = list(names)
    return sorted(names, key=atomic_numbers.get) if all(n in atomic_numbers for n in names) else names


# -- writing ---------------------------------------------------------------------------------------------------
def _write_npy(root: Path, systems: dict) -> None:
    for name, files in systems.items():
        for key, value in files.items():
            target = root / name / key
            target.parent.mkdir(parents=True, exist_ok=True)
            if key.endswith(".npy"):
                np.save(target, value)
            elif key == "type_map.raw":
                target.write_text("\n".join(value) + "\n")
            elif key == "type.raw":
                target.write_text("\n".join(str(int(t)) for t in value) + "\n")
            else:
                target.touch()


def _write_hdf5(path: Path, systems: dict) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for name, files in systems.items():
            for key, value in files.items():
                if key == "type_map.raw":
                    value = np.array([v.encode() for v in value])
                f.create_dataset(f"{name}/{key}", data=np.zeros(0) if value is None else value)
