"""Training forward passes -- energy, forces and virials that keep their graph -- in four execution modes.

A force or virial loss differentiates the forces ``F = -dE/dr`` with respect to
the parameters: a double backward. ``torch.compile`` cannot compile
``autograd.grad(create_graph=True)`` (it breaks the graph there, and compiled
pieces support no double backward), so the compiled modes work in two steps
(DESIGN.md section 6):

1. ``make_fx(tracing_mode="symbolic")`` traces the energy *and* the
   ``autograd.grad`` that gives the forces, as one graph of aten ops whose
   inputs are the parameters and the batch (N, E and the frame count stay
   symbolic). The loss gradient is then an ordinary *first* derivative of
   this graph with respect to its parameter inputs.
2. ``torch.compile`` compiles that graph (``aot_eager`` or ``inductor``);
   AOTAutograd derives its backward.

One repair makes step 1 exact. When autograd saves an op's *output* for its
backward (``tanh``, ``exp``, ``sqrt``, norms), the trace records the saved copy
as ``detach(detach(out))``: fine for forces, but the chain cuts the
second-order path, so force and virial losses would silently lose gradients
(measured: 3 of 22 parameter tensors). :func:`strip_saved_output_detach`
removes those chains; a single ``detach`` -- a ``stop_gradient`` written in
graphdesc's code -- is kept. ``graphdesc doctor`` checks the result, loss
component by component, against eager autograd.

Modes: ``eager`` (plain autograd), ``traced`` (the repaired make_fx graph, run
op by op), ``aot_eager`` and ``inductor`` (that graph compiled).

With ``attention="pairs"`` the compiled modes trace the pair products as
graphdesc's chunked custom operators (:func:`~graphdesc._backend.opaque_pair_ops`):
the batch is one piece there, and as plain ops the compiler would hold its
gathered ``(P, attn)`` pair rows whole. ``traced`` keeps plain ops, so the
doctor checks the operators' hand-written derivatives against autograd's.
"""

from __future__ import annotations

import contextlib

import torch

from .. import _backend as B
from ..graph.container import NeighborGraph

__all__ = ["MODES", "TrainingForward", "trace_training_forward", "strip_saved_output_detach"]

MODES = ("eager", "traced", "aot_eager", "inductor")
OUTPUTS = ("energy", "force", "virial")
_DETACH = torch.ops.aten.detach.default
_DYNAMIC_DIMS = (0, 1, 0, 0, 0)  # atype N, edge_index E, edge_vec E, edge_mask E, n_node nf


def _symbolic_shapes():
    """No 0/1 specialization and no duck sizing: the traced graph holds for any N, E, nf."""
    return torch.fx.experimental._config.patch(backed_size_oblivious=True, use_duck_shape=False)


def strip_saved_output_detach(gm: torch.fx.GraphModule) -> int:
    """Remove the ``detach(detach(x))`` chains autograd leaves for saved outputs; returns how many nodes went."""
    chains = [n for n in gm.graph.nodes if n.target is _DETACH and (
        getattr(n.args[0], "target", None) is _DETACH or (n.users and all(u.target is _DETACH for u in n.users)))]
    for node in chains:
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
    gm.recompile()
    return len(chains)


def trace_training_forward(model, sample=None, *, keep_saved_detach: bool = False,
                           opaque_pairs: bool = False) -> torch.fx.GraphModule:
    """The symbolic ``make_fx`` graph ``(leaves, atype, edge_index, edge_vec, edge_mask, n_node) ->
    (energy (nf,), force (N, 3), virial (nf, 3, 3))`` of ``model`` with ``create_graph=True``.

    ``leaves`` are ``model``'s parameters and buffers in ``model.leaf_names()``
    order; ``atype``, ``edge_index`` and ``n_node`` are int64, ``edge_mask`` bool, ``edge_vec`` (Å) and the
    outputs (eV, eV/Å, eV) in the model's float dtype. ``sample`` is such a tuple (default:
    :func:`~graphdesc.export.sample_inputs` without ghosts). ``keep_saved_detach=True`` skips the repair (to show
    what it fixes). ``opaque_pairs=True`` records the pair path's products as the chunked custom operators of
    :func:`~graphdesc._backend.opaque_pair_ops` instead of plain gather-multiply-sum ops, so that a compiler
    given the graph cannot hold a batch's gathered ``(P, attn)`` pair rows whole.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    from ..export.package import sample_inputs

    names = model.leaf_names()
    sample = sample_inputs(model, device=_device(model), ghosts=False) if sample is None else sample

    def flat(leaves, atype, edge_index, edge_vec, edge_mask, n_node):
        graph = NeighborGraph(edge_index, edge_vec, edge_mask, n_node)
        out = torch.func.functional_call(model, dict(zip(names, leaves)), (graph, atype), {"create_graph": True})
        return tuple(out[k] for k in OUTPUTS)

    leaves = [t.detach() for t in model.leaves()]
    with _symbolic_shapes(), (B.opaque_pair_ops() if opaque_pairs else contextlib.nullcontext()):
        gm = make_fx(flat, tracing_mode="symbolic", _allow_non_fake_inputs=True)(leaves, *sample)
    if not keep_saved_detach:
        strip_saved_output_detach(gm)
    return gm


class TrainingForward:
    """``forward(graph, atype) -> {"energy", "force", "virial"}`` of ``model``, differentiable twice.

    Args:
        model: an :class:`~graphdesc.torch.EnergyModel`; its live parameters
            are read on every call, so optimizer steps are seen.
        mode: one of :data:`MODES`.
        keep_saved_detach: skip the repair of :func:`strip_saved_output_detach`
            (a negative control for ``graphdesc doctor``).

    The trace happens on construction (a few seconds); compilation on the
    first call (``aot_eager`` ~30 s, ``inductor`` ~1 min for a small model on
    2 CPU cores), after which new batch sizes do not recompile. As usual with
    ``torch.compile``, the compiled modes allow one backward pass per forward
    (AOTAutograd reuses the saved buffers): build the whole loss, then call
    ``backward`` once.
    """

    def __init__(self, model, mode: str = "eager", *, keep_saved_detach: bool = False):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.model, self.mode = model, mode
        self._key = None
        self._fn = None
        self.keep_saved_detach = keep_saved_detach
        if mode != "eager":
            self._build()

    def _build(self):
        gm = trace_training_forward(self.model, keep_saved_detach=self.keep_saved_detach,
                                    opaque_pairs=self.mode != "traced")
        if self.mode == "traced":
            self._fn = gm
        else:
            with _compile_settings():
                self._fn = torch.compile(gm, backend=self.mode, dynamic=False)
        self._key = _leaf_key(self.model)

    def __call__(self, graph: NeighborGraph, atype: torch.Tensor) -> dict:
        if self.mode == "eager":
            out = self.model(graph, atype, create_graph=True)
            return {k: out[k] for k in OUTPUTS}
        if _leaf_key(self.model) != self._key:  # moved to another dtype/device: trace again
            self._build()
        inputs = (atype, graph.edge_index, graph.edge_vec, graph.edge_mask, graph.n_node)
        compiling = self.mode != "traced"
        with _symbolic_shapes(), (_compile_settings() if compiling else contextlib.nullcontext()):
            if compiling:
                for tensor, dim in zip(inputs, _DYNAMIC_DIMS):
                    torch._dynamo.maybe_mark_dynamic(tensor, dim)
            out = self._fn(list(self.model.leaves()), *inputs)
        return dict(zip(OUTPUTS, out))


def _compile_settings():
    """``.item()`` (the attention block width) stays in the graph instead of breaking it."""
    return torch._dynamo.config.patch(capture_scalar_outputs=True)


def _device(model):
    return next(model.buffers()).device


def _leaf_key(model):
    first = next(model.buffers())
    return first.dtype, first.device
