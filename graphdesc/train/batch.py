"""Batches: several frames of a :class:`~graphdesc.train.data.Dataset` as one multi-frame torch graph.

Each frame's neighbor graph is built once (numpy, :func:`graphdesc.graph.build_graph`)
and cached; a batch concatenates the cached graphs (:func:`graphdesc.graph.batch_graphs`)
and moves them, with the labels, to the model's dtype and device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..graph import NeighborGraph, batch_graphs, build_graph
from .data import Dataset

__all__ = ["Batch", "GraphCache", "iterate_batches"]


@dataclass
class Batch:
    """Frames on one flat atom axis (``N`` atoms, ``nf`` frames).

    Attributes:
        graph: compact :class:`~graphdesc.graph.NeighborGraph`, ``n_node (nf,)``.
        atype: ``(N,)`` int64.
        natoms: ``(nf,)`` float, atoms per frame.
        energy: ``(nf,)`` labels, eV.
        force: ``(N, 3)`` labels, eV/Å, or None when a frame lacks forces.
        virial: ``(nf, 3, 3)`` labels, eV (zeros where missing), or None when no frame has one.
        virial_mask: ``(nf,)`` bool, frames with a virial label, or None.
    """

    graph: NeighborGraph
    atype: torch.Tensor
    natoms: torch.Tensor
    energy: torch.Tensor
    force: torch.Tensor | None
    virial: torch.Tensor | None
    virial_mask: torch.Tensor | None

    @property
    def num_frames(self) -> int:
        return self.energy.shape[0]

    @property
    def num_atoms(self) -> int:
        return self.atype.shape[0]


class GraphCache:
    """Neighbor graphs of a dataset's frames at cutoff ``rcut`` (Å), built on first use.

    Each frame's graph is a numpy :class:`~graphdesc.graph.NeighborGraph` (float64 ``edge_vec (E, 3)`` in Å);
    :func:`iterate_batches` converts and batches them."""

    def __init__(self, dataset: Dataset, rcut: float):
        self.dataset, self.rcut = dataset, float(rcut)
        self._graphs = {}

    def graph(self, index: int) -> NeighborGraph:
        if index not in self._graphs:
            f = self.dataset[index]
            try:
                self._graphs[index] = build_graph(f.positions, self.rcut, cell=f.cell, pbc=f.pbc)
            except ValueError as err:
                raise ValueError(f"frame {index}: {err}") from None
        return self._graphs[index]

    def max_degree(self) -> int:
        """The largest number of neighbors of any atom in the dataset (builds every graph)."""
        deg = [np.bincount(self.graph(k).dst, minlength=self.dataset[k].natoms).max(initial=0)
               for k in range(len(self.dataset))]
        return int(max(deg))

    def auto_sel(self, ratio: float = 1.1) -> int:
        """A ``sel`` for the data (DeePMD-kit's ``"auto:ratio"``): ``ratio`` x :meth:`max_degree`, rounded up to
        a multiple of 4, at least 4."""
        return max(4, 4 * math.ceil(ratio * self.max_degree() / 4))

    def batch(self, indices, *, dtype=torch.float64, device="cpu") -> Batch:
        """The frames at ``indices`` as one :class:`Batch`."""
        frames = [self.dataset[int(i)] for i in indices]
        if not frames:
            raise ValueError("a batch needs at least one frame")
        g = batch_graphs([self.graph(int(i)) for i in indices])

        def tensor(x, dt=dtype):
            return torch.as_tensor(np.asarray(x), dtype=dt, device=device)

        graph = NeighborGraph(tensor(g.edge_index, torch.int64), tensor(g.edge_vec), tensor(g.edge_mask, torch.bool),
                              tensor(g.n_node, torch.int64))
        force = None
        if all(f.forces is not None for f in frames):
            force = tensor(np.concatenate([f.forces for f in frames]))
        virial = mask = None
        if any(f.virial is not None for f in frames):
            virial = tensor(np.stack([f.virial if f.virial is not None else np.zeros((3, 3)) for f in frames]))
            mask = tensor([f.virial is not None for f in frames], torch.bool)
        return Batch(graph=graph, atype=tensor(np.concatenate([f.atype for f in frames]), torch.int64),
                     natoms=tensor([f.natoms for f in frames]), energy=tensor([f.energy for f in frames]),
                     force=force, virial=virial, virial_mask=mask)


def iterate_batches(cache: GraphCache, batch_size: int, *, shuffle: bool = False, rng=None, indices=None,
                    dtype=torch.float64, device="cpu"):
    """One pass over the dataset (or the frames ``indices``) in batches of ``batch_size`` frames
    (the last may be smaller).

    Args:
        cache: the dataset's :class:`GraphCache`.
        batch_size: frames per batch.
        shuffle: visit the frames in ``rng``'s random order.
        rng: a ``numpy.random.Generator`` (with ``shuffle``).
        indices: ``(n,)`` integer frame indices to visit (default: all, in order).
        dtype: float dtype of the geometry and labels (``torch.float64`` or ``torch.float32``).
        device: where the tensors go.

    Yields:
        :class:`Batch` es of ``nf <= batch_size`` frames: ``edge_vec (E, 3)`` in Å, ``atype (N,)`` int64,
        ``energy (nf,)`` eV, ``force (N, 3)`` eV/Å, ``virial (nf, 3, 3)`` eV."""
    order = np.arange(len(cache.dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
    if shuffle:
        order = (rng or np.random.default_rng()).permutation(order)
    for start in range(0, len(order), batch_size):
        yield cache.batch(order[start:start + batch_size], dtype=dtype, device=device)
