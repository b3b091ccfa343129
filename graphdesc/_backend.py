"""Backend dispatch: the only module that knows numpy, torch and jax apart.

Everything else in graphdesc is written once against the array API and gets
its namespace ``xp`` from its inputs. The few operations the array API does
not standardise (scatter-add, scatter-max, stop-gradient, repeat with a known
output size, reading a size out of an array) live here, one function each,
with one branch per backend.

Contract: every function returns a *new* array on every backend; none writes
into its arguments (numpy's in-place ``np.add.at`` happens on a fresh buffer).
"""

from __future__ import annotations

import contextlib

import array_api_compat

__all__ = [
    "namespace",
    "backend_name",
    "device",
    "is_traced",
    "gather",
    "scatter_add",
    "scatter_max",
    "stop_gradient",
    "repeat",
    "to_size",
    "arange",
    "is_symbolic_int",
    "to_numpy",
    "on_cpu",
    "split_rows",
    "softmax",
    "affine",
    "layer_norm",
    "unit_rows",
    "first_order",
    "first_order_nodes",
    "folded_attention",
    "map_stacked",
    "pair_dot",
    "pair_spread",
    "opaque_pair_ops",
]


def namespace(*arrays):
    """The array-API namespace shared by ``arrays`` (``None`` entries ignored)."""
    return array_api_compat.array_namespace(*(a for a in arrays if a is not None))


def backend_name(x) -> str:
    """``"numpy"``, ``"torch"`` or ``"jax"`` for an array of that library."""
    if array_api_compat.is_torch_array(x):
        return "torch"
    if array_api_compat.is_jax_array(x):
        return "jax"
    if array_api_compat.is_numpy_array(x):
        return "numpy"
    raise TypeError(f"unsupported array type {type(x).__name__}; expected a numpy, torch or jax array")


def device(x):
    """The device of ``x`` in the form its namespace's ``asarray`` accepts."""
    return array_api_compat.device(x)


def is_traced(x) -> bool:
    """True when ``x`` carries no concrete values: a jax tracer, or a torch
    tensor seen by ``torch.compile``, ``torch.export`` or symbolic ``make_fx``.

    Validation that reads values (index ranges, NaN checks) is skipped then:
    reading a value would either fail or bake a data-dependent guard into the
    traced program.
    """
    name = backend_name(x)
    if name == "jax":
        import jax

        return isinstance(x, jax.core.Tracer)
    if name == "torch":
        import torch
        from torch._guards import detect_fake_mode

        return bool(torch.compiler.is_compiling()) or detect_fake_mode(x) is not None
    return False


def is_symbolic_int(value) -> bool:
    """True for a torch SymInt (a size that torch.export / make_fx keep symbolic).

    Comparing it with a Python int or calling ``int()`` on it would specialize
    the traced program to one value, so validation leaves it alone.
    """
    return type(value).__name__ == "SymInt"


def _expand_ids(ids, data):
    """``ids (E,)`` viewed as ``(E, 1, ..., 1)`` to broadcast against ``data (E, *F)``."""
    return ids.reshape((ids.shape[0],) + (1,) * (data.ndim - 1))


def gather(x, index):
    """Rows of ``x`` at ``index``: ``x[index]`` along axis 0, ``(len(index), *x.shape[1:])``.

    ``index`` must be non-negative and in range (the callers validate it):
    array-api-compat's torch ``take`` spends three extra full-size passes
    wrapping negative indices, about a third of ``segment_softmax``'s time.
    """
    name = backend_name(x)
    if name == "torch":
        return x.index_select(0, index)
    if name == "jax":
        return x.at[index].get(mode="promise_in_bounds")
    return x[index]


def scatter_add(data, index, num_segments):
    """``out[s] = sum_{i: index[i] == s} data[i]``.

    Args:
        data: ``(E, *F)`` array.
        index: ``(E,)`` integer array with values in ``[0, num_segments)``.
        num_segments: number of output rows ``S`` (int, or a torch SymInt).

    Returns:
        ``(S, *F)`` array of ``data``'s dtype; rows with no entry are 0.
        Differentiable in torch (``index_add``, double backward included)
        and jax (``segment_sum``).
    """
    name = backend_name(data)
    if name == "torch":
        out = data.new_zeros((num_segments,) + tuple(data.shape[1:]))
        return out.index_add(0, index, data)
    if name == "jax":
        import jax

        return jax.ops.segment_sum(data, index, num_segments=num_segments)
    import numpy as np

    out = np.zeros((num_segments,) + data.shape[1:], dtype=data.dtype)
    np.add.at(out, index, data)
    return out


def scatter_max(data, index, num_segments):
    """``out[s] = max_{i: index[i] == s} data[i]``; ``-inf`` for empty rows.

    Not differentiable by design: callers pass stop-gradient values and build
    the gradient themselves (see ``graphdesc.segment.segment_max``), so that the
    tie rule is the same on every backend. ``data`` must be floating point;
    a NaN entry makes its row NaN.

    Args:
        data: ``(E, *F)`` float array.
        index: ``(E,)`` integer array with values in ``[0, num_segments)``.
        num_segments: number of output rows ``S``.

    Returns:
        ``(S, *F)`` array.
    """
    name = backend_name(data)
    if name == "torch":
        out = data.new_full((num_segments,) + tuple(data.shape[1:]), float("-inf"))
        idx = _expand_ids(index, data).expand(data.shape)
        return out.scatter_reduce(0, idx, data, reduce="amax", include_self=True)
    if name == "jax":
        import jax

        return jax.ops.segment_max(data, index, num_segments=num_segments)
    import numpy as np

    out = np.full((num_segments,) + data.shape[1:], -np.inf, dtype=data.dtype)
    np.maximum.at(out, index, data)
    return out


def stop_gradient(x):
    """``x`` with gradients cut (torch ``detach``, ``jax.lax.stop_gradient``)."""
    name = backend_name(x)
    if name == "torch":
        return x.detach()
    if name == "jax":
        import jax

        return jax.lax.stop_gradient(x)
    return x


def repeat(x, repeats, total):
    """``x[i]`` repeated ``repeats[i]`` times, along axis 0.

    Args:
        x: ``(R,)`` array.
        repeats: ``(R,)`` non-negative integer array.
        total: ``sum(repeats)`` as a size (see :func:`to_size`); passing it lets
            torch.export trace the data-dependent output length.

    Returns:
        ``(total,)`` array.
    """
    name = backend_name(x)
    if name == "torch":
        import torch

        return torch.repeat_interleave(x, repeats, output_size=total)
    if name == "jax":
        import jax.numpy as jnp

        return jnp.repeat(x, repeats, total_repeat_length=total)
    import numpy as np

    return np.repeat(x, repeats)


def to_size(x, minimum: int = 0):
    """A 0-d integer array ``>= minimum`` (the caller guarantees it) as a size for shapes.

    Eager: a Python int. Under torch.export / make_fx: an unbacked SymInt,
    declared ``>= minimum`` so it can size tensors (``minimum=2`` also tells
    the compiler that the size is never 1, which matmul lowerings ask).
    """
    if backend_name(x) == "torch":
        import torch

        size = x.item()
        # recorded as an op in traced graphs, so the range survives re-export
        torch._constrain_as_size(size, min=minimum)
        return size
    return int(x)


def arange(n, like, dtype=None):
    """``[0, 1, ..., n-1]`` on ``like``'s device, ``dtype`` default int64.

    ``n`` may be an unbacked torch SymInt (array-api-compat's torch ``arange``
    compares ``n`` with 0 in Python, which torch.export cannot trace).
    """
    name = backend_name(like)
    if name == "torch":
        import torch

        return torch.arange(n, dtype=dtype or torch.int64, device=like.device)
    xp = namespace(like)
    return xp.arange(n, dtype=dtype or xp.int64, device=device(like))


def on_cpu(x) -> bool:
    """True when ``x`` lives in host memory (numpy, or a torch/jax array on a CPU device).

    A jax tracer has no device: it counts as on the CPU when jax's default backend is the CPU
    (where ``jax.jit`` places a program unless told otherwise).
    """
    name = backend_name(x)
    if name == "torch":
        return x.device.type == "cpu"
    if name == "jax":
        import jax

        if isinstance(x, jax.core.Tracer):
            return jax.default_backend() == "cpu"
        return all(d.platform == "cpu" for d in x.devices())
    return True


def split_rows(x, sizes):
    """``x`` cut along axis 0 into pieces of ``sizes`` rows (they sum to ``len(x)``).

    torch's ``split`` has one backward that concatenates the pieces' gradients;
    slicing ``x[a:b]`` piece by piece would zero-fill a full-size gradient per piece.
    """
    if backend_name(x) == "torch":
        return list(x.split(list(sizes)))
    cuts, start = [], 0
    for size in sizes:
        cuts.append(x[start : start + size])
        start += size
    return cuts


def softmax(x):
    """Softmax over the last axis, unmasked (torch's and jax's fused kernels: one pass forward, one backward)."""
    name = backend_name(x)
    if name == "torch":
        return x.softmax(-1)
    if name == "jax":
        import jax

        return jax.nn.softmax(x, axis=-1)
    import numpy as np

    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def affine(x, w, b=None):
    """``x @ w + b``: ``(..., n_in) -> (..., n_out)`` for ``w (n_in, n_out)``, ``b (n_out,)`` or None.

    Eager torch: one ``addmm`` (the bias is the GEMM's ``C``), not a product and a separate pass adding the
    bias (fp64 energy+force of 32-atom fcc Cu: 1.05-1.07x, neutral at 256 atoms); elsewhere, traced torch
    programs included (inductor fuses the bias into what follows), the formula."""
    if backend_name(x) == "torch" and not is_traced(x):
        import torch

        return torch.nn.functional.linear(x, w.T, b)
    y = x @ w
    return y if b is None else y + b


def layer_norm(x, weight, bias, eps: float):
    """LayerNorm over the last axis with population variance, ``(..., C) -> (..., C)``; ``weight``, ``bias (C,)``.

    Eager torch: its fused kernel, one pass forward and one backward, twice differentiable (fp64
    energy+force of fcc Cu: 1.07-1.19x over the formula). Elsewhere, traced torch programs included (inductor
    fuses the formula's passes itself), the array-API formula, scaled by the reciprocal (a broadcast
    multiply's backward is two passes, a divide's four)."""
    if backend_name(x) == "torch" and not is_traced(x):
        import torch

        return torch.nn.functional.layer_norm(x, (x.shape[-1],), weight, bias, eps)
    xp = namespace(x)
    mean = xp.mean(x, axis=-1, keepdims=True)
    centered = x - mean
    var = xp.mean(centered * centered, axis=-1, keepdims=True)
    return centered * (1.0 / xp.sqrt(var + eps)) * weight + bias


def unit_rows(x, mask, scale=1.0):
    """``scale * x (..., F)`` divided by its row L2 norms, no epsilon (as DeePMD); rows where ``mask (...)`` is
    False are divided by 1: their values never matter, only their finiteness. ``scale``: a float or an array
    broadcastable to ``(..., 1)``.

    Eager torch within :func:`first_order`: one autograd node whose backward is ``r dy - c x`` with ``r = scale
    / |x|`` and ``c = r (x . dy) / |x|^2`` per row, three full-size passes where the formula's autograd graph
    takes about seven (fp64 block stage of fcc Cu, forward and backward: 1.05-1.08x). Elsewhere (a force loss
    differentiates the backward again; traced torch programs; numpy, jax) the formula."""
    if first_order_nodes(x):
        return _torch_unit_rows().apply(x, mask, scale)
    xp = namespace(x)
    norm = xp.linalg.vector_norm(x, axis=-1, keepdims=True)
    return x * (scale / xp.where(mask[..., None], norm, xp.ones_like(norm)))


_TORCH_UNIT_ROWS = None
_FIRST_ORDER = False


@contextlib.contextmanager
def first_order():
    """Within: the gradients of what runs here are taken once, not differentiated again (energy and forces
    without a force loss), so eager torch may use autograd nodes with a cheaper backward (:func:`unit_rows`).
    Differentiating them twice anyway stays correct (their backward then re-derives the formula's graph), but
    costs more than the formula: a training step with a force loss, 0.86-0.88x (fp64, 32-atom fcc Cu)."""
    global _FIRST_ORDER
    before, _FIRST_ORDER = _FIRST_ORDER, True
    try:
        yield
    finally:
        _FIRST_ORDER = before


ATTENTION_NODE = True
"""Whether :func:`folded_attention` takes the place of the descriptor's folded layer where it can (set False to
time or test the formula it replaces: ``benchmarks/bench_attention_node.py``)."""


def first_order_nodes(x) -> bool:
    """Whether work on ``x`` runs within :func:`first_order` in eager torch, where the hand-written autograd nodes
    (:func:`unit_rows`, :func:`folded_attention`) take the place of their formulas."""
    return _FIRST_ORDER and backend_name(x) == "torch" and not is_traced(x)


def folded_attention(q, k, v, sw, post, valid, alpha: float, count: int):
    """The folded smooth attention from a layer's raw projections to its weighted values, ``(C, w, H)``, as one
    autograd node (:class:`graphdesc._torch_attention.FoldedAttention`; ``count = sel - w >= 0``). Eager torch
    only, where :func:`first_order_nodes` holds; the formula it replaces is the descriptor's folded layer
    (fp64 energy+force of fcc Cu: see docs, "Benchmarks")."""
    if not first_order_nodes(q):
        raise RuntimeError("folded_attention runs only within first_order(), in eager torch")
    from ._torch_attention import FoldedAttention

    return FoldedAttention.apply(q, k, v, sw, post, valid, float(alpha), int(count))


def _torch_unit_rows():
    """The autograd function behind eager torch's :func:`unit_rows` (made on first use)."""
    global _TORCH_UNIT_ROWS
    if _TORCH_UNIT_ROWS is None:
        import torch

        def norms(x, mask):  # (..., 1): |x|, or 1 in masked rows
            return torch.where(mask[..., None], torch.linalg.vector_norm(x, dim=-1, keepdim=True), 1.0)

        class UnitRows(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, mask, scale):
                norm = norms(x, mask)
                ctx.tensor_scale = isinstance(scale, torch.Tensor)
                ctx.save_for_backward(x, mask, scale if ctx.tensor_scale else None)
                ctx.scale, ctx.norm = (None if ctx.tensor_scale else scale), norm
                return x * (scale / norm)

            @staticmethod
            def backward(ctx, dy):
                x, mask, scale = ctx.saved_tensors
                scale = scale if ctx.tensor_scale else ctx.scale
                if torch.is_grad_enabled():  # differentiated again after all: the formula's graph (correct, slower)
                    inputs = (x, scale) if ctx.needs_input_grad[2] else (x,)
                    grads = torch.autograd.grad(x * (scale / norms(x, mask)), inputs, dy, create_graph=True)
                    return grads[0], None, grads[1] if len(grads) > 1 else None
                norm = ctx.norm
                r = scale / norm
                dot = (x.unsqueeze(-2) @ dy.unsqueeze(-1))[..., 0]  # (..., 1) row dot products, one pass
                c = torch.where(mask[..., None], r * dot / (norm * norm), 0.0)
                dx = torch.addcmul(dy * r, x, c, value=-1.0)
                dscale = (dot / norm).sum_to_size(scale.shape) if ctx.needs_input_grad[2] else None
                return dx, None, dscale

        _TORCH_UNIT_ROWS = UnitRows
    return _TORCH_UNIT_ROWS


def pair_dot(a, b, i, j):
    """Per pair ``p``, the dot product ``a[i[p]] . b[j[p]]``: ``(P,)``, from ``a (R, F)``, ``b (R', F)`` and
    integer ``i, j (P,)`` (in range; the callers build them).

    The pair path's logits and gate. In torch a custom operator (``graphdesc::pair_dot``) whose autograd graph
    keeps only ``a``, ``b`` and the indices, and which gathers the rows in chunks of
    :data:`PAIR_CHUNK_BYTES`: no ``(P, F)`` array exists whole, in the forward or the backward (the plain
    ``index_select`` and ``mul`` would hold them, and save both for the backward, for every piece of a
    training batch at once). Its derivatives are :func:`pair_spread` calls, themselves differentiable, so
    forces and force losses work. A traced torch program gets the operator only inside
    :func:`opaque_pair_ops` (compiled training), since an exported package must not depend on it; elsewhere
    (numpy, jax, traced programs) the same formula in plain ops.
    """
    if _pair_operators(a):
        return _torch_pairs().pair_dot(a, b, i, j)
    return _pair_dot(a, b, i, j)


def pair_spread(w, b, i, j, num_rows):
    """Per row ``r``, ``sum over pairs p with i[p] = r of w[p] b[j[p]]``: ``(num_rows, F)``, from ``w (P,)``,
    ``b (R', F)`` and integer ``i, j (P,)`` (in range).

    The pair path's weighted values (``i`` the query, ``j`` the key), and the derivative of
    :func:`pair_dot`. As :func:`pair_dot`, a chunked torch operator that saves only its inputs; the two are
    closed under differentiation (each one's derivatives are calls of the two).
    """
    if _pair_operators(w):
        return _torch_pairs().pair_spread(w, b, i, j, num_rows)
    return _pair_spread(w, b, i, j, num_rows)


def _pair_operators(x) -> bool:
    """Whether :func:`pair_dot` and :func:`pair_spread` run as graphdesc's torch operators for ``x``: torch,
    and eager or inside :func:`opaque_pair_ops`."""
    return backend_name(x) == "torch" and (_OPAQUE_PAIRS or not is_traced(x))


def _pair_dot(a, b, i, j):
    return namespace(a).sum(gather(a, i) * gather(b, j), axis=-1)


def _pair_spread(w, b, i, j, num_rows):
    return scatter_add(w[:, None] * gather(b, j), i, num_rows)


PAIR_CHUNK_BYTES = 2**24
"""The torch pair operators gather at most this many bytes of rows at a time (per gathered array)."""

_OPAQUE_PAIRS = False
_TORCH_PAIRS = None


@contextlib.contextmanager
def opaque_pair_ops():
    """Within: traced torch programs call :func:`pair_dot` and :func:`pair_spread` as the custom operators
    (one node each, run chunk by chunk), not as plain gather-multiply-sum ops that a compiler would hold
    whole. For ``make_fx`` traces of training steps; not for exported packages."""
    global _OPAQUE_PAIRS
    before, _OPAQUE_PAIRS = _OPAQUE_PAIRS, True
    try:
        yield
    finally:
        _OPAQUE_PAIRS = before


def _pair_chunks(n: int, rows):
    """Slices of ``n`` pairs whose gathered rows of ``rows (R, F)`` hold at most :data:`PAIR_CHUNK_BYTES`."""
    step = max(1, PAIR_CHUNK_BYTES // max(1, rows.shape[1] * rows.element_size()))
    return [slice(s, min(n, s + step)) for s in range(0, n, step)]


def _torch_pairs():
    """The torch custom operators ``graphdesc::pair_dot`` and ``graphdesc::pair_spread`` (registered on first use)."""
    global _TORCH_PAIRS
    if _TORCH_PAIRS is None:
        import types

        import torch

        @torch.library.custom_op("graphdesc::pair_dot", mutates_args=(),
                                 schema="(Tensor a, Tensor b, Tensor i, Tensor j) -> Tensor")
        def dot(a, b, i, j):
            chunks = _pair_chunks(i.shape[0], a)
            if len(chunks) <= 1:
                return _pair_dot(a, b, i, j)
            return torch.cat([_pair_dot(a, b, i[s], j[s]) for s in chunks])

        @dot.register_fake
        def _(a, b, i, j):
            return a.new_empty(i.shape[0])

        @torch.library.custom_op("graphdesc::pair_spread", mutates_args=(),
                                 schema="(Tensor w, Tensor b, Tensor i, Tensor j, SymInt num_rows) -> Tensor")
        def spread(w, b, i, j, num_rows):
            out = b.new_zeros(num_rows, b.shape[1])
            for s in _pair_chunks(i.shape[0], b):
                out.index_add_(0, i[s], w[s, None] * b.index_select(0, j[s]))
            return out

        @spread.register_fake
        def _(w, b, i, j, num_rows):
            return b.new_empty(num_rows, b.shape[1])

        def save_inputs(ctx, inputs, output):
            ctx.save_for_backward(*inputs[:4])

        def dot_backward(ctx, dl):
            a, b, i, j = ctx.saved_tensors
            da = spread(dl, b, i, j, a.shape[0]) if ctx.needs_input_grad[0] else None
            db = spread(dl, a, j, i, b.shape[0]) if ctx.needs_input_grad[1] else None
            return da, db, None, None

        def spread_backward(ctx, dout):
            w, b, i, j = ctx.saved_tensors
            dw = dot(dout, b, i, j) if ctx.needs_input_grad[0] else None
            db = spread(w, dout, j, i, b.shape[0]) if ctx.needs_input_grad[1] else None
            return dw, db, None, None, None

        dot.register_autograd(dot_backward, setup_context=save_inputs)
        spread.register_autograd(spread_backward, setup_context=save_inputs)
        _TORCH_PAIRS = types.SimpleNamespace(pair_dot=dot, pair_spread=spread)
    return _TORCH_PAIRS


def map_stacked(f, xs: dict):
    """``f`` on each slice ``{k: v[i]}`` of the leading axis of ``xs``, its outputs stacked along a new one.

    Args:
        f: takes a dict of arrays, returns a tuple of arrays (an entry may be None: it stays None).
        xs: a dict of arrays with one leading size ``n``.

    Returns:
        the tuple of ``f``'s outputs, each with a leading axis of size ``n``.

    jax: ``lax.map`` of ``jax.checkpoint(f)``, one slice at a time inside a jitted program; the
    checkpoint makes reverse mode save only each slice's inputs and recompute its activations, so
    forward and backward hold one slice's temporaries at a time (without it, the scan would stack
    every slice's residuals: the whole). numpy and torch: a Python loop.
    """
    name = backend_name(next(iter(xs.values())))
    if name == "jax":
        import jax

        return jax.lax.map(jax.checkpoint(f), xs)
    xp = namespace(*xs.values())
    n = next(iter(xs.values())).shape[0]
    outs = [f({k: v[i] for k, v in xs.items()}) for i in range(n)]
    return tuple(None if o is None else xp.stack([out[j] for out in outs]) for j, o in enumerate(outs[0]))


def to_numpy(x):
    """A numpy copy-or-view of any array (torch: detached, moved to the CPU)."""
    import numpy as np

    if backend_name(x) == "torch":
        return x.detach().cpu().numpy()
    return np.asarray(x)
