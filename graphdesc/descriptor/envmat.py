"""The environment matrix of DPA1: smooth switch, radial and angular channels, normalization."""

from __future__ import annotations

from .. import _backend as B
from .config import DPA1Config

__all__ = ["smooth_switch", "env_matrix", "normalize_env", "unit_angular"]


def smooth_switch(r, rcut_smth: float, rcut: float):
    """DeePMD's 5th-order switch: 1 for ``r <= rcut_smth``, 0 for ``r >= rcut``, C2 in between.

    ``u = clip((r - rs) / (rc - rs), 0, 1)``, ``s = u^3 (-6u^2 + 15u - 10) + 1``.
    """
    xp = B.namespace(r)
    u = xp.clip((r - rcut_smth) / (rcut - rcut_smth), 0.0, 1.0)
    return u * u * u * (-6.0 * u * u + 15.0 * u - 10.0) + 1.0


def env_matrix(vec, mask, config: DPA1Config):
    """Raw environment rows ``s(r) [1/(r+p), d/(r+p)^2]`` of neighbor vectors.

    Args:
        vec: ``(..., 3)`` neighbor-minus-center vectors ``d``.
        mask: ``(...)`` bool, real neighbors. Masked rows give exactly 0 and
            never NaN, whatever ``vec`` holds there.
        config: supplies ``rcut``, ``rcut_smth``, ``env_protection``.

    Returns:
        ``(env (..., 4), sw (...))`` with ``sw`` the switch, 0 on masked rows.
    """
    xp = B.namespace(vec)
    vec = xp.where(mask[..., None], vec, xp.zeros_like(vec))
    # Masked rows take the norm of (1, 1, 1): a zero vector's norm has a NaN
    # derivative in jax, and 0 * NaN would leak through the masking below.
    r = xp.linalg.vector_norm(xp.where(mask[..., None], vec, xp.ones_like(vec)), axis=-1)
    sw = xp.where(mask, smooth_switch(r, config.rcut_smth, config.rcut), xp.zeros_like(r))
    rp = r + config.env_protection
    inv = sw / rp
    env = xp.concat([inv[..., None], vec * (inv / rp)[..., None]], axis=-1)
    return env, sw


def normalize_env(env, center_type, davg, dstd):
    """``(env - davg[t]) / dstd[t]`` with ``t`` the center type of each row.

    Args:
        env: ``(..., 4)`` raw rows.
        center_type: integer array of ``env.shape[:-1]``'s leading axes,
            broadcastable against them after adding trailing axes.
        davg, dstd: ``(ntypes, 4)`` per-center-type statistics.
    """
    xp = B.namespace(env)
    avg = xp.take(davg, center_type, axis=0)
    std = xp.take(dstd, center_type, axis=0)
    extra = env.ndim - avg.ndim
    shape = avg.shape[:-1] + (1,) * extra + (4,)
    return (env - xp.reshape(avg, shape)) / xp.reshape(std, shape)


def unit_angular(rt, eps: float = 1e-12):
    """The ``dotr`` gate's direction: ``R~[..., 1:4] / max(|R~[..., 1:4]|, eps)``.

    The norm is taken only where it exceeds ``eps`` (``sqrt`` of 1 elsewhere): the derivative of
    ``|a|`` at ``a = 0`` (masked rows) is ``0/0``, and jax's second derivative carried that NaN
    into real rows through zero cotangents (``0 * inf``)."""
    xp = B.namespace(rt)
    a = rt[..., 1:4]
    n2 = xp.sum(a * a, axis=-1, keepdims=True)
    big = n2 > eps * eps
    n = xp.sqrt(xp.where(big, n2, xp.ones_like(n2)))
    return xp.where(big, a / n, a / eps)
