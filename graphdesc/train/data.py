"""Labelled frames for training: read from any ASE-readable file, checked on the way in.

A :class:`Frame` is one structure with its labels (energy, optionally forces
and virial); a :class:`Dataset` is a list of frames with a ``type_map``
(element symbol of each model type). Labels follow DeePMD-kit's conventions:
energies in eV, forces in eV/Å, ``virial = -stress * volume`` in eV (ASE's
stress sign), so a model's ``virial`` output is compared directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..graph import check_min_distance

__all__ = ["Frame", "Dataset"]


@dataclass(frozen=True)
class Frame:
    """One labelled structure.

    Attributes:
        positions: ``(N, 3)`` float64, Å.
        atype: ``(N,)`` int64 model types (indices into the dataset's ``type_map``).
        cell: ``(3, 3)`` float64 lattice vectors as rows, or None.
        pbc: three bools.
        energy: total energy, eV.
        forces: ``(N, 3)`` float64 eV/Å, or None when the frame has none.
        virial: ``(3, 3)`` float64 eV (``-stress * volume``), or None.
    """

    positions: np.ndarray
    atype: np.ndarray
    cell: np.ndarray | None
    pbc: tuple
    energy: float
    forces: np.ndarray | None = None
    virial: np.ndarray | None = None

    @property
    def natoms(self) -> int:
        return len(self.atype)


class Dataset:
    """Labelled frames and the element symbol of each model type.

    Args:
        frames: :class:`Frame` s (at least one).
        type_map: element symbols, one per model type; every ``atype`` must
            index into it.

    Build one with :meth:`from_atoms` (ASE ``Atoms`` carrying a calculator or
    ``info``/``arrays`` labels) or :meth:`read` (any file ``ase.io.read``
    reads: extxyz, VASP OUTCAR/vasprun, ...).
    """

    def __init__(self, frames, type_map):
        self.frames = list(frames)
        self.type_map = tuple(type_map)
        if not self.frames:
            raise ValueError("the dataset is empty: it needs at least one frame")
        if not self.type_map:
            raise ValueError("type_map must name at least one element")
        for k, frame in enumerate(self.frames):
            if not isinstance(frame, Frame):
                raise TypeError(f"frames[{k}] must be a Frame, got {type(frame).__name__}")
            if frame.natoms and (frame.atype.min() < 0 or frame.atype.max() >= len(self.type_map)):
                raise ValueError(f"frames[{k}] has atom types outside [0, {len(self.type_map)}) of "
                                 f"type_map {list(self.type_map)}")

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Dataset(self.frames[index], self.type_map)
        return self.frames[index]

    def subset(self, indices) -> Dataset:
        """The frames at ``indices``, in that order."""
        return Dataset([self.frames[int(i)] for i in indices], self.type_map)

    def split(self, val_fraction: float = 0.1, *, seed: int = 0) -> tuple[Dataset, Dataset]:
        """``(train, validation)``: a random ``val_fraction`` of the frames (at least one each) for validation."""
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        if len(self) < 2:
            raise ValueError(f"cannot split a dataset of {len(self)} frame into training and validation")
        order = np.random.default_rng(seed).permutation(len(self))
        n_val = min(max(1, round(val_fraction * len(self))), len(self) - 1)
        return self.subset(np.sort(order[n_val:])), self.subset(np.sort(order[:n_val]))

    @property
    def has_forces(self) -> bool:
        """Every frame has forces."""
        return all(f.forces is not None for f in self.frames)

    @property
    def has_virial(self) -> bool:
        """At least one frame has a virial."""
        return any(f.virial is not None for f in self.frames)

    def require(self, label: str, reason: str) -> None:
        """Raise a ``ValueError`` naming the first frame without ``label`` ("forces" or "virial")."""
        missing = [k for k, f in enumerate(self.frames) if getattr(f, label) is None]
        if label == "virial" and len(missing) < len(self.frames):
            return  # frames without a virial are left out of the virial loss
        if missing:
            raise ValueError(f"{reason}, but frame {missing[0]} of {len(self)} has no {label} "
                             f"({len(missing)} frames lack them)")

    def summary(self) -> str:
        atoms = sum(f.natoms for f in self.frames)
        counts = np.bincount(np.concatenate([f.atype for f in self.frames]), minlength=len(self.type_map))
        elements = ", ".join(f"{s} {c}" for s, c in zip(self.type_map, counts))
        labels = ["energy"] + (["forces"] if self.has_forces else []) + (
            [f"virial ({sum(f.virial is not None for f in self.frames)} frames)"] if self.has_virial else [])
        return f"{len(self)} frames, {atoms} atoms ({elements}); labels: {', '.join(labels)}"

    # -- construction ------------------------------------------------------------------------------------
    @classmethod
    def from_atoms(cls, images, type_map=None) -> Dataset:
        """Frames from ASE ``Atoms``.

        Labels come from the attached calculator (``get_potential_energy``,
        ``get_forces``, ``get_stress`` for fully periodic cells) or, without
        one, from ``info["energy"]``, ``arrays["forces"]`` and
        ``info["virial"]`` / ``info["stress"]``. A frame without an energy is
        an error; forces and virial are optional.

        Args:
            images: an ``Atoms`` or a list of them.
            type_map: element symbols, one per model type; default the
                elements present, sorted by atomic number.
        """
        from ase import Atoms

        images = [images] if isinstance(images, Atoms) else list(images)
        if not images:
            raise ValueError("the dataset is empty: no frames were given")
        present = sorted({int(z) for atoms in images for z in atoms.numbers})
        if type_map is None:
            from ase.data import chemical_symbols

            type_map = [chemical_symbols[z] for z in present]
        type_of = _type_lookup(type_map)
        frames = []
        for k, atoms in enumerate(images):
            if not isinstance(atoms, Atoms):
                raise TypeError(f"images[{k}] must be an ase.Atoms, got {type(atoms).__name__}")
            unknown = sorted({s for s, z in zip(atoms.get_chemical_symbols(), atoms.numbers) if z not in type_of})
            if unknown:
                raise ValueError(f"frame {k} holds elements {unknown} that are not in type_map {list(type_map)}")
            frames.append(_frame(k, atoms, np.array([type_of[z] for z in atoms.numbers], dtype=np.int64)))
        return cls(frames, type_map)

    @classmethod
    def read(cls, path, type_map=None, *, index=":") -> Dataset:
        """Frames from a file ``ase.io.read`` understands (extxyz, OUTCAR, ...); see :meth:`from_atoms`."""
        from ase.io import read

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"dataset file {str(path)!r} does not exist")
        if not path.is_file():
            raise ValueError(f"dataset {str(path)!r} is not a file")
        try:
            images = read(path, index=index)
        except Exception as err:  # ASE raises many kinds (ValueError, StopIteration, IndexError, its own)
            raise ValueError(f"cannot read dataset file {str(path)!r} with ase.io.read: "
                             f"{type(err).__name__}: {err}") from None
        images = images if isinstance(images, list) else [images]
        if not images:
            raise ValueError(f"the dataset is empty: {str(path)!r} holds no frames")
        return cls.from_atoms(images, type_map)

    def write(self, path) -> None:
        """Write the frames with their labels as extended XYZ (readable by :meth:`read`)."""
        from ase.io import write

        write(path, self.to_atoms(), format="extxyz")

    def to_atoms(self) -> list:
        """ASE ``Atoms`` carrying the labels in a single-point calculator."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator
        from ase.stress import full_3x3_to_voigt_6_stress

        out = []
        for f in self.frames:
            atoms = Atoms([self.type_map[t] for t in f.atype], positions=f.positions, pbc=f.pbc,
                          cell=f.cell if f.cell is not None else np.zeros((3, 3)))
            results = {"energy": f.energy}
            if f.forces is not None:
                results["forces"] = f.forces
            if f.virial is not None:
                results["stress"] = full_3x3_to_voigt_6_stress(-f.virial / atoms.get_volume())
            atoms.calc = SinglePointCalculator(atoms, **results)
            out.append(atoms)
        return out


def _type_lookup(type_map) -> dict:
    from ase.data import atomic_numbers

    if isinstance(type_map, str) or not all(isinstance(s, str) for s in type_map):
        raise ValueError(f"type_map must be a list of element symbols, got {type_map!r}")
    lookup = {}
    for t, symbol in enumerate(type_map):
        if symbol not in atomic_numbers:
            raise ValueError(f"type_map entry {symbol!r} is not an element symbol")
        if atomic_numbers[symbol] in lookup:
            raise ValueError(f"type_map lists {symbol!r} twice")
        lookup[atomic_numbers[symbol]] = t
    return lookup


def _frame(k, atoms, atype) -> Frame:
    """One Frame from an Atoms, with clear errors for missing or malformed labels."""
    from ase.calculators.calculator import PropertyNotImplementedError
    from ase.stress import voigt_6_to_full_3x3_stress

    pbc = tuple(bool(p) for p in atoms.pbc)
    cell = np.asarray(atoms.cell, dtype=np.float64)
    if not any(pbc) and abs(np.linalg.det(cell)) <= 1e-12:
        cell = None

    def label(getter, fallback):
        if atoms.calc is not None:
            try:
                return getter()
            except PropertyNotImplementedError:  # a single-point result without it: look for stored labels
                pass
        return fallback()

    energy = label(atoms.get_potential_energy, lambda: atoms.info.get("energy"))
    if energy is None:
        raise ValueError(f"frame {k} has no energy (no calculator result and no info['energy'])")
    forces = label(atoms.get_forces, lambda: atoms.arrays.get("forces"))
    virial = None
    if "virial" in atoms.info:
        virial = np.asarray(atoms.info["virial"], dtype=np.float64).reshape(3, 3)
    elif all(pbc):
        stress = label(lambda: atoms.get_stress(voigt=False), lambda: atoms.info.get("stress"))
        if stress is not None:
            stress = np.asarray(stress, dtype=np.float64)
            stress = voigt_6_to_full_3x3_stress(stress) if stress.shape == (6,) else stress.reshape(3, 3)
            virial = -stress * atoms.get_volume()
    return checked_frame(f"frame {k}", atoms.positions, atype, cell, pbc, energy, forces, virial)


def checked_frame(name: str, positions, atype, cell, pbc, energy, forces=None, virial=None) -> Frame:
    """A :class:`Frame`, after the checks every reader applies; errors start with ``name``.

    Refused: no atoms, NaN/inf positions or labels, a degenerate periodic cell,
    atoms closer than :data:`graphdesc.graph.MIN_DISTANCE`, labels of the wrong shape.
    """
    positions = np.asarray(positions, dtype=np.float64)
    n = len(positions)
    if n == 0:
        raise ValueError(f"{name} has no atoms (per-atom losses divide by the atom count)")
    if not np.isfinite(positions).all():
        raise ValueError(f"{name} has NaN or inf positions")
    pbc = tuple(bool(p) for p in pbc)
    if cell is not None:
        cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
        if any(pbc) and abs(np.linalg.det(cell)) < 1e-12:
            raise ValueError(f"{name} is periodic but its cell is degenerate")
    elif any(pbc):
        raise ValueError(f"{name} is periodic but has no cell")
    check_min_distance(positions, cell=cell, pbc=pbc, name=name)
    energy = float(energy)
    if forces is not None:
        forces = np.asarray(forces, dtype=np.float64)
        if forces.shape != (n, 3):
            raise ValueError(f"{name}: forces must have shape ({n}, 3), got {forces.shape}")
    if virial is not None:
        virial = np.asarray(virial, dtype=np.float64).reshape(3, 3)
    for label, value in (("energy", energy), ("forces", forces), ("virial", virial)):
        if value is not None and not np.isfinite(value).all():
            raise ValueError(f"{name} has a non-finite {label} label")
    return Frame(positions, np.asarray(atype, dtype=np.int64), cell, pbc, energy, forces, virial)
