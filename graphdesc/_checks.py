"""Input validation with errors that name the argument and the problem.

Checks on dtypes and shapes always run (they are static, also under tracing).
Checks that read values (index ranges, sign of counts) run only on concrete
arrays: under ``jax.jit``, ``torch.compile``, ``torch.export`` or symbolic
``make_fx`` the values do not exist yet, and reading them would fail or bake a
data-dependent guard into the program. Validate eagerly once, then trace.
"""

from __future__ import annotations

import operator

from ._backend import is_symbolic_int, is_traced, namespace

__all__ = ["check_size", "check_ids", "check_mask", "check_float", "leading_dim"]


def check_size(name: str, value, *, minimum: int = 0) -> None:
    """``value`` must be an integer >= ``minimum`` (Python int, numpy int or torch SymInt)."""
    if is_symbolic_int(value):
        return  # symbolic: its range is the tracer's business
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got bool")
    try:
        operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def leading_dim(name: str, x) -> int:
    if x.ndim < 1:
        raise ValueError(f"{name} must have at least one axis, got a 0-d array")
    return x.shape[0]


def check_ids(name: str, ids, length, num_segments, *, data_name: str = "data") -> None:
    """``ids`` must be a 1-D integer array of ``length`` entries in ``[0, num_segments)``."""
    xp = namespace(ids)
    if ids.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(ids.shape)}")
    if not xp.isdtype(ids.dtype, "integral"):
        raise TypeError(f"{name} must have an integer dtype, got {ids.dtype}")
    if length is not None and ids.shape[0] != length:
        raise ValueError(f"{name} has {ids.shape[0]} entries but {data_name} has {length}")
    if is_traced(ids) or ids.shape[0] == 0:  # traced first: comparing an unbacked size would guard on it
        return
    lo, hi = int(xp.min(ids)), int(xp.max(ids))
    if lo < 0 or hi >= num_segments:
        raise ValueError(
            f"{name} out of range: values span [{lo}, {hi}] but must lie in [0, {num_segments})"
        )


def check_mask(name: str, mask, shape) -> None:
    """``mask`` must be a boolean array of ``shape`` or of ``shape[:1]``."""
    xp = namespace(mask)
    if mask.dtype != xp.bool:
        raise TypeError(f"{name} must have dtype bool, got {mask.dtype}")
    if tuple(mask.shape) not in (tuple(shape), tuple(shape[:1])):
        raise ValueError(
            f"{name} must have shape {tuple(shape[:1])} or {tuple(shape)}, got {tuple(mask.shape)}"
        )


def check_float(name: str, x) -> None:
    xp = namespace(x)
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(f"{name} must have a real floating dtype, got {x.dtype}")
