"""Input statistics ``davg``/``dstd`` computed from data the way DeePMD-kit does (DPA1_MATH section 7)."""

from __future__ import annotations

import numpy as np

from .. import _backend as B
from ..graph.container import NeighborGraph, num_nodes
from ..graph.layout import truncate
from .config import DPA1Config
from .envmat import env_matrix

__all__ = ["compute_stats"]

STD_FLOOR = 1e-2  # DeePMD's protection: a smaller std is raised to this
STD_EMPTY = 1e-1  # std of a type with no sampled center


def compute_stats(config: DPA1Config, samples):
    """``(davg, dstd)``, each ``(ntypes, 4)`` numpy, from ``(graph, atype)`` samples.

    For each center type ``t``, over every sampled center of that type and all
    ``sel`` slots (empty slots count as zeros; each center keeps its ``sel``
    nearest neighbors, as DeePMD's neighbor list does):

    * ``davg[t] = [mean(E_r), 0, 0, 0]`` (all zero with ``set_davg_zero``);
    * ``dstd[t] = [std(E_r), std_a, std_a, std_a]``, ``std_a`` taken jointly
      over the three angular channels;

    with ``E`` the raw environment rows ``s(r) [1/(r+p), d/(r+p)^2]``. A std
    below 0.01 becomes 0.01; a type with no centers gets mean 0 and std 0.1.

    Args:
        config: the descriptor's hyperparameters.
        samples: iterable of ``(graph, atype)`` pairs (any array library): ``edge_vec`` in Å,
            ``atype (N,)`` integer.

    Returns:
        ``(davg, dstd)``, float64 numpy ``(ntypes, 4)``, in units of the rows: ``1/Å`` for
        the radial channel, ``1/Å`` for the angular ones (``d/(r+p)^2`` with ``d`` in Å).
    """
    ntypes, sel = config.ntypes, config.sel
    sums = np.zeros((ntypes, 2))  # radial, angular
    squares = np.zeros((ntypes, 2))
    centers = np.zeros(ntypes)
    for graph, atype in samples:
        if not isinstance(graph, NeighborGraph):
            raise TypeError(f"samples must yield (NeighborGraph, atype) pairs, got {type(graph).__name__}")
        types = B.to_numpy(atype)
        if num_nodes(graph) != len(types):
            raise ValueError(f"atype has {len(types)} entries but the graph has {num_nodes(graph)} nodes")
        g = truncate(graph, sel)
        env, _ = env_matrix(g.edge_vec, g.edge_mask, config)
        env = np.asarray(B.to_numpy(env), dtype=np.float64)
        ctype = types[B.to_numpy(g.dst)]
        centers += np.bincount(types, minlength=ntypes)[:ntypes]
        for channel, cols in ((0, env[:, :1]), (1, env[:, 1:])):
            sums[:, channel] += np.bincount(ctype, cols.sum(axis=1), minlength=ntypes)[:ntypes]
            squares[:, channel] += np.bincount(ctype, (cols * cols).sum(axis=1), minlength=ntypes)[:ntypes]
    count = centers[:, None] * sel * np.array([1.0, 3.0])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / count
        std = np.sqrt(np.clip(squares / count - mean * mean, 0.0, None))
    std = np.where(std < STD_FLOOR, STD_FLOOR, std)
    mean = np.where(count > 0, mean, 0.0)
    std = np.where(count > 0, std, STD_EMPTY)
    dtype = np.dtype(config.precision)
    davg = np.zeros((ntypes, 4), dtype)
    if not config.set_davg_zero:
        davg[:, 0] = mean[:, 0]
    dstd = np.concatenate([std[:, :1], np.repeat(std[:, 1:], 3, axis=1)], axis=1).astype(dtype)
    return davg, dstd
