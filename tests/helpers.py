"""Test helpers: backend conversion and brute-force references."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np
import pytest

BACKENDS = ["numpy", "torch", "jax"]

if importlib.util.find_spec("jax") is not None:
    import jax

    jax.config.update("jax_enable_x64", True)


@dataclass(frozen=True)
class Backend:
    """One array library, with converters from and to numpy."""

    name: str

    def __post_init__(self):
        if importlib.util.find_spec(self.name) is None:
            # CI installs all three (graphdesc[all]); locally a missing one skips loudly.
            pytest.skip(f"backend {self.name!r} is not installed (pip install 'graphdesc[all]')")

    def asarray(self, a):
        a = np.asarray(a)
        if self.name == "torch":
            import torch

            return torch.from_numpy(a.copy())
        if self.name == "jax":
            import jax.numpy as jnp

            return jnp.asarray(a)
        return a.copy()


def to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def brute_pairs(dst, mask, include_self, ordered):
    """All pairs (a, b) of real edges with the same center, by an O(E^2) scan, sorted."""
    dst, mask = np.asarray(dst), np.asarray(mask)
    out = []
    for a in range(len(dst)):
        for b in range(len(dst)):
            if mask[a] and mask[b] and dst[a] == dst[b]:
                if (include_self or a != b) and (ordered or a <= b):
                    out.append((a, b))
    return sorted(out)


def dense_softmax_reference(logits, ids, num_segments, mask, phantom_count=None, phantom_logit=0.0):
    """Softmax per segment on a padded (S, width) matrix in extended precision.

    Independent of graphdesc: no scatter, no segment ops. Each segment's
    unmasked logits fill a row, ``phantom_count[s]`` (an integer) copies of the
    phantom logit are appended, the rest is ``-inf`` padding. ``logits`` is
    ``(E,)`` or ``(E, F)``; ``mask`` is ``(E,)`` or the same shape as logits.
    """
    logits = np.asarray(logits, dtype=np.longdouble)
    squeeze = logits.ndim == 1
    if squeeze:
        logits = logits[:, None]
    mask = np.broadcast_to(np.asarray(mask).reshape(len(logits), -1), logits.shape)
    counts = np.zeros(num_segments, int) if phantom_count is None else np.asarray(phantom_count).astype(int)
    plog = np.broadcast_to(np.asarray(phantom_logit, dtype=np.longdouble), (num_segments,))
    out = np.zeros(logits.shape, dtype=np.longdouble)
    for f in range(logits.shape[1]):
        for s in range(num_segments):
            members = np.flatnonzero((ids == s) & mask[:, f])
            row = np.concatenate([logits[members, f], np.full(counts[s], plog[s])])
            if row.size == 0:
                continue
            e = np.exp(row - row.max())
            out[members, f] = e[: len(members)] / e.sum()
    return out[:, 0] if squeeze else out


def run_python(code: str, drop=(), stderr: bool = False, **env) -> str:
    """Run ``code`` in a fresh Python with this environment less the variables ``drop`` (this process imported
    graphdesc already, which may have set them) plus ``env``; its stripped stdout, then its stderr with
    ``stderr`` (a failing run fails the test)."""
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k not in drop}
    done = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return (done.stdout + done.stderr if stderr else done.stdout).strip()
