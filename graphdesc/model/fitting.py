"""DeePMD-kit's energy fitting net: descriptor rows -> atom energies.

Parameters::

    {"nets": [[{"w", "b", ["idt"]}, ...] * (len(neuron) + 1)] * (1 or ntypes),
     "bias_atom_e": (ntypes,)}

One net when ``mixed_types`` (shared by all types), else one per type.
Hidden layers are ``NativeLayer(resnet=True)`` (residual when the shape
allows it, ``idt`` scale with ``resnet_dt``); the last layer is linear to one
output. ``bias_atom_e[type]`` is added to every atom's energy.
"""

from __future__ import annotations

import numpy as np

from .. import _backend as B
from ..descriptor.nets import layer
from .config import EnergyConfig

__all__ = ["init_fitting", "fitting_energy"]


def init_fitting(config: EnergyConfig, seed: int = 0) -> dict:
    """Fresh fitting parameters (numpy, the config's precision), DeePMD's initialization.

    Weights ``N(0, 1/sqrt(n_in + n_out))``, biases ``N(0, 1)``, ``idt ~ N(0.1, 0.001)``,
    ``bias_atom_e = 0``.
    """
    rng = np.random.default_rng(seed)
    dtype = np.dtype(config.precision)
    widths = (config.descriptor.dim_out,) + config.neuron + (1,)

    def dense(n_in, n_out, idt):
        p = {"w": (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in + n_out)).astype(dtype),
             "b": rng.standard_normal(n_out).astype(dtype)}
        if idt:
            p["idt"] = (0.1 + 0.001 * rng.standard_normal(n_out)).astype(dtype)
        return p

    def net():
        hidden = len(config.neuron)
        return [dense(n_in, n_out, config.resnet_dt and i < hidden and n_out in (n_in, 2 * n_in))
                for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:]))]

    nets = [net() for _ in range(1 if config.mixed_types else config.ntypes)]
    return {"nets": nets, "bias_atom_e": np.zeros(config.ntypes, dtype)}


def _net(layers: list, x, act: str):
    """``(N, dim_in) -> (N,)``."""
    for p in layers[:-1]:
        x = layer(p, x, act, resnet=True)
    return layer(layers[-1], x, "none", resnet=False)[:, 0]


def fitting_energy(params: dict, config: EnergyConfig, descriptor, atype):
    """Atom energies ``(N,)`` in eV from ``descriptor (N, dim_out)`` and integer ``atype (N,)``, in the descriptor's
    float dtype."""
    xp = B.namespace(descriptor)
    act = config.activation_function
    nets = params["nets"]
    if config.mixed_types:
        energy = _net(nets[0], descriptor, act)
    else:  # every net on every atom, each atom keeps its type's: shapes stay static
        energy = xp.zeros(descriptor.shape[:1], dtype=descriptor.dtype, device=B.device(descriptor))
        for t, layers in enumerate(nets):
            energy = xp.where(atype == t, _net(layers, descriptor, act), energy)
    return energy + B.gather(params["bias_atom_e"], atype)
