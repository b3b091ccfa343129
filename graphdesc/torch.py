"""Torch shells: ``nn.Module`` s over the functional core, with no math of their own.

* :class:`DPA1Descriptor` -- the descriptor; ``forward(graph, atype)``.
* :class:`EnergyModel` -- descriptor + fitting net; ``forward(graph, atype)``
  returns energies, forces and virials (``autograd.grad`` w.r.t. ``edge_vec``).

Both hold their parameter tree as ``nn.Parameter`` s and the statistics
(``davg``, ``dstd``, ``bias_atom_e``) as buffers. ``.to(device)`` and
``.to(torch.float64/float32)`` work as usual: inputs must then use the same
device and float dtype.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch
from torch import nn

from . import _backend as B
from .descriptor import DPA1Config, compute_stats, dpa1_graph, init_params, load_deepmd, params_to_deepmd
from .descriptor.graph_path import check_attention, in_node_order
from .descriptor.params import tree_leaves, tree_map
from .graph.container import NeighborGraph
from .graph.forces import edge_force_virial
from .model import (EnergyConfig, atom_energy, atom_energy_stages, frame_energy, init_model_params, load_model,
                    model_from_deepmd, save_model, with_ghosts)

__all__ = ["DPA1Descriptor", "EnergyModel", "energy_and_forces"]

_BUFFERS = ("davg", "dstd", "bias_atom_e")  # statistics: set from data, not trained by gradients


class _ParamTree(nn.Module):
    """Holds a parameter tree: leaves named in ``_BUFFERS`` become buffers, the rest
    ``nn.Parameter`` s (LayerNorm ones frozen unless ``trainable_ln``)."""

    def __init__(self, params: dict, dtype: torch.dtype, trainable_ln: bool):
        super().__init__()
        self._template = tree_map(lambda a: 0, params)  # structure only; leaves in tree_leaves order
        self._keys = []
        for name, value in tree_leaves(params):
            tensor = torch.as_tensor(B.to_numpy(value), dtype=dtype).clone()
            key = name.replace(".", "__")
            self._keys.append(key)
            leaf = name.split(".")[-1]
            if leaf in _BUFFERS:
                self.register_buffer(key, tensor)
            else:
                trainable = trainable_ln or not leaf.startswith("ln_")
                self.register_parameter(key, nn.Parameter(tensor, requires_grad=trainable))

    def params(self) -> dict:
        """The parameter tree, holding this module's tensors (gradients flow)."""
        leaves = iter(self.leaves())
        return tree_map(lambda _: next(leaves), self._template)

    def leaf_names(self) -> list:
        """Names of the parameters and buffers, in parameter-tree order (``"descriptor__davg"`` ...)."""
        return list(self._keys)

    def leaves(self) -> list:
        """The parameters and buffers, in :meth:`leaf_names` order."""
        return [getattr(self, key) for key in self._keys]

    def load_params(self, params: dict) -> None:
        """Copy a parameter tree of this module's structure (any array library) into its tensors, in place.

        The module keeps its dtype, device and tensors (an optimizer holding them stays valid).
        """
        values = {name.replace(".", "__"): value for name, value in tree_leaves(params)}
        if sorted(values) != sorted(self._keys):
            raise ValueError(f"params do not match this module: missing {sorted(set(self._keys) - set(values))[:5]}, "
                             f"unexpected {sorted(set(values) - set(self._keys))[:5]}")
        with torch.no_grad():
            for key, leaf in zip(self._keys, self.leaves()):
                leaf.copy_(torch.as_tensor(B.to_numpy(values[key]), dtype=leaf.dtype, device=leaf.device))

    def _set_buffer(self, key: str, value, name: str, positive: bool = False) -> None:
        buf = getattr(self, key)
        value = torch.as_tensor(B.to_numpy(value), dtype=buf.dtype, device=buf.device)
        if value.shape != buf.shape:
            raise ValueError(f"{name} must have shape {tuple(buf.shape)}, got {tuple(value.shape)}")
        if not bool(torch.all(torch.isfinite(value))):
            raise ValueError(f"{name} must be finite")
        if positive and not bool(torch.all(value > 0)):
            raise ValueError(f"{name} must be > 0 everywhere")
        buf.copy_(value)

    def _precision(self) -> str:
        return str(getattr(self, self._keys[0]).dtype).removeprefix("torch.")


class DPA1Descriptor(_ParamTree):
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
        if not isinstance(config, DPA1Config):
            raise TypeError(f"config must be a DPA1Config, got {type(config).__name__}")
        params = init_params(config, seed) if params is None else params
        super().__init__(params, getattr(torch, config.precision), config.trainable_ln)
        self.config = config

    def forward(self, graph: NeighborGraph, atype: torch.Tensor, *, deepmd_compat: bool = False,
                static: bool = False, attention: str = "auto"):
        """``(descriptor (N, dim_out), rot_mat (N, ng, 3))``; see :func:`~graphdesc.descriptor.dpa1_graph`."""
        return dpa1_graph(self.params(), self.config, graph, atype, deepmd_compat=deepmd_compat, static=static,
                          attention=attention)

    def set_stats(self, davg, dstd) -> None:
        """Install ``davg``/``dstd`` of shape ``(ntypes, 4)``."""
        self._set_buffer("davg", davg, "davg")
        self._set_buffer("dstd", dstd, "dstd", positive=True)

    def compute_stats(self, samples) -> None:
        """Compute and install statistics from ``(graph, atype)`` samples (DeePMD's rule)."""
        self.set_stats(*compute_stats(self.config, samples))

    @classmethod
    def from_deepmd(cls, source) -> DPA1Descriptor:
        """Build from a DeePMD-kit DPA1 dict or model file (see :func:`~graphdesc.descriptor.load_deepmd`)."""
        config, params = load_deepmd(source)
        return cls(config, params)

    def to_deepmd(self) -> dict:
        """DeePMD-kit's ``DescrptDPA1.serialize()`` dict, in this module's current precision."""
        config = dataclasses.replace(self.config, precision=self._precision())
        return params_to_deepmd(config, self.params())

    def extra_repr(self) -> str:
        c = self.config
        return f"ntypes={c.ntypes}, sel={c.sel}, rcut={c.rcut}, neuron={list(c.neuron)}, attn_layer={c.attn_layer}"


class EnergyModel(_ParamTree):
    """A DPA1 energy model: descriptor + DeePMD-kit's energy fitting net.

    Args:
        config: an :class:`~graphdesc.model.EnergyConfig`.
        params: a model tree ``{"descriptor", "fitting"}`` (any array library);
            default :func:`~graphdesc.model.init_model_params` with ``seed``.
        seed: initialization seed when ``params`` is None.
        attention: the descriptor's block-stage layout, ``"auto"`` (default),
            ``"blocks"``, ``"buckets"`` or ``"pairs"`` (same numbers; see
            :func:`~graphdesc.descriptor.dpa1_graph`). An attribute: set
            ``model.attention`` to switch; an exported package keeps the one
            it was exported with (``"auto"``: buckets on CPU, blocks on CUDA).

    ``forward(graph, atype)`` returns a dict of ``energy (nf,)``,
    ``atom_energy (N,)`` and, with ``forces=True`` (default), ``force (N, 3)``,
    ``virial (nf, 3, 3)`` and ``atom_virial (N, 3, 3)``. Virials follow
    DeePMD's sign: ``virial = -dE/d(strain)``, so ``stress = -virial / volume``.
    """

    def __init__(self, config: EnergyConfig, params: dict | None = None, *, seed: int = 0,
                 attention: str = "auto"):
        if not isinstance(config, EnergyConfig):
            raise TypeError(f"config must be an EnergyConfig, got {type(config).__name__}")
        check_attention(attention)
        params = init_model_params(config, seed) if params is None else params
        super().__init__(params, getattr(torch, config.precision), config.descriptor.trainable_ln)
        self.config = config
        self.attention = attention

    def atom_energy(self, graph: NeighborGraph, atype: torch.Tensor, *, static: bool = False,
                    num_local: int | None = None):
        """``(L,)`` atom energies of the local nodes (``(N,)`` without ghosts); no forces."""
        return atom_energy(self.params(), self.config, graph, atype, static=static, num_local=num_local,
                           attention=self.attention)

    def forward(self, graph: NeighborGraph, atype: torch.Tensor, *, forces: bool = True, static: bool = False,
                create_graph: bool | None = None, num_local: int | None = None) -> dict:
        """Energies, and forces and virials from ``autograd.grad`` w.r.t. ``graph.edge_vec``.

        Args:
            graph: compact graph (or shape-static layout with ``static=True``).
            atype: ``(N,)`` int64 atom types.
            forces: also compute ``force``, ``virial``, ``atom_virial``.
            create_graph: keep the force graph for a force/virial loss; default
                ``self.training``.
            num_local: ``L`` when the graph carries ghosts (an MD engine's
                halo): nodes ``[0, L)`` are local atoms, frame by frame, and
                ``n_node`` counts them; nodes ``[L, N)`` are ghosts, only ever
                the ``src`` of an edge. Ghosts get no descriptor and an atom
                energy of exactly 0, but their force (``-sum g`` over their
                edges) and atom virial, for the engine to send to the owner
                atom. ``energy`` and ``virial`` are the local domain's.
                Default: no ghosts.

        Returns:
            dict of tensors in the model's dtype: ``energy (nf,)`` eV, ``atom_energy (N,)`` eV, and with
            ``forces``: ``force (N, 3)`` eV/Å, ``atom_virial (N, 3, 3)`` eV, ``virial (nf, 3, 3)`` eV
            (``-dE/d(strain)``).
        """
        create_graph = self.training if create_graph is None else create_graph
        return energy_and_forces(self, graph, atype, forces=forces, static=static, create_graph=create_graph,
                                 num_local=num_local)

    def compute_stats(self, samples) -> None:
        """Compute and install the descriptor statistics from ``(graph, atype)`` samples."""
        davg, dstd = compute_stats(self.config.descriptor, samples)
        self._set_buffer("descriptor__davg", davg, "davg")
        self._set_buffer("descriptor__dstd", dstd, "dstd", positive=True)

    def set_energy_bias(self, bias) -> None:
        """Install the per-type energy shift ``bias_atom_e (ntypes,)``."""
        self._set_buffer("fitting__bias_atom_e", bias, "bias_atom_e")

    @classmethod
    def from_deepmd(cls, source) -> EnergyModel:
        """Build from a DeePMD-kit energy model dict or file (see :func:`~graphdesc.model.model_from_deepmd`)."""
        return cls(*model_from_deepmd(source))

    def save(self, path, *, extra: dict | None = None, state: dict | None = None):
        """Write a one-file checkpoint (config, parameters, statistics), atomically; returns its path.

        ``extra`` (JSON) and ``state`` (arrays) are a training checkpoint's
        additions (see :mod:`graphdesc.model.checkpoint`)."""
        return save_model(path, self.current_config(), self.params(), extra=extra, state=state)

    def current_config(self) -> EnergyConfig:
        """The config with the precision the parameters have now (after ``.float()``/``.double()``), as a
        checkpoint records it."""
        return dataclasses.replace(
            self.config, descriptor=dataclasses.replace(self.config.descriptor, precision=self._precision()))

    @classmethod
    def load(cls, path) -> EnergyModel:
        """A model from a checkpoint written by :meth:`save` (or :func:`~graphdesc.model.save_model`)."""
        config, params, _ = load_model(path)
        return cls(config, params)

    def extra_repr(self) -> str:
        c = self.config
        return (f"ntypes={c.ntypes}, rcut={c.rcut}, sel={c.descriptor.sel}, attn_layer={c.descriptor.attn_layer}, "
                f"fitting={list(c.neuron)}, mixed_types={c.mixed_types}, deepmd_compat={c.deepmd_compat}")


def energy_and_forces(model: EnergyModel, graph: NeighborGraph, atype: torch.Tensor, *, forces: bool = True,
                      static: bool = False, create_graph: bool = False, num_local=None) -> dict:
    """The model's outputs on ``graph`` (see :meth:`EnergyModel.forward`); traceable for export.

    Args:
        model: the :class:`EnergyModel`.
        graph: a torch :class:`~graphdesc.graph.NeighborGraph` of ``N`` nodes and ``nf`` frames, ``edge_vec (E, 3)``
            in Å in the model's float dtype.
        atype: ``(N,)`` int64 atom types.
        forces: also compute forces and virials (as for :meth:`EnergyModel.forward`).
        static: ``graph`` is the shape-static layout.
        create_graph: keep the force graph (for a force/virial loss).
        num_local: ``L`` when nodes ``[L, N)`` are ghosts (see :meth:`EnergyModel.forward`).

    Returns:
        dict of tensors in the model's dtype: ``energy (nf,)`` eV, ``atom_energy (N,)`` eV (0 on ghosts), and with
        ``forces``: ``force (N, 3)`` eV/Å, ``atom_virial (N, 3, 3)`` eV, ``virial (nf, 3, 3)`` eV.

    Without ``create_graph`` and with the centers in several pieces (large
    systems on CPU), the energy gradient is taken piece by piece
    (:func:`_piecewise_gradient`) and the outputs carry no autograd graph.
    """
    _check_torch_inputs(graph, atype)
    n = atype.shape[0]
    vec = graph.edge_vec
    # without a force loss the gradient is taken once: cheaper autograd nodes (B.first_order)
    with torch.enable_grad(), (contextlib.nullcontext() if create_graph else B.first_order()):
        if forces and not vec.requires_grad:
            vec = vec.detach().requires_grad_(True)
            graph = graph.replace(edge_vec=vec)
        parts, pieces, energy_of = atom_energy_stages(model.params(), model.config, graph, atype, static=static,
                                                      num_local=num_local, attention=model.attention)
        if forces and not create_graph and len(pieces) > 1:
            atom_e, g = _piecewise_gradient(parts, pieces, energy_of, vec)
        else:
            atom_e = torch.cat([energy_of(piece) for piece in pieces]) if len(pieces) > 1 else energy_of(pieces[0])
            g = None
        atom_e = in_node_order(atom_e, parts)
        energy = frame_energy(atom_e, graph.n_node)
        out = {"energy": energy, "atom_energy": atom_e if num_local is None else with_ghosts(atom_e, n)}
        if not forces:
            return out
        if g is None:
            (g,) = torch.autograd.grad(energy.sum(), vec, create_graph=create_graph, allow_unused=True,
                                       materialize_grads=True)
    out["force"], out["atom_virial"], out["virial"] = edge_force_virial(g, graph, n, num_local)
    return out


def _check_torch_inputs(graph, atype) -> None:
    """The torch shell takes a NeighborGraph of torch tensors and torch ``atype`` (values: the core's checks)."""
    if not isinstance(graph, NeighborGraph):
        raise TypeError(f"graph must be a NeighborGraph, got {type(graph).__name__}")
    for name, x in (("edge_index", graph.edge_index), ("edge_vec", graph.edge_vec), ("edge_mask", graph.edge_mask),
                    ("n_node", graph.n_node), ("atype", atype)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor for a torch model, got {type(x).__name__} "
                            "(build the graph from torch positions, or convert it)")


def _piecewise_gradient(parts: dict, pieces: list, energy_of, vec: torch.Tensor):
    """Atom energies ``(N,)`` and ``d(sum E)/d(vec)`` ``(E, 3)``, one piece of centers at a time.

    Each piece's block stage is differentiated (down to its rows of ``parts``)
    right after it runs, so its saved activations are gone before the next
    piece starts; one backward through the edge stage then takes the gathered
    ``parts`` gradients to ``vec``. Same numbers as one ``autograd.grad`` of the
    total energy, with the peak memory of the edge stage plus one piece instead
    of every piece's activations at once. First derivatives only.
    """
    keys = [k for k, v in parts.items() if v.requires_grad]
    grads = {k: [] for k in keys}
    energies = []
    for piece in pieces:
        leaves = {k: v.detach().requires_grad_(True) if k in keys else v for k, v in piece.items()}
        e = energy_of(leaves)
        piece_grads = torch.autograd.grad(e.sum(), [leaves[k] for k in keys], allow_unused=True,
                                          materialize_grads=True)
        for k, gk in zip(keys, piece_grads):
            grads[k].append(gk)
        energies.append(e.detach())
    (g,) = torch.autograd.grad([parts[k] for k in keys], vec, [torch.cat(grads[k]) for k in keys],
                               allow_unused=True, materialize_grads=True)
    return torch.cat(energies), g
