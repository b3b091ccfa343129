"""Load a DeePMD-kit DPA1 energy model (``DescrptDPA1`` + ``EnergyFittingNet``).

The model dict is DeePMD-kit 3.2's ``EnergyModel.serialize()`` (``@class
"Model"``, ``type "standard"``): a ``descriptor`` (loaded by
:func:`graphdesc.descriptor.params_from_deepmd`), a ``fitting`` of type
``"ener"`` and the atomic model's ``out_bias``. Atom energy in DeePMD-kit is
``fitting_net(descriptor) + bias_atom_e[type] + out_bias[type]``; graphdesc
keeps the sum of both biases as ``bias_atom_e``.

Refused by name (no silent wrong numbers): frame/atom parameters
(``numb_fparam``, ``numb_aparam``), case embeddings, ``exclude_types`` of the
fitting, ``atom_exclude_types`` / ``pair_exclude_types`` of the model,
``atom_ener``, ``use_aparam_as_mask``, spin, and outputs other than one energy.
"""

from __future__ import annotations

import numpy as np

from ..descriptor.deepmd_io import params_from_deepmd, read_model_file
from .config import EnergyConfig

__all__ = ["model_from_deepmd"]


def model_from_deepmd(source):
    """``(EnergyConfig, params)`` from a DeePMD-kit energy model dict or file.

    Args:
        source: ``EnergyModel.serialize()`` (or a dict wrapping it under
            ``model``), or a ``.pkl`` / ``.json`` / ``.yaml`` / ``.dp`` file holding one.

    The config has ``deepmd_compat=True``: energies equal DeePMD-kit's.
    Files are read as data only (see :func:`~graphdesc.descriptor.load_deepmd`);
    errors name the file.
    """
    if not isinstance(source, dict):
        return read_model_file(source, model_from_deepmd)
    model = _find_model(source)
    dconfig, dparams = params_from_deepmd(model["descriptor"])
    fit = model["fitting"]
    _refuse(model, fit)
    precision = fit.get("precision", dconfig.precision)
    if precision != dconfig.precision:
        raise ValueError(f"fitting precision {precision!r} differs from the descriptor's {dconfig.precision!r}")
    if fit["dim_descrpt"] != dconfig.dim_out:
        raise ValueError(f"fitting dim_descrpt {fit['dim_descrpt']} != descriptor width {dconfig.dim_out}")
    config = EnergyConfig(descriptor=dconfig, neuron=tuple(fit["neuron"]),
                          activation_function=fit["activation_function"], resnet_dt=bool(fit["resnet_dt"]),
                          mixed_types=bool(fit["mixed_types"]), deepmd_compat=True)
    dtype = np.dtype(dconfig.precision)
    nets = []
    for net in fit["nets"]["networks"]:
        layers = []
        for layer in net["layers"]:
            v = layer["@variables"]
            p = {"w": np.asarray(v["w"], dtype), "b": np.asarray(v["b"], dtype)}
            if v.get("idt") is not None:
                p["idt"] = np.asarray(v["idt"], dtype)
            layers.append(p)
        nets.append(layers)
    if len(nets) != (1 if config.mixed_types else config.ntypes):
        raise ValueError(f"fitting has {len(nets)} networks; expected {1 if config.mixed_types else config.ntypes}")
    bias = np.asarray(fit["@variables"]["bias_atom_e"], dtype).reshape(config.ntypes)
    out_bias = model.get("@variables", {}).get("out_bias")
    if out_bias is not None:
        bias = bias + np.asarray(out_bias, dtype).reshape(-1, config.ntypes)[0]
    return config, {"descriptor": dparams, "fitting": {"nets": nets, "bias_atom_e": bias}}


def _find_model(data: dict) -> dict:
    stack = [data]
    while stack:
        d = stack.pop()
        if isinstance(d, dict):
            if "descriptor" in d and "fitting" in d:
                return d
            stack.extend(d[k] for k in ("model", "model_dict", "atomic_model") if k in d)
    raise ValueError("no DeePMD-kit energy model found (a dict with 'descriptor' and 'fitting' entries)")


def _refuse(model: dict, fit: dict) -> None:
    if fit.get("type", "ener") != "ener" or fit.get("var_name", "energy") != "energy" or fit.get("dim_out", 1) != 1:
        raise ValueError(f"only energy fitting is supported, got type={fit.get('type')!r} "
                         f"var_name={fit.get('var_name')!r} dim_out={fit.get('dim_out')!r}")
    for key in ("numb_fparam", "numb_aparam", "dim_case_embd"):
        if fit.get(key, 0):
            raise ValueError(f"fitting {key}={fit[key]} is not supported")
    for key in ("exclude_types", "atom_ener"):
        if fit.get(key):
            raise ValueError(f"fitting {key}={fit[key]} is not supported")
    if fit.get("use_aparam_as_mask") or fit.get("spin"):
        raise ValueError("fitting with use_aparam_as_mask or spin is not supported")
    for key in ("atom_exclude_types", "pair_exclude_types"):
        if model.get(key):
            raise ValueError(f"model {key}={model[key]} is not supported")
    if model.get("type", "standard") != "standard":
        raise ValueError(f"model type {model.get('type')!r} is not supported (only 'standard')")
