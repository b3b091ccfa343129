"""Segment reductions over the leading axis: sum, max and a mask-safe softmax.

All three share one signature, ``(data, segment_ids, num_segments, *, ...)``:

* ``data`` is ``(E, *F)``: ``E`` entries, any trailing feature axes;
* ``segment_ids`` is ``(E,)`` integer, entry ``i`` belongs to segment
  ``segment_ids[i]`` in ``[0, num_segments)``; ids need not be sorted;
* ``num_segments`` (``S``) is required and static, so output shapes never
  depend on data (jit and export need that);
* ``mask``, optional, is ``(E,)`` or ``(E, *F)`` bool. A masked entry takes no
  part in anything: not the sum, the max, the softmax denominator, nor any
  gradient, whatever it holds (``inf``, ``nan``, ``1e300``).

Works on numpy, torch and jax arrays; the result is of the input's library.
"""

from __future__ import annotations

import math

from . import _backend as B
from ._checks import check_float, check_ids, check_mask, check_size, leading_dim

__all__ = ["segment_sum", "segment_max", "segment_softmax", "masked_softmax"]


def _prepare(data, segment_ids, num_segments, mask, *, floating=True, name="data"):
    """Validate the shared arguments; return ``(xp, valid)`` with ``valid``
    the mask broadcastable to ``data`` (or ``None``)."""
    xp = B.namespace(data, segment_ids, mask)
    n = leading_dim(name, data)
    check_size("num_segments", num_segments)
    if floating:
        check_float(name, data)
    check_ids("segment_ids", segment_ids, n, num_segments, data_name=name)
    if mask is None:
        return xp, None
    check_mask("mask", mask, data.shape)
    if mask.ndim == 1 and data.ndim > 1:
        mask = xp.reshape(mask, (n,) + (1,) * (data.ndim - 1))
    return xp, mask


def _zero(xp, like):
    return xp.zeros((), dtype=like.dtype, device=B.device(like))


def _masked(xp, valid, x, fill):
    """``x`` where ``valid``, else the scalar ``fill`` (broadcast)."""
    if valid is None:
        return x
    return xp.where(valid, x, xp.full((), fill, dtype=x.dtype, device=B.device(x)))


def _per_segment(xp, values, like):
    """A per-segment ``(S,)`` array viewed as ``(S, 1, ..., 1)`` against ``like (S, *F)``;
    scalars and arrays that already have ``like``'s rank pass through."""
    values = xp.asarray(values, dtype=like.dtype, device=B.device(like))
    if values.ndim != 1:
        return values
    return xp.reshape(values, (values.shape[0],) + (1,) * (like.ndim - 1))


def segment_sum(data, segment_ids, num_segments, *, mask=None):
    """Sum of the entries of each segment.

    Args:
        data: ``(E, *F)`` array (float or integer).
        segment_ids: ``(E,)`` integer array, values in ``[0, S)``.
        num_segments: ``S``.
        mask: optional ``(E,)`` or ``(E, *F)`` bool; masked entries count as 0.

    Returns:
        ``(S, *F)`` array; empty segments are 0.
    """
    xp, valid = _prepare(data, segment_ids, num_segments, mask, floating=False)
    if valid is not None:
        data = xp.where(valid, data, _zero(xp, data))
    return B.scatter_add(data, segment_ids, num_segments)


def segment_max(data, segment_ids, num_segments, *, mask=None, empty_value=0.0):
    """Maximum of the entries of each segment.

    Args:
        data: ``(E, *F)`` float array.
        segment_ids: ``(E,)`` integer array, values in ``[0, S)``.
        num_segments: ``S``.
        mask: optional ``(E,)`` or ``(E, *F)`` bool; masked entries are ignored.
        empty_value: value of segments with no (unmasked) entry. Default 0.0,
            so that empty rows are finite; pass ``-math.inf`` for the identity
            of ``max``.

    Returns:
        ``(S, *F)`` array.

    Gradient: the same on every backend. It flows to the entries equal to the
    segment's maximum, split evenly among ties (each of ``k`` tied entries
    gets ``1/k``); nothing flows to other entries, to masked entries, to empty
    segments, or when the maximum is infinite. The second derivative is 0.
    """
    xp, valid = _prepare(data, segment_ids, num_segments, mask)
    frozen = _masked(xp, valid, B.stop_gradient(data), -math.inf)
    top = B.scatter_max(frozen, segment_ids, num_segments)  # (S, *F), -inf where empty
    top_e = B.gather(top, segment_ids)
    is_top = (frozen == top_e) & xp.isfinite(top_e)
    ties = B.scatter_add(xp.astype(is_top, data.dtype), segment_ids, num_segments)
    share = B.gather(1.0 / xp.maximum(ties, xp.ones_like(ties)), segment_ids)
    # ``data - top_e`` is exactly 0 on the tied entries: the value stays ``top``
    # to the bit, while the derivative with respect to each tie is ``share``.
    delta = (_masked(xp, is_top, data, 0.0) - _masked(xp, is_top, top_e, 0.0)) * share
    out = top + B.scatter_add(delta, segment_ids, num_segments)
    present = xp.ones(data.shape[:1], dtype=xp.bool, device=B.device(data)) if valid is None else valid
    count = _per_segment(xp, B.scatter_add(xp.astype(present, data.dtype), segment_ids, num_segments), out)
    return xp.where(count > 0, out, xp.full((), empty_value, dtype=data.dtype, device=B.device(data)))


def segment_softmax(
    logits,
    segment_ids,
    num_segments,
    *,
    mask=None,
    phantom_count=None,
    phantom_logit=0.0,
):
    """Softmax of the entries within each segment, numerically stable and mask-safe.

    ``w_i = exp(x_i - m) / (sum_{j in seg, unmasked} exp(x_j - m) + c * exp(p - m))``
    with ``m`` the segment's maximum over its unmasked logits and, if
    ``c > 0``, the phantom logit ``p``. The result does not depend on ``m``
    (it only keeps ``exp`` in range), so no gradient flows through it.

    Args:
        logits: ``(E, *F)`` float array; each trailing position is an
            independent softmax.
        segment_ids: ``(E,)`` integer array, values in ``[0, S)``.
        num_segments: ``S``.
        mask: optional ``(E,)`` or ``(E, *F)`` bool. Masked entries get weight
            exactly 0 and are left out of the max and the denominator, whatever
            they hold; their gradient is exactly 0.
        phantom_count: optional ``(S,)`` array (float or int): ``c``, the
            number of extra *phantom* entries of each segment, present only in
            the denominator, each with logit ``p``. DeePMD's fixed-width smooth
            attention keeps ``sel - deg`` such terms with ``p = -20``. A
            negative ``c`` removes ``|c|`` such terms (DPA1's continuation to
            ``deg > sel``); a phantom takes part in the max only when
            ``c > 0``, and if removing terms would leave a denominator <= 0,
            that segment's phantom terms are dropped instead.
        phantom_logit: ``p``, a scalar or an ``(S,)`` array.

    Returns:
        ``(E, *F)`` weights. Masked entries, empty segments and fully masked
        segments give 0, never NaN. Unmasked non-finite logits are the
        caller's data and propagate.
    """
    xp, valid = _prepare(logits, segment_ids, num_segments, mask, name="logits")
    phantom = None
    if phantom_count is not None:
        like = logits[:1]  # (1, *F): the rank of the (S, *F) per-segment arrays
        phantom = (_check_phantom(xp, phantom_count, num_segments, like), _per_segment(xp, phantom_logit, like),
                   None)
    return _softmax(
        xp, logits, valid, phantom,
        reduce_max=lambda x: B.scatter_max(x, segment_ids, num_segments),
        reduce_sum=lambda x: B.scatter_add(x, segment_ids, num_segments),
        spread=lambda x: B.gather(x, segment_ids),
    )


def masked_softmax(logits, mask, *, phantom_count=None, phantom_logit=0.0, held_phantoms=None):
    """Softmax over the last axis, mask-safe: the dense sibling of :func:`segment_softmax`.

    Same formula and rules (masked entries get exactly 0 and no gradient,
    whatever they hold; signed phantom terms; fully masked rows give 0),
    for rows laid out densely, e.g. attention blocks ``(N, D, D)``.

    Args:
        logits: ``(..., K)`` float array.
        mask: ``(..., K)`` bool (broadcastable), True for real entries.
        phantom_count: optional count per row, broadcastable to ``(..., 1)``.
        phantom_logit: scalar phantom logit ``p``.
        held_phantoms: with ``phantom_count``, an optional count per row, broadcastable to ``(..., 1)``, of
            entries that are phantoms already (unmasked entries of logit exactly ``p``, e.g. the folded
            attention's empty keys): they count as entries, and where the phantom terms are dropped they are
            dropped too.

    Returns:
        ``(..., K)`` weights.
    """
    xp = B.namespace(logits, mask)
    check_float("logits", logits)
    phantom = None
    if phantom_count is not None:
        count, p = (xp.asarray(v, dtype=logits.dtype, device=B.device(logits)) for v in (phantom_count, phantom_logit))
        held = None if held_phantoms is None else xp.asarray(held_phantoms, dtype=logits.dtype,
                                                             device=B.device(logits))
        phantom = (count, p, held)
    return _softmax(
        xp, logits, mask, phantom,
        reduce_max=lambda x: xp.max(x, axis=-1, keepdims=True),
        reduce_sum=lambda x: xp.sum(x, axis=-1, keepdims=True),
        spread=lambda x: x,
    )


def _softmax(xp, logits, valid, phantom, *, reduce_max, reduce_sum, spread):
    """The softmax formula, shared by the segment and dense layouts.

    ``reduce_*`` map entries to their groups (rows/segments), ``spread`` maps
    per-group values back onto the entries; ``phantom`` is ``(count, logit, held)``
    per group (``held``: phantoms among the entries already, or None), or None.
    """
    frozen = _masked(xp, valid, B.stop_gradient(logits), -math.inf)
    top = reduce_max(frozen)  # -inf where empty
    if phantom is not None:
        count, p = phantom[0], B.stop_gradient(phantom[1])
        top = xp.where(count > 0, xp.maximum(top, p), top)
    top = xp.where(top == -math.inf, _zero(xp, top), top)  # empty: any finite shift
    # Masked entries are shifted to exp(0), then zeroed: no inf * 0 reaches the
    # backward pass, whatever the masked logit held.
    shifted = _masked(xp, valid, logits - spread(top), 0.0)
    e = _masked(xp, valid, xp.exp(shifted), 0.0)
    denom = reduce_sum(e)
    if phantom is not None:
        one = xp.exp(p - top)  # one phantom's term
        with_phantoms = denom + count * one
        without = denom if phantom[2] is None else denom - phantom[2] * one
        denom = xp.where(with_phantoms > 0, with_phantoms, without)
    denom = xp.where(denom > 0, denom, xp.ones_like(denom))
    return e * spread(1.0 / denom)


def _check_phantom(xp, phantom_count, num_segments, like):
    if phantom_count.ndim != 1 or phantom_count.shape[0] != num_segments:
        raise ValueError(
            f"phantom_count must have shape ({num_segments},), got {tuple(phantom_count.shape)}"
        )
    return _per_segment(xp, phantom_count, like)
