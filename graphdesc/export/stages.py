"""A package's three programs, and the driver that runs the block stage chunk by chunk.

One traced program holds the whole block stage's activations at once (every
center's attention, forward and backward): about 2 MiB/atom in fp64 against
eager's 0.7, and slower once they leave the cache. Eager takes the gradient
one chunk of centers at a time (:func:`graphdesc.torch.energy_and_forces`);
a package does the same with three compiled programs and a short loop:

1. ``edges(atype, edge_index, edge_vec, edge_mask, n_node, ghost_atype) -> parts``:
   the edge stage (each edge's embedding input and geometry, stacked into
   per-center blocks), :func:`~graphdesc.descriptor.graph_path.center_inputs`'
   arrays, each with ``L`` rows, the differentiable ones first (``x``,
   ``rows``, ``sw``, and ``u`` with ``attn_dotr``).
2. ``block(*rows a:b of parts) -> (atom_energy (C,), d energy / d part (C, ...) ...)``:
   embedding net, attention, contraction, readout and fitting on ``C`` centers, and their
   gradient w.r.t. the differentiable parts; run on chunks of centers.
3. ``tail(atype, ..., ghost_atype, atom_energy (L,), *d parts[, edge, center]) -> outputs``:
   the edge stage again, its backward from the gathered part gradients to
   ``edge_vec``, then force and virial assembly (schema outputs).

With ``attention="pairs"`` or ``"buckets"`` the parts are ragged
(:mod:`graphdesc.descriptor.ragged`): the edge rows ``(R, ...)`` come first,
then the center rows ``(L, ...)``; a chunk is centers ``a:b`` with their edge
rows ``o[a]:o[b]`` (``o`` the running sum of ``slots``), cut by
:func:`~graphdesc.descriptor.ragged.ragged_cuts`. Atom energies come back in
row order; the tail, also given the parts ``edge (R,)`` and ``center (L,)``,
puts them in node order and the edge rows' gradients on their edges.

The tail recomputes the edge stage instead of keeping its activations
between programs (a few % of the time; the attention dominates). Every
program runs on any ``L``, ``G``, ``E``, ``C``, block width and ``nf``.
:func:`run_stages` is the loop; the C++ side (``graphdesc/include``) has the same.
"""

from __future__ import annotations

import copy

__all__ = ["stage_functions", "run_stages", "chunk_rows", "package_attention"]


def package_attention(model, device) -> str:
    """The block-stage layout of ``model``'s package for ``device``: the model's, with ``"auto"``
    resolved as eager resolves it there (buckets on CPU, where the package runs in chunks; blocks elsewhere)."""
    import torch

    if model.attention != "auto":
        return model.attention
    return "buckets" if torch.device(device).type == "cpu" else "blocks"


def stage_functions(model):
    """The three programs of a package, as eager torch functions of a frozen copy of ``model``.

    Returns ``(edges, block, tail, keys, n_grads)``: ``keys`` names ``edges``'
    outputs in order; the first ``n_grads`` are differentiable (``block``
    returns their gradients and ``tail`` takes them).
    """
    import torch

    from ..descriptor.graph_path import Blocks, center_inputs, edge_stage
    from ..descriptor.ragged import to_node_order
    from ..graph.container import NeighborGraph
    from ..graph.forces import edge_force_virial
    from ..model import frame_energy, with_ghosts
    from ..model.energy import center_energy

    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    params, config = frozen.params(), frozen.config
    attention = package_attention(frozen, frozen.params()["descriptor"]["davg"].device)
    desc_params, desc_config = params["descriptor"], config.descriptor
    keys = None  # set below from the parts' own order

    def _graph(atype, edge_index, edge_vec, edge_mask, n_node, ghost_atype):
        return NeighborGraph(edge_index, edge_vec, edge_mask, n_node), torch.cat([atype, ghost_atype])

    def parts_of(atype, edge_index, edge_vec, edge_mask, n_node, ghost_atype):
        graph, nodes = _graph(atype, edge_index, edge_vec, edge_mask, n_node, ghost_atype)
        return center_inputs(desc_params, desc_config, graph, nodes, deepmd_compat=config.deepmd_compat,
                             num_local=atype.shape[0], attention=attention)[1]

    def edges(*inputs):
        parts = parts_of(*inputs)
        return tuple(parts[k] for k in keys)

    def block(*values):
        with torch.enable_grad():
            piece = {k: v.detach().requires_grad_(True) if i < n_grads else v
                     for i, (k, v) in enumerate(zip(keys, values))}
            atom_e = center_energy(params, config, piece, attention=attention)
            grads = torch.autograd.grad(atom_e.sum(), [piece[k] for k in keys[:n_grads]], allow_unused=True,
                                        materialize_grads=True)
        return (atom_e.detach(), *grads)

    def tail(atype, edge_index, edge_vec, edge_mask, n_node, ghost_atype, atom_e, *grads):
        num_local = atype.shape[0]
        if attention != "blocks":  # ragged: the parts' edge of each edge row and node of each center row come last
            *grads, rows, center = grads
            atom_e = to_node_order(atom_e, center)  # row order -> node order
        with torch.enable_grad():
            vec = edge_vec.detach().requires_grad_(True)
            graph, nodes = _graph(atype, edge_index, vec, edge_mask, n_node, ghost_atype)
            _, edge, _ = edge_stage(desc_params, desc_config, graph, nodes, num_local=num_local)
            if attention == "blocks":
                blocks = Blocks(graph.edge_mask, graph.dst, num_local, vec.dtype, width=grads[0].shape[1])
                d_edge = [blocks.unstack(d) for d in grads]
            else:  # edge rows -> edges
                d_edge = [torch.zeros_like(edge[k]).index_add(0, rows, d) for k, d in zip(keys, grads)]
            (g,) = torch.autograd.grad([edge[k] for k in keys[:n_grads]], vec, d_edge,
                                       allow_unused=True, materialize_grads=True)
        n = nodes.shape[0]
        force, atom_virial, virial = edge_force_virial(g.detach(), graph.replace(edge_vec=edge_vec), n, num_local)
        return frame_energy(atom_e, n_node), with_ghosts(atom_e, n), force, virial, atom_virial

    # the parts' order: the edge stage's differentiable rows first (center_inputs builds them first)
    probe = _probe_inputs(params)
    with torch.no_grad():
        parts = parts_of(*probe)
        edge_keys = edge_stage(desc_params, desc_config, *_graph(*probe), num_local=1)[1]
    keys = tuple(parts)
    n_grads = len(edge_keys)
    if keys[:n_grads] != tuple(edge_keys):
        raise AssertionError(f"center_inputs must list the edge rows first, got {keys}")
    return edges, block, tail, keys, n_grads


def _probe_inputs(params):
    """A one-atom, no-edge input, enough to read the parts' names and order."""
    import torch

    dtype, device = params["descriptor"]["davg"].dtype, params["descriptor"]["davg"].device
    i64 = dict(dtype=torch.int64, device=device)
    return (torch.zeros(1, **i64), torch.zeros((2, 0), **i64), torch.zeros((0, 3), dtype=dtype, device=device),
            torch.zeros(0, dtype=torch.bool, device=device), torch.ones(1, **i64), torch.zeros(0, **i64))


def chunk_rows(num_local: int, width: int, attn: int, chunk_elements: int) -> int:
    """Centers per call of the block program: the largest temporary, ``(rows, width,
    max(width, attn))``, holds about ``chunk_elements`` floats; 0 means all ``L`` at once."""
    from ..descriptor.graph_path import chunk_rows as rows

    return max(num_local, 1) if chunk_elements <= 0 else rows(width, attn, chunk_elements)


def run_stages(edges, block, tail, inputs, *, n_grads: int, attn: int, chunk_elements: int,
               attention: str = "blocks", keys=(), ng: int = 0):
    """The package's outputs from its three programs (see the module doc).

    Args:
        edges, block, tail: the programs (compiled, or :func:`stage_functions`' eager ones).
        inputs: the schema's six tensors, contiguous.
        n_grads: how many of ``edges``' outputs are differentiable (first).
        attn, chunk_elements: see :func:`chunk_rows`.
        attention: the parts' layout; ragged ones (``"pairs"``, ``"buckets"``)
            also need the parts' names ``keys`` and the embedding width ``ng``.

    Returns:
        the schema's outputs, a tuple (``energy``, ``atom_energy``, ``force``, ``virial``, ``atom_virial``).
    """
    import numpy as np
    import torch

    from ..descriptor.ragged import EDGE_ROWS, ragged_cuts

    parts = list(edges(*inputs))
    num_local = inputs[0].shape[0]
    atom_e = torch.empty(num_local, dtype=parts[0].dtype, device=parts[0].device)
    # contiguous, whatever layout the edge program chose for the parts: the tail reads
    # its inputs with the (contiguous) strides it was traced with
    grads = [torch.empty(p.shape, dtype=p.dtype, device=p.device) for p in parts[:n_grads]]
    extra = []  # the tail's further inputs
    if attention == "blocks":
        rows = chunk_rows(num_local, parts[0].shape[1], attn, chunk_elements)
        centers = edge_rows = list(range(0, num_local, rows)) + [num_local]
        is_edge = [False] * len(parts)
    else:
        extra = [parts[list(keys).index(k)] for k in ("edge", "center")]
        slots = parts[list(keys).index("slots")].cpu().numpy()
        cuts = ragged_cuts(slots, attention, attn, ng, chunk_elements)
        centers = np.cumsum([0] + cuts).tolist()
        edge_rows = np.concatenate([[0], np.cumsum(slots)])[centers].tolist()
        is_edge = [k in EDGE_ROWS for k in keys]
    for i in range(len(centers) - 1):
        bounds = [(edge_rows[i], edge_rows[i + 1]) if e else (centers[i], centers[i + 1]) for e in is_edge]
        out = block(*(p[a:b].contiguous() for p, (a, b) in zip(parts, bounds)))
        atom_e[centers[i]:centers[i + 1]] = out[0]
        for grad, piece, (a, b) in zip(grads, out[1:], bounds):
            grad[a:b] = piece
    del parts  # the edge stage's blocks are not needed by the tail
    return tail(*inputs, atom_e, *grads, *extra)
