"""The ASE calculator: finite-difference forces and stress, NVE energy conservation, type mapping."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ase = pytest.importorskip("ase")
from ase.build import bulk  # noqa: E402
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution  # noqa: E402
from ase.md.verlet import VelocityVerlet  # noqa: E402
from ase.units import fs  # noqa: E402

from graphdesc.ase import Calculator  # noqa: E402
from graphdesc.descriptor import DPA1Config  # noqa: E402
from graphdesc.graph import build_graph  # noqa: E402
from graphdesc.model import EnergyConfig  # noqa: E402
from graphdesc.torch import EnergyModel  # noqa: E402

RCUT = 4.0


def cu_model(seed=1, *, output_scale=30.0) -> EnergyModel:
    """A small smooth one-type model (rcut 4, switch from 2 A) with statistics from fcc Cu.

    The fitting output layer is scaled so forces are O(1 eV/A) on a thermal
    crystal (a fresh random net gives ~0.01 eV/A): the NVE test then moves atoms.
    """
    config = EnergyConfig(DPA1Config(rcut=RCUT, rcut_smth=2.0, sel=60, ntypes=1, neuron=(8, 16), axis_neuron=4,
                                     attn=16, attn_layer=2, tebd_dim=4, type_map=["Cu"]), neuron=(32, 32))
    model = EnergyModel(config, seed=seed)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.rattle(0.1, seed=seed)
    graph = build_graph(torch.as_tensor(atoms.positions), RCUT, cell=torch.as_tensor(atoms.cell[:]), pbc=True)
    model.compute_stats([(graph, torch.zeros(len(atoms), dtype=torch.int64))])
    with torch.no_grad():
        model.params()["fitting"]["nets"][0][-1]["w"].mul_(output_scale)
    return model.eval()


def test_forces_and_stress_are_finite_differences():
    """float64: forces = -dE/dx and stress = (1/V) dE/d(strain), relative error <= 1e-6."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.1, seed=3)
    atoms.set_cell(atoms.cell[:] + np.array([[0, 0.2, 0.1], [0, 0, 0.15], [0, 0, 0]]), scale_atoms=True)
    atoms.calc = Calculator(cu_model())
    forces, stress = atoms.get_forces(), atoms.get_stress(voigt=False)
    assert np.abs(forces).max() > 0.1
    h = 1e-5
    fd = np.zeros_like(forces)
    for i in range(len(atoms)):
        for k in range(3):
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.calc = atoms.calc
                moved.positions[i, k] += sign * h
                energies.append(moved.get_potential_energy())
            fd[i, k] = -(energies[0] - energies[1]) / (2 * h)
    rel = np.abs(forces - fd).max() / np.abs(fd).max()
    print(f"force FD relative error {rel:.2e}")
    assert rel <= 1e-6
    fd_stress = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            energies = []
            for sign in (1, -1):
                eps = np.eye(3)
                eps[a, b] += sign * h
                strained = atoms.copy()
                strained.calc = atoms.calc
                strained.set_cell(atoms.cell[:] @ eps.T, scale_atoms=True)
                energies.append(strained.get_potential_energy())
            fd_stress[a, b] = (energies[0] - energies[1]) / (2 * h) / atoms.get_volume()
    rel = np.abs(stress - fd_stress).max() / np.abs(fd_stress).max()
    print(f"stress FD relative error {rel:.2e}")
    assert rel <= 1e-6


def test_nve_energy_conservation():
    """Velocity Verlet, 108 atoms of fcc Cu at 300 K, 1,000 steps of 1 fs: |E(t) - E(0)| stays small."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.calc = Calculator(cu_model())
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    e0 = atoms.get_total_energy()
    dyn = VelocityVerlet(atoms, timestep=1.0 * fs)
    drift, kinetic, fmax = [], [], 0.0
    for _ in range(20):
        dyn.run(50)
        drift.append(atoms.get_total_energy() - e0)
        kinetic.append(atoms.get_kinetic_energy())
        fmax = max(fmax, np.abs(atoms.get_forces()).max())
    drift = np.abs(drift) / len(atoms)
    print(f"max |F| {fmax:.3f} eV/A; max |E(t) - E(0)| per atom over 1000 steps: {drift.max():.2e} eV; "
          f"kinetic energy per atom {min(kinetic) / len(atoms):.4f}..{max(kinetic) / len(atoms):.4f} eV")
    assert fmax > 0.1  # atoms are pushed around: the test can fail
    assert np.ptp(kinetic) / len(atoms) > 1e-3  # potential and kinetic energy exchange
    assert drift.max() < 1e-4  # eV/atom


def test_type_map_errors():
    model = cu_model()
    with pytest.raises(ValueError, match="not in the model's type_map"):
        atoms = bulk("Al", "fcc", a=4.05)
        atoms.calc = Calculator(model)
        atoms.get_potential_energy()
    with pytest.raises(ValueError, match="1 types"):
        Calculator(model, type_map=["Cu", "Al"])
    with pytest.raises(ValueError, match="not an element symbol"):
        Calculator(model, type_map=["Xx"])
    with pytest.raises(TypeError, match="EnergyModel"):
        Calculator(42)
