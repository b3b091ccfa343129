"""The core of the folded smooth attention as one eager-torch autograd node, for first derivatives.

From a layer's raw projections ``q, k, v (C, w, H)`` of ``C`` centers' blocks of ``w`` rows, the switches
``sw (C, w, 1)`` and the post-softmax factor ``post (C, w, w)``, the node returns

    o = (softmax over [w real keys, count phantoms](S) * post) @ v^
    S_mn = alpha sw_m sw_n q^_m . k^_n + 20 sw_m sw_n,    phantom logits 0,

``x^`` a row divided by its L2 norm (rows where ``valid`` is False divided by 1): what
:func:`graphdesc.descriptor.graph_path._folded_attention_layer` computes between its projections and its
output layer, in the same GEMMs, but with fewer full-size passes and no copies:

* the scaled rows are written straight into the GEMM operands ``[alpha sw q^, 20 sw, 1]`` and
  ``[sw k^, sw, 0]`` (plus one key row ``[0, .., 0, log count]`` standing for the phantoms), where the
  formula concatenates them (a copy of ``q`` and ``k`` each, forward, and strided slices of their
  gradients, backward);
* ``v^`` sits in a buffer with one zero row more, so the gradient of the weights comes out of its GEMM
  already as wide as the softmax (its phantom column 0), and the softmax backward runs in place;
* the row normalizations' backward is ``r s (dy - x^ (x^ . dy))`` on the GEMMs' contiguous outputs.

Only where the gradient is taken once (:func:`graphdesc._backend.first_order`); differentiated again, its
backward re-derives :func:`formula`'s graph (correct, and slower than the formula itself).
"""

from __future__ import annotations

import math

import torch

from .descriptor.config import SMOOTH_SHIFT

__all__ = ["FoldedAttention", "formula"]


def _inverse_norms(x, valid):
    """``(C, w, 1)``: ``1 / |x|`` per row, 1 in rows where ``valid (C, w)`` is False."""
    return torch.where(valid[..., None], torch.linalg.vector_norm(x, dim=-1, keepdim=True), 1.0).reciprocal()


def formula(q, k, v, sw, post, valid, alpha: float, count: int):
    """The node's output in plain differentiable torch ops (its double backward; a reference for tests)."""
    rq, rk, rv = (_inverse_norms(x, valid) for x in (q, k, v))
    logits = (q * (alpha * sw * rq)) @ (k * (sw * rk)).mT + SMOOTH_SHIFT * sw @ sw.mT
    w = logits.shape[1]
    if count:
        phantoms = logits.new_full((*logits.shape[:2], 1), math.log(count))
        weights = torch.softmax(torch.cat([logits, phantoms], -1), -1)[..., :w]
    else:
        weights = torch.softmax(logits, -1)
    return (weights * post) @ (v * rv)


class FoldedAttention(torch.autograd.Function):
    """``FoldedAttention.apply(q, k, v, sw, post, valid, alpha, count) -> o (C, w, H)``.

    Args:
        q, k, v: ``(C, w, H)`` raw projections; sw: ``(C, w, 1)`` switches (0 in empty rows);
        post: ``(C, w, w)`` factor of the softmax weights; valid: ``(C, w)`` bool, real rows;
        alpha: the logit scale; count: ``sel - w >= 0``, phantom keys beyond the block's empty rows.
    """

    @staticmethod
    def forward(ctx, q, k, v, sw, post, valid, alpha: float, count: int):
        c, w, h = q.shape
        extra = 1 if count else 0  # the phantoms' key row and the queries' column of ones
        rq, rk, rv = (_inverse_norms(x, valid) for x in (q, k, v))
        a, b = alpha * sw * rq, sw * rk  # (C, w, 1): the scaled rows' factors
        qx = q.new_empty(c, w, h + 1 + extra)  # [alpha sw q^, 20 sw, 1]
        kx = q.new_empty(c, w + extra, h + 1 + extra)  # [sw k^, sw, 0], then [0, .., 0, log count]
        torch.mul(q, a, out=qx[..., :h])
        torch.mul(sw, SMOOTH_SHIFT, out=qx[..., h : h + 1])
        torch.mul(k, b, out=kx[:, :w, :h])
        kx[:, :w, h : h + 1] = sw
        vx = q.new_empty(c, w + extra, h)  # v^, then a zero row: the phantoms' values
        torch.mul(v, rv, out=vx[:, :w])
        if extra:
            qx[..., h + 1] = 1.0
            kx[:, :w, h + 1] = 0.0
            kx[:, w] = 0.0
            kx[:, w, h + 1] = math.log(count)
            vx[:, w] = 0.0
        p = torch.softmax(torch.bmm(qx, kx.mT), -1)  # (C, w, w + extra)
        weights = p[..., :w] * post
        ctx.save_for_backward(q, k, v, sw, post, valid, rq, rk, rv, a, b, qx, kx, vx, p, weights)
        ctx.alpha, ctx.count = alpha, count
        return torch.bmm(weights, vx[:, :w])

    @staticmethod
    def backward(ctx, do):
        q, k, v, sw, post, valid, rq, rk, rv, a, b, qx, kx, vx, p, weights = ctx.saved_tensors
        need = ctx.needs_input_grad
        if torch.is_grad_enabled():  # differentiated again after all: the formula's graph
            inputs = [x for x, n in zip((q, k, v, sw, post), need) if n]
            grads = iter(torch.autograd.grad(formula(q, k, v, sw, post, valid, ctx.alpha, ctx.count), inputs, do,
                                             create_graph=True))
            return (*(next(grads) if n else None for n in need[:5]), None, None, None)
        w, h = q.shape[1], q.shape[2]
        dvx = torch.bmm(weights.mT, do)  # (C, w, H)
        dp = torch.bmm(do, vx.mT)  # (C, w, w + extra): 0 in the phantom column (vx's zero row)
        dpost = dp[..., :w] * p[..., :w] if need[4] else None
        # v^_n . dv^_n = sum_m weights_mn (do_m . v^_n): a column dot over (C, w, w) rather than a row dot
        # over v^'s strided view (C, w, H)
        dotv = torch.linalg.vecdot(weights, dp[..., :w], dim=1).unsqueeze(-1)
        dp[..., :w].mul_(post)
        ds = dp.mul_(p)  # the softmax's backward, in place: p (dp - sum p dp)
        ds.addcmul_(p, ds.sum(-1, keepdim=True), value=-1.0)
        ds_real = ds[..., :w]  # the phantoms' key row is constant: only the real keys' columns matter below
        # the scaled rows' gradients from their columns of qx and kx: contiguous GEMM outputs
        dq, dotq = _rows_backward(q, rq, a, torch.bmm(ds, kx[..., :h]), valid)
        dk, dotk = _rows_backward(k, rk, b, torch.bmm(ds_real.mT, qx[..., :h]), valid)
        dv = _unit_backward(vx[:, :w], rv, dvx, dotv, valid)
        dsw = None
        if need[3]:  # the scales alpha sw / |q| and sw / |k|, and the columns 20 sw of qx and sw of kx
            dsw = (ctx.alpha * rq) * dotq + rk * dotk + SMOOTH_SHIFT * (ds_real @ sw + ds_real.mT @ sw)
        return dq, dk, dv, dsw, dpost, None, None, None


def _rows_backward(x, r, scale, dy, valid):
    """For ``y = scale x r`` with ``r = 1 / |x|`` (1 in invalid rows, constant there): ``(dx, x . dy)``,
    ``dx = scale r dy - x scale r^3 (x . dy)`` in valid rows. Overwrites ``dy`` (a fresh GEMM output)."""
    dot = _row_dots(x, dy)
    c = torch.where(valid[..., None], scale * r * r * dot, 0.0)
    return dy.mul_(scale).addcmul_(x, c, value=-1.0), dot


def _unit_backward(unit, r, dy, dot, valid):
    """For ``y = x r = unit``: ``dx = r (dy - unit dot)`` in valid rows, ``dy`` in the others; ``dot (C, w, 1)``
    is ``unit . dy``. Overwrites ``dy``."""
    c = torch.where(valid[..., None], r * dot, 0.0)
    return dy.mul_(r).addcmul_(unit, c, value=-1.0)


def _row_dots(x, y):
    """``(C, w, 1)`` row dot products of ``x`` and ``y (C, w, H)``, as a batched GEMM: no full-size temporary."""
    return (x.unsqueeze(-2) @ y.unsqueeze(-1))[..., 0]
