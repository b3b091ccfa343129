"""The ``.pt2`` package schema: what an MD code passes in and gets back.

Schema 3 (this graphdesc writes it). Inputs, in this order (``L`` local atoms,
``G`` ghosts, ``N = L + G`` nodes, ``E`` edges, ``nf`` frames, all dynamic;
``G`` and ``E`` may be 0):

================  ===========  ============================================
``atype``         ``(L,)``     int64 types of the local atoms, in ``[0, ntypes)``
``edge_index``    ``(2, E)``   int64 ``[src, dst]`` over the ``N`` nodes; ``dst``, the
                               center, is always local (``dst < L``)
``edge_vec``      ``(E, 3)``   float, ``r_src - r_dst`` (Angstrom; with the image shift
                               when ``src`` is a periodic image rather than a ghost)
``edge_mask``     ``(E,)``     bool, False for padding edges
``n_node``        ``(nf,)``    int64 local atoms per frame, ``sum(n_node) == L``
``ghost_atype``   ``(G,)``     int64 types of the ghosts
================  ===========  ============================================

C++ callers pass contiguous tensors (the compiled program reads them with the
strides it was traced with; the Python loader makes them contiguous). Edges
may come in any order. Nodes ``[0, L)`` are the local atoms, frame after frame; nodes ``[L, N)`` are
the ghosts (halo copies of atoms owned by another domain or periodic images,
each with its own coordinates), in any order. This is LAMMPS's own layout
(``nlocal`` atoms, then ``nghost``). The types come as two inputs so that
``L`` and ``G`` are both *shapes*: the compiled program then sizes the block
stage by ``L`` without a data-dependent size, and ghosts cost only their
edges.

Outputs, a tuple in this order: ``energy (nf,)``, ``atom_energy (N,)``,
``force (N, 3)``, ``virial (nf, 3, 3)``, ``atom_virial (N, 3, 3)``. A ghost has
``atom_energy`` exactly 0, its force ``-sum g`` over the edges it is ``src`` of,
and its atom virial (``-g (x) edge_vec`` of those edges): the engine adds both
to the owner atom (reverse communication). ``energy`` and ``virial`` are the
local domain's; virial ``= -dE/d(strain)`` (DeePMD's sign). Without ghosts
(``G = 0``) the outputs are schema 1's.

Programs. A schema-3 package holds three compiled programs, ``edges``,
``block`` and ``tail`` (:mod:`graphdesc.export.stages`): the block stage runs
on chunks of centers, so only one chunk's attention activations are alive at a
time (the memory and speed of eager's chunked gradient). Callers run them as
one call through :func:`graphdesc.export.load_package` (Python) or
``graphdesc::Package`` (C++, ``graphdesc/package.hpp`` under
:func:`graphdesc.export.include_dir`); both take and return the tensors above.

Schema 2 had these inputs and outputs in one program (``model``); schema 1
(graphdesc 0.1 before ghosts) had the first five inputs only. Both loaders
still run them (schema 1 without ghosts; re-export it, ``graphdesc export
MODEL.npz -o OUT.pt2``, to pass ghosts).

The package's metadata (string to string) holds ``graphdesc.schema`` (this
module's :data:`SCHEMA_VERSION`), ``graphdesc.version``, ``graphdesc.dtype``,
``graphdesc.device``, ``graphdesc.config`` (the model's
:class:`~graphdesc.model.EnergyConfig` as JSON), ``graphdesc.inputs`` and
``graphdesc.outputs``; schema 3 adds ``graphdesc.programs``, ``graphdesc.parts``
(the names of ``edges``' outputs), ``graphdesc.grads`` (how many of them, first,
are differentiable), ``graphdesc.attn`` and ``graphdesc.chunk_elements`` (floats
in a chunk's largest temporary; 0 = all centers in one call, as on CUDA).
"""

from __future__ import annotations

__all__ = ["INPUTS", "OUTPUTS", "SCHEMA_VERSION", "META_PREFIX", "STAGES"]

SCHEMA_VERSION = 3
INPUTS = ("atype", "edge_index", "edge_vec", "edge_mask", "n_node", "ghost_atype")
OUTPUTS = ("energy", "atom_energy", "force", "virial", "atom_virial")
META_PREFIX = "graphdesc."
STAGES = ("edges", "block", "tail")
