"""The dense reference path: DPA1 on the padded ``(N, sel)`` neighbor layout.

Written independently of the graph path: no segment ops and no pair lists.
Attention is a plain batched softmax over all ``sel`` slots, as in DeePMD-kit:
with smooth attention the empty slots are really there (switch 0, logit -20);
without it they are removed by ``-inf`` logits. Only the elementwise pieces
(env matrix, the small networks, the readout) are shared with the graph path.
"""

from __future__ import annotations

from .. import _backend as B
from ..graph.container import NeighborGraph
from ..graph.layout import to_dense
from ..graph.validate import frame_first_node
from .config import DPA1Config
from .envmat import env_matrix, normalize_env, unit_angular
from .nets import embed_neighbors, layer, layer_norm, type_table, unit_rows
from .params import params_dtype
from .readout import readout

__all__ = ["dpa1_dense", "dense_inputs"]


def dense_inputs(graph: NeighborGraph, atype, sel: int) -> dict:
    """The padded inputs of :func:`dpa1_dense` for a graph (nearest first).

    Args:
        graph: a compact :class:`~graphdesc.graph.NeighborGraph` (``edge_vec`` in Å) of ``N`` nodes.
        atype: ``(N,)`` integer types.
        sel: slots per center (>= the max degree).

    Returns:
        dict with ``vec (N, sel, 3)`` (the graph's float dtype, Å), ``mask (N, sel)`` bool, ``atype (N,)``,
        ``nei_type (N, sel)`` (0 in empty slots) and ``pad_type (N,)`` (integers: the
        type of each center's frame's first atom, DeePMD's empty-slot type).
    """
    xp = B.namespace(graph.edge_vec, atype)
    nlist, vec, mask = to_dense(graph, sel)
    n = atype.shape[0]
    nei = xp.reshape(xp.where(mask, nlist, xp.zeros_like(nlist)), (-1,))
    nei_type = xp.where(mask, xp.reshape(xp.take(atype, nei), nlist.shape), xp.zeros_like(nlist))
    pad_type = xp.take(atype, frame_first_node(graph.n_node, n))
    return {"vec": vec, "mask": mask, "atype": atype, "nei_type": nei_type, "pad_type": pad_type}


def dpa1_dense(params: dict, config: DPA1Config, vec, mask, atype, nei_type, *,
               pad_type=None, deepmd_compat: bool = False):
    """DPA1 on padded neighbor slots.

    Args:
        params: as for :func:`graphdesc.descriptor.dpa1_graph`.
        config: as for :func:`graphdesc.descriptor.dpa1_graph`.
        vec: ``(N, sel, 3)`` float neighbor-minus-center vectors in Å; anything in empty slots.
        mask: ``(N, sel)`` bool, real neighbors.
        atype: ``(N,)`` integer center types.
        nei_type: ``(N, sel)`` integer neighbor types (ignored in empty slots).
        pad_type: ``(N,)`` type DeePMD gives empty slots (its extended atom 0);
            required with ``deepmd_compat``.
        deepmd_compat: keep DeePMD's empty-slot rows in the contraction (S2).

    Returns:
        ``(descriptor (N, ng*M [+ dt]), rot_mat (N, ng, 3))`` in ``vec``'s library and float dtype.
    """
    xp = B.namespace(vec, atype)
    n, sel = mask.shape
    if sel != config.sel:
        raise ValueError(f"the dense layout must have sel = {config.sel} slots, got {sel}")
    if vec.dtype != params_dtype(params):
        raise TypeError(f"vec has dtype {vec.dtype} but the model's parameters are {params_dtype(params)}")
    if deepmd_compat and pad_type is None:
        raise ValueError("deepmd_compat needs pad_type, the type of each frame's first atom")
    table = type_table(params, config)
    env, sw = env_matrix(vec, mask, config)  # (N, sel, 4), (N, sel)
    rt = normalize_env(env, atype, params["davg"], params["dstd"])  # empty slots: -davg/dstd
    slot_type = xp.where(mask, nei_type, pad_type[:, None] if deepmd_compat else xp.zeros_like(nei_type))
    center = xp.broadcast_to(xp.take(table, atype, axis=0)[:, None, :], (n, sel, config.tebd_dim))
    nei = xp.reshape(xp.take(table, xp.reshape(slot_type, (-1,)), axis=0), (n, sel, config.tebd_dim))
    g = embed_neighbors(params, config, rt[..., 0], nei, center)  # (N, sel, ng)
    sw2 = sw[:, :, None] * sw[:, None, :]  # (N, sel, sel), the same for every layer
    if config.attn_dotr:
        u = unit_angular(rt)
        gate = u @ xp.permute_dims(u, (0, 2, 1))
    else:
        gate = None
    for lp in params["attention"]:
        g = _dense_attention(lp, config, g, sw2, mask, gate)
    if deepmd_compat:  # DeePMD: normalized rows of all slots, empty ones included (S2)
        rows = rt
    else:  # native: E / dstd of real neighbors, each row vanishing at rcut
        g = xp.where(mask[..., None], g, xp.zeros_like(g))
        rows = env / xp.take(params["dstd"], atype, axis=0)[:, None, :]
    gr = xp.permute_dims(g, (0, 2, 1)) @ rows / sel  # (N, ng, 4)
    return readout(gr, table, atype, config)


def _dense_attention(lp, config: DPA1Config, g, sw2, mask, gate):
    """DeePMD's gated attention over all slots: ``(N, sel, ng) -> (N, sel, ng)``.

    ``sw2 (N, sel, sel)`` is ``sw_m sw_n``; ``gate (N, sel, sel)`` is ``u_m . u_n`` or None.
    """
    xp = B.namespace(g)
    h = config.attn
    qkv = layer({"w": lp["in_w"], "b": lp["in_b"]}, g, "linear", resnet=False)
    q, k, v = qkv[..., :h], qkv[..., h : 2 * h], qkv[..., 2 * h :]
    if config.normalize:
        q, k, v = (unit_rows(t, mask) for t in (q, k, v))
    logits = (q * config.alpha) @ xp.permute_dims(k, (0, 2, 1))  # (N, sel, sel)
    if config.smooth_type_embedding:
        logits = (logits + 20.0) * sw2 - 20.0
        a = _softmax(logits)
        a = a * sw2
    else:
        a = _softmax(xp.where(mask[:, None, :], logits, xp.full_like(logits, -float("inf"))))
    a = xp.where(mask[:, :, None], a, xp.zeros_like(a))  # empty query slots attend to nothing
    if gate is not None:
        a = a * gate
    y = layer({"w": lp["out_w"], "b": lp["out_b"]}, a @ v, "linear", resnet=False)
    return layer_norm(g + y, lp["ln_w"], lp["ln_b"], config.ln_eps)


def _softmax(x):
    """Softmax over the last axis; rows of all ``-inf`` give 0 (DeePMD's NaN -> 0)."""
    xp = B.namespace(x)
    top = xp.max(x, axis=-1, keepdims=True)
    top = xp.where(xp.isfinite(top), top, xp.zeros_like(top))
    e = xp.exp(x - top)
    s = xp.sum(e, axis=-1, keepdims=True)
    return e / xp.where(s > 0, s, xp.ones_like(s))
