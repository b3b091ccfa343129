"""The small networks of DPA1, functional and written once for every array library.

A *layer* is a dict ``{"w": (n_in, n_out), "b": (n_out,) optional,
"idt": (n_out,) optional}`` applied as DeePMD's ``NativeLayer``::

    y = act(x @ w + b);  y = y * idt;  y = y + x      if resnet and n_out == n_in
                                       y = y + [x, x] if resnet and n_out == 2 n_in
"""

from __future__ import annotations

import math

from .. import _backend as B
from .config import DPA1Config

__all__ = ["activation", "layer", "embedding_net", "layer_norm", "unit_rows", "type_table", "embedding_input",
           "embed_rows", "embed_neighbors"]


def activation(name: str, x):
    """DeePMD's activation ``name`` applied elementwise (see ``ACTIVATIONS``)."""
    xp = B.namespace(x)
    if name == "tanh":
        return xp.tanh(x)
    if name in ("linear", "none"):
        return x
    if name == "relu":
        return xp.maximum(x, xp.zeros_like(x))
    if name == "relu6":
        return xp.clip(x, 0.0, 6.0)
    if name == "sigmoid":
        return 1.0 / (1.0 + xp.exp(-x))
    if name == "silu":
        return x / (1.0 + xp.exp(-x))
    if name == "softplus":
        return xp.log1p(xp.exp(-xp.abs(x))) + xp.maximum(x, xp.zeros_like(x))
    if name in ("gelu", "gelu_tf"):  # tanh approximation, as DeePMD
        return 0.5 * x * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    raise ValueError(f"unknown activation {name!r}")


def layer(params: dict, x, act: str, *, resnet: bool):
    """One ``NativeLayer``: ``(..., n_in) -> (..., n_out)``."""
    xp = B.namespace(x)
    w = params["w"]
    y = activation(act, B.affine(x, w, params.get("b")))
    if params.get("idt") is not None:
        y = y * params["idt"]
    if resnet:
        n_in, n_out = w.shape
        if n_out == n_in:
            y = y + x
        elif n_out == 2 * n_in:
            y = y + xp.concat([x, x], axis=-1)
    return y


def embedding_net(layers: list, x, act: str):
    """DeePMD's ``EmbeddingNet``: every layer with bias and ``resnet=True``."""
    for p in layers:
        x = layer(p, x, act, resnet=True)
    return x


def layer_norm(x, weight, bias, eps: float):
    """LayerNorm over the last axis, population variance: ``(..., C) -> (..., C)``
    (:func:`graphdesc._backend.layer_norm`: torch's fused kernel, elsewhere the formula)."""
    return B.layer_norm(x, weight, bias, eps)


def unit_rows(x, mask, scale=1.0):
    """``scale * x (..., F)`` divided by its row L2 norms, no epsilon (as DeePMD); rows where
    ``mask (...)`` is False are divided by 1: their values never matter, only their finiteness
    (:func:`graphdesc._backend.unit_rows`: one autograd node in eager torch, elsewhere the formula)."""
    return B.unit_rows(x, mask, scale)


def type_table(params: dict, config: DPA1Config):
    """The type embedding ``T (ntypes, dt)``: a linear layer on one-hot rows.

    ``T = I @ w (+ b)``, plus the one-hot rows themselves when
    ``dt == ntypes`` (or twice when ``dt == 2 ntypes``): the layer's residual.
    """
    te = params["type_embedding"]
    xp = B.namespace(te["w"])
    eye = xp.eye(config.ntypes, dtype=te["w"].dtype, device=B.device(te["w"]))
    return layer(te, eye, "linear", resnet=True)


def embedding_input(config: DPA1Config, s, t_nei, t_center):
    """The embedding net's input rows in DeePMD's "concat" mode, ``(..., 1 + dt)`` or ``(..., 1 + 2 dt)``.

    Args:
        s: ``(...)`` normalized radial channel ``R~[..., 0]``.
        t_nei: ``(..., dt)`` type embedding of the neighbor.
        t_center: ``(..., dt)`` type embedding of the center (ignored with
            ``type_one_side``).

    Returns:
        ``[s, t_nei(, t_center)]`` along the last axis.
    """
    xp = B.namespace(s)
    parts = [s[..., None], t_nei] if config.type_one_side else [s[..., None], t_nei, t_center]
    return xp.concat(parts, axis=-1)


def embed_rows(params: dict, config: DPA1Config, x):
    """The embedding ``G (..., ng)`` of :func:`embedding_input` rows ``x (..., F)``."""
    return embedding_net(params["embedding"], x, config.activation_function)


def embed_neighbors(params: dict, config: DPA1Config, s, t_nei, t_center):
    """The embedding ``G (..., ng)`` of neighbor rows: :func:`embed_rows` of :func:`embedding_input`."""
    return embed_rows(params, config, embedding_input(config, s, t_nei, t_center))
