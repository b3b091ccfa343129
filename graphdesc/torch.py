"""Torch shell: :class:`DPA1Descriptor`, an ``nn.Module`` over the functional DPA1 core.

It holds the parameters (trainable ``nn.Parameter``) and the statistics
(buffers) and calls :func:`graphdesc.descriptor.dpa1_graph`; it contains no
math of its own. ``.to(device)`` and ``.to(torch.float32)`` work as usual:
inputs must then use the same device and float dtype.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from . import _backend as B
from .descriptor import DPA1Config, compute_stats, dpa1_graph, init_params, load_deepmd, params_to_deepmd
from .descriptor.params import tree_leaves, tree_map
from .graph.container import NeighborGraph

__all__ = ["DPA1Descriptor"]

_STATS = ("davg", "dstd")


class DPA1Descriptor(nn.Module):
    """The DPA1 descriptor as a torch module.

    Args:
        config: the hyperparameters.
        params: a parameter tree (numpy, torch or jax arrays); default a fresh
            :func:`~graphdesc.descriptor.init_params` with ``seed``.
        seed: initialization seed when ``params`` is None.

    ``forward(graph, atype)`` returns ``(descriptor (N, dim_out), rot_mat (N, ng, 3))``.
    LayerNorm weights are frozen when ``config.trainable_ln`` is False.
    """

    def __init__(self, config: DPA1Config, params: dict | None = None, *, seed: int = 0):
        super().__init__()
        if not isinstance(config, DPA1Config):
            raise TypeError(f"config must be a DPA1Config, got {type(config).__name__}")
        self.config = config
        params = init_params(config, seed) if params is None else params
        dtype = getattr(torch, config.precision)
        self._template = tree_map(lambda a: 0, params)  # structure only; leaves in tree_leaves order
        self._names = []
        for name, value in tree_leaves(params):
            tensor = torch.as_tensor(B.to_numpy(value), dtype=dtype).clone()
            key = name.replace(".", "__")
            self._names.append((name, key))
            if name in _STATS:
                self.register_buffer(key, tensor)
            else:
                trainable = config.trainable_ln or not name.split(".")[-1].startswith("ln_")
                self.register_parameter(key, nn.Parameter(tensor, requires_grad=trainable))

    def params(self) -> dict:
        """The parameter tree, holding this module's tensors (gradients flow)."""
        leaves = iter([getattr(self, key) for _, key in self._names])
        return tree_map(lambda _: next(leaves), self._template)

    def forward(self, graph: NeighborGraph, atype: torch.Tensor, *, deepmd_compat: bool = False,
                static: bool = False):
        """``(descriptor (N, dim_out), rot_mat (N, ng, 3))``; see :func:`~graphdesc.descriptor.dpa1_graph`."""
        return dpa1_graph(self.params(), self.config, graph, atype, deepmd_compat=deepmd_compat, static=static)

    # -- statistics ------------------------------------------------------------
    def set_stats(self, davg, dstd) -> None:
        """Install ``davg``/``dstd`` of shape ``(ntypes, 4)``."""
        for name, value in (("davg", davg), ("dstd", dstd)):
            buf = getattr(self, name)
            value = torch.as_tensor(B.to_numpy(value), dtype=buf.dtype, device=buf.device)
            if value.shape != buf.shape:
                raise ValueError(f"{name} must have shape {tuple(buf.shape)}, got {tuple(value.shape)}")
            if name == "dstd" and not bool(torch.all(value > 0)):
                raise ValueError("dstd must be > 0 everywhere")
            buf.copy_(value)

    def compute_stats(self, samples) -> None:
        """Compute and install statistics from ``(graph, atype)`` samples (DeePMD's rule)."""
        self.set_stats(*compute_stats(self.config, samples))

    # -- DeePMD-kit interchange -------------------------------------------------
    @classmethod
    def from_deepmd(cls, source) -> DPA1Descriptor:
        """Build from a DeePMD-kit DPA1 dict or model file (see :func:`~graphdesc.descriptor.load_deepmd`)."""
        config, params = load_deepmd(source)
        return cls(config, params)

    def to_deepmd(self) -> dict:
        """DeePMD-kit's ``DescrptDPA1.serialize()`` dict, in this module's current precision."""
        precision = str(self.davg.dtype).removeprefix("torch.")
        config = dataclasses.replace(self.config, precision=precision)
        return params_to_deepmd(config, self.params())

    def extra_repr(self) -> str:
        c = self.config
        return f"ntypes={c.ntypes}, sel={c.sel}, rcut={c.rcut}, neuron={list(c.neuron)}, attn_layer={c.attn_layer}"

