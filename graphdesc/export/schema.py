"""The ``.pt2`` package schema: what an MD code passes in and gets back.

Inputs, in this order (N atoms, E edges, nf frames, all dynamic; E may be 0):

=============  ===========  ===============================================
``atype``      ``(N,)``     int64 atom types in ``[0, ntypes)``
``edge_index`` ``(2, E)``   int64 ``[src, dst]``, ``dst`` the center
``edge_vec``   ``(E, 3)``   float, ``r_src + shift - r_dst`` (Angstrom)
``edge_mask``  ``(E,)``     bool, False for padding edges
``n_node``     ``(nf,)``    int64 atoms per frame, ``sum(n_node) == N``
=============  ===========  ===============================================

Outputs, a tuple in this order: ``energy (nf,)``, ``atom_energy (N,)``,
``force (N, 3)``, ``virial (nf, 3, 3)``, ``atom_virial (N, 3, 3)``; virial
``= -dE/d(strain)`` (DeePMD's sign). The package's metadata (string to
string) holds ``graphdesc.schema`` (this module's :data:`SCHEMA_VERSION`),
``graphdesc.version``, ``graphdesc.dtype``, ``graphdesc.device``,
``graphdesc.config`` (the model's :class:`~graphdesc.model.EnergyConfig` as
JSON), ``graphdesc.inputs`` and ``graphdesc.outputs``.
"""

from __future__ import annotations

__all__ = ["INPUTS", "OUTPUTS", "SCHEMA_VERSION", "META_PREFIX"]

SCHEMA_VERSION = 1
INPUTS = ("atype", "edge_index", "edge_vec", "edge_mask", "n_node")
OUTPUTS = ("energy", "atom_energy", "force", "virial", "atom_virial")
META_PREFIX = "graphdesc."
