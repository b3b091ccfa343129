"""Built-in example data generated on the fly (no download)."""

from __future__ import annotations

import numpy as np

__all__ = ["fcc_positions", "diamond_positions", "ragged_segments"]


def fcc_positions(ncell: int, a: float = 3.61, *, jitter: float = 0.0, seed: int = 0) -> np.ndarray:
    """Positions of an ``ncell^3``-cell fcc block (``4 ncell^3`` atoms), float64 ``(N, 3)`` in Å.

    ``a`` defaults to copper's lattice constant; ``jitter`` adds Gaussian noise
    of that standard deviation (Å) to break symmetric ties.
    """
    return _lattice(_FCC, ncell, a, jitter, seed)


def diamond_positions(ncell: int, a: float = 3.567, *, jitter: float = 0.0, seed: int = 0) -> np.ndarray:
    """Positions of an ``ncell^3``-cell diamond block (``8 ncell^3`` atoms), float64 ``(N, 3)`` in Å.

    ``a`` defaults to diamond carbon's lattice constant; ``jitter`` as for :func:`fcc_positions`.
    """
    return _lattice(np.concatenate([_FCC, _FCC + 0.25]), ncell, a, jitter, seed)


_FCC = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])


def _lattice(basis, ncell, a, jitter, seed):
    cells = np.stack(np.meshgrid(*[np.arange(ncell)] * 3, indexing="ij"), -1).reshape(-1, 1, 3)
    pos = ((cells + basis) * a).reshape(-1, 3)
    if jitter:
        pos = pos + np.random.default_rng(seed).normal(scale=jitter, size=pos.shape)
    return pos


def ragged_segments(n_entries: int, mean_size: int = 64, *, seed: int = 0):
    """Segment ids for ``n_entries`` entries in ragged segments of sizes
    ``mean_size/2 .. 3 mean_size/2``, shuffled (unsorted ids).

    Returns ``(ids (E,) int64, num_segments)``.
    """
    rng = np.random.default_rng(seed)
    sizes = rng.integers(mean_size // 2, 3 * mean_size // 2 + 1, size=n_entries // max(mean_size // 2, 1) + 1)
    ids = np.repeat(np.arange(len(sizes)), sizes)[:n_entries]
    num_segments = int(ids[-1]) + 1 if n_entries else 0
    return rng.permutation(ids).astype(np.int64), num_segments
