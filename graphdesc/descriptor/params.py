"""DPA1 parameters: a plain pytree of arrays, its initialization and conversion.

Layout (``L`` = attention layers, ``n_k`` = embedding widths)::

    {
      "type_embedding": {"w": (ntypes, dt), ["b": (dt,)]},
      "embedding": [{"w": (n_in, n_k), "b": (n_k,), ["idt": (n_k,)]}, ...],
      "attention": [{"in_w": (ng, 3H), "in_b": (3H,), "out_w": (H, ng),
                     "out_b": (ng,), "ln_w": (ng,), "ln_b": (ng,)}] * L,
      "davg": (ntypes, 4), "dstd": (ntypes, 4),
    }

``davg``/``dstd`` are the per-center-type statistics (DeePMD stores them
tiled over the ``sel`` slots; they are slot-uniform, so one row suffices).
"""

from __future__ import annotations

import numpy as np

from .. import _backend as B
from .config import DPA1Config

__all__ = ["init_params", "cast_params", "tree_map", "tree_leaves", "tree_from_leaves", "params_dtype"]


def init_params(config: DPA1Config, seed: int = 0) -> dict:
    """Fresh parameters (numpy, ``config.precision``), DeePMD-style.

    Weights ``N(0, 1/sqrt(n_in + n_out))``, biases ``N(0, 1)``, ``idt ~ N(0.1, 0.001)``,
    LayerNorm ``gamma = 1``, ``beta = 0``, ``davg = 0``, ``dstd = 1``.
    """
    rng = np.random.default_rng(seed)
    dtype = np.dtype(config.precision)

    def normal(shape, mean=0.0, std=1.0):
        return (mean + std * rng.standard_normal(shape)).astype(dtype)

    def dense(n_in, n_out, *, bias=True, idt=False):
        p = {"w": normal((n_in, n_out), std=1.0 / np.sqrt(n_in + n_out))}
        if bias:
            p["b"] = normal((n_out,))
        if idt:
            p["idt"] = normal((n_out,), 0.1, 0.001)
        return p

    te = dense(config.ntypes, config.tebd_dim, bias=config.use_tebd_bias)
    widths = (config.embed_input_dim,) + config.neuron
    embedding = [
        dense(n_in, n_out, idt=config.resnet_dt and n_out in (n_in, 2 * n_in))
        for n_in, n_out in zip(widths[:-1], widths[1:])
    ]
    ng, h = config.ng, config.attn
    attention = []
    for _ in range(config.attn_layer):
        qkv, out = dense(ng, 3 * h), dense(h, ng)
        attention.append({
            "in_w": qkv["w"], "in_b": qkv["b"], "out_w": out["w"], "out_b": out["b"],
            "ln_w": np.ones(ng, dtype), "ln_b": np.zeros(ng, dtype),
        })
    return {
        "type_embedding": te,
        "embedding": embedding,
        "attention": attention,
        "davg": np.zeros((config.ntypes, 4), dtype),
        "dstd": np.ones((config.ntypes, 4), dtype),
    }


def tree_map(fn, tree):
    """``fn`` applied to every array leaf of a dict/list tree (``None`` kept)."""
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_map(fn, v) for v in tree)
    return None if tree is None else fn(tree)


def tree_leaves(tree, prefix: str = ""):
    """``[(dotted_name, array), ...]`` of a dict/list tree, in a fixed order."""
    if isinstance(tree, dict):
        return [leaf for k in tree for leaf in tree_leaves(tree[k], f"{prefix}{k}.")]
    if isinstance(tree, (list, tuple)):
        return [leaf for i, v in enumerate(tree) for leaf in tree_leaves(v, f"{prefix}{i}.")]
    return [] if tree is None else [(prefix[:-1], tree)]


def tree_from_leaves(leaves) -> dict:
    """The tree that :func:`tree_leaves` flattened: ``[(dotted_name, array), ...] -> dict``.

    Integer name components become list positions (lists must be complete).
    """
    root: dict = {}
    for name, value in leaves:
        *path, last = name.split(".")
        node = root
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value

    def listify(node):
        if not isinstance(node, dict):
            return node
        node = {k: listify(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            if sorted(int(k) for k in node) != list(range(len(node))):
                raise ValueError(f"incomplete list in parameter tree: indices {sorted(node)}")
            return [node[str(i)] for i in range(len(node))]
        return node

    return listify(root)


def cast_params(params: dict, like=None, *, dtype=None) -> dict:
    """``params`` converted to the array library and device of ``like``.

    Args:
        like: an array of the target library (numpy, torch or jax); None keeps
            each leaf's library.
        dtype: target float dtype name or dtype of that library (default: keep).
    """
    if like is None:
        xp = None
    else:
        xp = B.namespace(like)

    def convert(a):
        lib = xp if xp is not None else B.namespace(a)
        target = a if xp is None else lib.asarray(B.to_numpy(a), device=B.device(like))
        if dtype is not None:
            target = lib.astype(target, getattr(lib, dtype) if isinstance(dtype, str) else dtype)
        return target

    return tree_map(convert, params)


def params_dtype(params: dict):
    """The float dtype of the parameters (that of the type embedding)."""
    return params["type_embedding"]["w"].dtype
