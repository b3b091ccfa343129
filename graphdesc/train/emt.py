"""The built-in demo dataset: Cu and Al-Cu fcc configurations labelled by ASE's EMT, made on the fly.

No download: each frame is a periodic fcc cell (``2x2x2`` conventional cells,
32 atoms) with a random fraction of Al substituted for Cu, a random strain of
up to ``strain``, and Gaussian thermal displacements whose rms per Cartesian
component is ``sqrt(k_B T / k)`` with ``k = 6 eV/Å²`` (copper's Einstein
stiffness, ``m ω²`` at ω/2π ≈ 5 THz), at a few temperatures. EMT (Jacobsen, Stoltze and Nørskov's
effective-medium theory, in ASE) gives energies, forces and stresses in ~10 ms
per frame.
"""

from __future__ import annotations

import numpy as np

from .data import Dataset

__all__ = ["emt_dataset"]

K_B = 8.617333262e-5  # eV/K
STIFFNESS = 6.0  # eV/Å^2


def emt_dataset(n_frames: int = 96, *, temperatures=(300.0, 600.0, 900.0), al_fraction=(0.0, 0.25),
                repeat: int = 2, strain: float = 0.02, seed: int = 0) -> Dataset:
    """``n_frames`` labelled EMT frames, type_map ``("Al", "Cu")``.

    Args:
        n_frames: frames to make (cycling through ``temperatures``).
        temperatures: K; displacement rms ``sqrt(k_B T / 6 eV/Å²)`` (0.066 Å at 300 K).
        al_fraction: range of the fraction of Cu sites given to Al (uniform).
        repeat: conventional fcc cells per side (4 atoms each).
        strain: the cell is multiplied by ``1 + e`` with ``e`` a symmetric
            matrix of entries uniform in ``[-strain, strain]``.
        seed: random seed; the same arguments give the same frames.
    """
    from ase.build import bulk
    from ase.calculators.emt import EMT

    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise ValueError(f"n_frames must be a positive integer, got {n_frames!r}")
    if not temperatures or any(t < 0 for t in temperatures):
        raise ValueError(f"temperatures must be non-negative kelvins, got {temperatures!r}")
    rng = np.random.default_rng(seed)
    base = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeat)
    images = []
    for k in range(n_frames):
        atoms = base.copy()
        n_al = int(round(rng.uniform(*al_fraction) * len(atoms)))
        atoms.numbers[rng.choice(len(atoms), n_al, replace=False)] = 13
        e = rng.uniform(-strain, strain, (3, 3))
        atoms.set_cell(atoms.cell[:] @ (np.eye(3) + (e + e.T) / 2), scale_atoms=True)
        temperature = temperatures[k % len(temperatures)]
        atoms.positions += rng.normal(scale=np.sqrt(K_B * temperature / STIFFNESS), size=atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_potential_energy()
        atoms.get_forces()
        atoms.get_stress()
        images.append(atoms)
    return Dataset.from_atoms(images, type_map=("Al", "Cu"))
