"""ASE calculator over an eager :class:`~graphdesc.torch.EnergyModel` or a ``.pt2`` package.

Example::

    from graphdesc.ase import Calculator
    atoms.calc = Calculator("model.npz")       # a checkpoint, a .pt2 package, or an EnergyModel
    atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()

The graph is rebuilt on every call with :func:`graphdesc.graph.build_graph`
(O(N) cell list, periodic images included). Atom types come from the model's
``type_map`` (element symbols) or from ``type_map=`` given here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator as _AseCalculator
from ase.calculators.calculator import PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from .graph import build_graph
from .graph.container import NeighborGraph

__all__ = ["Calculator"]


class Calculator(_AseCalculator):
    """Energy, forces, per-atom energies and stress from a graphdesc model.

    Args:
        model_or_package_path: an :class:`~graphdesc.torch.EnergyModel`, a
            checkpoint path (``.npz``, :meth:`~graphdesc.torch.EnergyModel.save`) or a ``.pt2``
            package path (:func:`graphdesc.export.export_package`).
        type_map: element symbols, one per model type; default the model's own
            ``type_map``. Required when the model has none.
        device: where an eager model runs (default: where it is). A package
            runs on the device it was compiled for.

    Properties: ``energy``, ``free_energy`` (the same), ``energies`` (per
    atom), ``forces`` and, for fully periodic cells, ``stress`` (ASE's sign,
    ``-virial / volume``, Voigt order).
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, model_or_package_path, *, type_map=None, device=None, **kwargs):
        super().__init__(**kwargs)
        self._model, self._package = None, None
        source = model_or_package_path
        if isinstance(source, (str, Path)) and Path(source).suffix == ".pt2":
            from .export import load_package

            self._package = load_package(source)
            config = self._package.config
            self._dtype, self._device = self._package.dtype, self._package.device
        else:
            from .torch import EnergyModel

            model = EnergyModel.load(source) if isinstance(source, (str, Path)) else source
            if not isinstance(model, EnergyModel):
                raise TypeError("model_or_package_path must be an EnergyModel, a checkpoint path or a .pt2 path, "
                                f"got {type(source).__name__}")
            model = model.eval()
            if device is not None:
                model = model.to(device)
            self._model = model
            config = model.config
            first = next(model.buffers())
            self._dtype, self._device = first.dtype, first.device
        self.config = config
        names = type_map if type_map is not None else config.descriptor.type_map
        if names is None:
            raise ValueError("the model has no type_map: pass type_map=[element symbols, one per type]")
        if len(names) != config.ntypes:
            raise ValueError(f"type_map has {len(names)} entries but the model has {config.ntypes} types")
        from ase.data import atomic_numbers

        self._type_of = {}
        for t, name in enumerate(names):
            if name not in atomic_numbers:
                raise ValueError(f"type_map entry {name!r} is not an element symbol")
            self._type_of[atomic_numbers[name]] = t
        self.type_map = tuple(names)

    def _types(self, atoms) -> torch.Tensor:
        unknown = sorted({s for s, z in zip(atoms.get_chemical_symbols(), atoms.numbers) if z not in self._type_of})
        if unknown:
            raise ValueError(f"elements {unknown} are not in the model's type_map {list(self.type_map)}")
        return torch.tensor([self._type_of[z] for z in atoms.numbers], dtype=torch.int64, device=self._device)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        pbc = np.asarray(atoms.pbc, dtype=bool)
        positions = torch.as_tensor(atoms.positions, dtype=self._dtype, device=self._device)
        cell = torch.as_tensor(np.asarray(atoms.cell), dtype=self._dtype, device=self._device)
        graph = build_graph(positions, self.config.rcut, cell=cell if pbc.any() else None, pbc=pbc)
        atype = self._types(atoms)
        out = self._evaluate(graph, atype)
        energy = float(out["energy"][0].detach())
        self.results["energy"] = self.results["free_energy"] = energy
        self.results["energies"] = out["atom_energy"].detach().cpu().numpy().astype(np.float64)
        self.results["forces"] = out["force"].detach().cpu().numpy().astype(np.float64)
        if pbc.all():
            virial = out["virial"][0].detach().cpu().numpy().astype(np.float64)
            self.results["stress"] = full_3x3_to_voigt_6_stress(-virial / atoms.get_volume())
        elif "stress" in properties:
            raise PropertyNotImplementedError("stress needs a fully periodic cell (pbc all True)")

    def _evaluate(self, graph: NeighborGraph, atype) -> dict:
        if self._package is not None:
            return self._package(atype, graph.edge_index, graph.edge_vec, graph.edge_mask, graph.n_node)
        return self._model(graph, atype, create_graph=False)
