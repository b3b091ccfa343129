"""DeePMD-kit training inputs (``input.json``), restricted to what graphdesc implements.

``graphdesc train input.json`` reads a DeePMD-kit 3.2 training input with an
``se_atten``/``dpa1`` descriptor, an ``ener`` fitting net, the ``exp``
learning rate and the ``ener`` loss. Every key is one of three kinds:

* **honoured** -- it sets what it sets in DeePMD-kit (sizes, cutoffs, the
  schedule, prefactors, the data, step counts, frequencies);
* **fixed** -- graphdesc implements one value of it; the key may be given
  with that value (``"trainable": true``, ``"numb_fparam": 0``, ...);
* anything else is **refused by name**, with the reason. Nothing is ignored.
  Keys starting with ``_`` are comments (as in DeePMD-kit's examples).

Absent keys take DeePMD-kit's *input-file* defaults (``deepmd.utils.argcheck``;
the tests compare the two tables), which differ from the ``DescrptDPA1``
class defaults that :class:`~graphdesc.descriptor.DPA1Config` follows: for
example ``neuron [10, 20, 40]``, ``axis_neuron 4``, ``smooth_type_embedding
false``, ``set_davg_zero true``, and the loss normalization
``intensive_ener_virial false`` (energy and virial errors divided by ``N``,
not ``N^2``). ``decay_steps`` is shortened as DeePMD-kit does when it is not
below ``numb_steps``.

Where graphdesc's meaning is close to but not the same as DeePMD-kit's,
:data:`NOTES` says how (batches mix systems; seeds seed graphdesc's own
initializer; ``numb_btch`` picks the first validation frames).
"""

from __future__ import annotations

import glob
import math
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DeepmdInput", "read_input", "NOTES", "DEFAULTS"]

_FIXED = object()

#: DeePMD-kit's input-file defaults of the honoured keys, by section.
DEFAULTS = {
    "descriptor": {"sel": "auto", "rcut": 6.0, "rcut_smth": 0.5, "neuron": [10, 20, 40], "axis_neuron": 4,
                   "activation_function": "tanh", "resnet_dt": False, "type_one_side": False, "precision": "default",
                   "seed": None, "env_protection": 0.0, "attn": 128, "attn_layer": 2, "attn_dotr": True,
                   "smooth_type_embedding": False, "set_davg_zero": True, "trainable_ln": True, "ln_eps": None,
                   "tebd_dim": 8, "use_tebd_bias": False, "scaling_factor": 1.0, "normalize": True,
                   "concat_output_tebd": True},
    "fitting_net": {"neuron": [120, 120, 120], "activation_function": "tanh", "precision": "default",
                    "resnet_dt": True, "seed": None},
    "model": {"data_stat_nbatch": 10},
    "learning_rate": {"stop_lr": None, "stop_lr_ratio": None, "decay_steps": 5000,
                      "scale_by_worker": "linear"},
    "loss": {"start_pref_e": 0.02, "limit_pref_e": 1.0, "start_pref_f": 1000, "limit_pref_f": 1.0,
             "start_pref_v": 0.0, "limit_pref_v": 0.0, "intensive_ener_virial": False},
    "training": {"seed": None, "disp_file": "lcurve.out", "disp_freq": 1000, "save_freq": 1000},
    "training_data": {"batch_size": "auto"},
    "validation_data": {"batch_size": "auto", "numb_btch": 1},
}

#: Keys graphdesc implements at one value only (DeePMD-kit's default), by section.
FIXED = {
    "descriptor": {"type": ("se_atten", "dpa1"), "trainable": True, "exclude_types": [], "attn_mask": False,
                   "stripped_type_embedding": (None, False), "use_econf_tebd": False, "tebd_input_mode": "concat"},
    "fitting_net": {"type": "ener", "numb_fparam": 0, "numb_aparam": 0, "default_fparam": None, "dim_case_embd": 0,
                    "trainable": True, "rcond": None, "atom_ener": [], "use_aparam_as_mask": False},
    "model": {"type": "standard", "data_stat_protect": 0.01, "pair_exclude_types": [], "atom_exclude_types": [],
              "preset_out_bias": None, "srtab_add_bias": True, "model_branch_alias": [], "info": {},
              "bridging_method": "None", "bridging_r_inner": 0.5, "bridging_r_outer": 0.8},
    "learning_rate": {"type": "exp", "decay_rate": None, "warmup_steps": 0, "warmup_ratio": None,
                      "warmup_start_factor": 0.0, "smooth": False},
    "loss": {"type": "ener", "start_pref_h": 0.0, "limit_pref_h": 0.0, "start_pref_ae": 0.0, "limit_pref_ae": 0.0,
             "start_pref_pf": 0.0, "limit_pref_pf": 0.0, "use_default_pf": False, "enable_atom_ener_coeff": False,
             "start_pref_gf": 0.0, "limit_pref_gf": 0.0, "numb_generalized_coord": 0, "use_huber": False,
             "loss_func": "mse", "f_use_norm": False, "huber_delta": 0.01, "relative_f": None},
    "training": {"enable_ema": False, "ema_decay": 0.999, "ema_ckpt_keep": None, "ckpt_keep_ratio": None,
                 "change_bias_after_training": False, "disp_training": True, "time_training": True, "disp_avg": False,
                 "profiling": False, "profiling_file": "timeline.json", "enable_profiler": False,
                 "tensorboard": False, "tensorboard_log_dir": "log", "tensorboard_freq": 1, "zero_stage": 0,
                 "enable_compile": False, "enable_tf32": False, "acc_freq": 1, "neighbor_graph_method": "auto",
                 "save_dir": None, "stat_file_mode": "update"},
    "training_data": {"auto_prob": "prob_sys_size", "sys_probs": None, "rglob_patterns": None, "min_pair_dist": 0.0},
    "validation_data": {"auto_prob": "prob_sys_size", "sys_probs": None, "rglob_patterns": None},
}

#: DeePMD-kit's other spellings of keys (argcheck aliases).
ALIASES = {
    "descriptor": {"n_axis_neuron": "axis_neuron"},
    "fitting_net": {"n_neuron": "neuron"},
    "training": {"stop_batch": "numb_steps", "num_step": "numb_steps", "num_steps": "numb_steps",
                 "numb_step": "numb_steps"},
    "training_data": {"auto_prob_style": "auto_prob", "sys_weights": "sys_probs"},
    "validation_data": {"auto_prob_style": "auto_prob", "sys_weights": "sys_probs", "numb_batch": "numb_btch"},
}

#: Why some keys DeePMD-kit knows are refused.
_WHY = {
    "stat_file": "graphdesc computes the statistics from the data each run and keeps no statistics file",
    "save_ckpt": "graphdesc writes one training checkpoint, checkpoint.npz in the output directory (--restart)",
    "max_ckpt_keep": "graphdesc keeps one training checkpoint, checkpoint.npz (plus model.npz and best.npz)",
    "data_bias_nsample": "graphdesc fits the energy bias by least squares on all training frames",
    "numb_epoch": "give numb_steps",
    "temperature": "DeePMD-kit 3.2's se_atten has no such key",
}

#: How graphdesc's meaning of some honoured keys differs from DeePMD-kit's.
NOTES = {
    "batch_size": "graphdesc's batch is one global batch of frames drawn from all systems together (DeePMD-kit "
                  "takes each batch from one system); 'auto[:N]' gives ceil(N / atoms per frame), N = 32, from the "
                  "median atom count",
    "auto_prob": "'prob_sys_size' (the only value accepted): every frame once per epoch, so each system's share "
                 "of the training follows its size, as with DeePMD-kit's default",
    "seed": "seeds graphdesc's own initializer and data order: the same seed gives the same graphdesc run, not "
            "DeePMD-kit's initial weights (descriptor seed, else training seed, else 0)",
    "numb_btch": "validation uses the first numb_btch x batch_size frames of validation_data, every time",
    "disp_freq": "steps between validations (a row in disp_file and history.json)",
    "save_freq": "steps between training checkpoints (checkpoint.npz, for --restart)",
    "data_stat_nbatch": "the descriptor statistics use the first data_stat_nbatch x batch_size training frames",
    "sel": "an int is the model's sel; 'auto[:r]' is r (default 1.1) x the data's largest neighbor count, rounded "
           "up to a multiple of 4",
    "scale_by_worker": "no effect with one process; with several, graphdesc keeps the global batch and the learning "
                       "rate, so only 'none' is accepted there",
}


@dataclass
class DeepmdInput:
    """What a DeePMD-kit input asks graphdesc for (built by :func:`read_input`).

    Attributes:
        type_map: element names, one per type.
        descriptor: :class:`~graphdesc.descriptor.DPA1Config` keyword arguments (``sel`` resolved later).
        sel: an int, or ``("auto", ratio)``.
        fitting: :class:`~graphdesc.model.EnergyConfig` keyword arguments (``neuron`` ...).
        seed: model initialization seed.
        train: :class:`~graphdesc.train.TrainConfig` keyword arguments (``batch_size`` may be ``("auto", N)``).
        training_systems / validation_systems: DeePMD-kit systems (paths), validation may be empty.
        val_batch_size: int or ``("auto", N)``; ``numb_btch``: validation batches.
        stat_batches: ``data_stat_nbatch``.
        disp_file: the learning-curve file name.
        scale_by_worker: DeePMD-kit's learning-rate scaling with the process count.
    """

    type_map: list
    descriptor: dict
    sel: object
    fitting: dict
    seed: int
    train: dict
    training_systems: list
    validation_systems: list = field(default_factory=list)
    val_batch_size: object = ("auto", 32)
    numb_btch: int = 1
    stat_batches: int = 10
    disp_file: str = "lcurve.out"
    scale_by_worker: str = "linear"


def read_input(path) -> DeepmdInput:
    """Parse and check a DeePMD-kit ``input.json``; every key is honoured or refused by name."""
    from ..safe_io import load_json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such DeePMD-kit input file: {path}")
    data = load_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a DeePMD-kit input is a JSON object, got {type(data).__name__}")
    top = _section(path, data, "", {"model", "learning_rate", "loss", "training"}, {}, {"validating": {}})
    for required in ("model", "training"):
        if required not in top:
            raise ValueError(f"{path}: no '{required}' section")
    model = _section(path, top["model"], "model", {"type_map", "descriptor", "fitting_net"},
                     DEFAULTS["model"], FIXED["model"])
    if "type_map" not in model or not isinstance(model["type_map"], list) or not model["type_map"]:
        raise ValueError(f"{path}: model.type_map must list the element of each type (graphdesc needs it)")
    for name in ("descriptor", "fitting_net"):
        if name not in model:
            raise ValueError(f"{path}: no model.{name} section")
    desc = _section(path, model["descriptor"], "model.descriptor", set(), DEFAULTS["descriptor"],
                    FIXED["descriptor"], ALIASES["descriptor"])
    fit = _section(path, model["fitting_net"], "model.fitting_net", set(), DEFAULTS["fitting_net"],
                   FIXED["fitting_net"], ALIASES["fitting_net"])
    if "learning_rate" not in top or "start_lr" not in top["learning_rate"]:
        raise ValueError(f"{path}: learning_rate.start_lr is required (as in DeePMD-kit)")
    lr = _section(path, top["learning_rate"], "learning_rate", {"start_lr"}, DEFAULTS["learning_rate"],
                  FIXED["learning_rate"])
    loss = _section(path, top.get("loss", {}), "loss", set(), DEFAULTS["loss"], FIXED["loss"])
    training = _section(path, top["training"], "training", {"training_data", "validation_data", "numb_steps"},
                        DEFAULTS["training"], FIXED["training"], ALIASES["training"])
    if "training_data" not in training or "numb_steps" not in training:
        raise ValueError(f"{path}: training needs training_data and numb_steps")
    tdata = _section(path, training["training_data"], "training.training_data", {"systems"},
                     DEFAULTS["training_data"], FIXED["training_data"], ALIASES["training_data"])
    vdata = None
    if training.get("validation_data") is not None:
        vdata = _section(path, training["validation_data"], "training.validation_data", {"systems"},
                         DEFAULTS["validation_data"], FIXED["validation_data"], ALIASES["validation_data"])

    precision = _precision(path, desc["precision"], "model.descriptor.precision")
    if _precision(path, fit["precision"], "model.fitting_net.precision") != precision:
        raise ValueError(f"{path}: model.fitting_net.precision ({fit['precision']!r}) must equal "
                         f"model.descriptor.precision ({desc['precision']!r}): a graphdesc model has one precision")
    if fit["seed"] is not None and desc["seed"] is not None and fit["seed"] != desc["seed"]:
        raise ValueError(f"{path}: model.fitting_net.seed ({fit['seed']}) differs from model.descriptor.seed "
                         f"({desc['seed']}): graphdesc initializes the model from one seed")
    steps = _int(path, training["numb_steps"], "training.numb_steps")
    seed = next((s for s in (desc["seed"], fit["seed"], training["seed"]) if s is not None), 0)
    descriptor = {k: desc[k] for k in ("rcut", "rcut_smth", "neuron", "axis_neuron", "activation_function",
                                       "resnet_dt", "type_one_side", "env_protection", "attn", "attn_layer",
                                       "attn_dotr", "smooth_type_embedding", "set_davg_zero", "trainable_ln",
                                       "tebd_dim", "use_tebd_bias", "scaling_factor", "normalize",
                                       "concat_output_tebd")}
    descriptor.update(precision=precision, ln_eps=1e-5 if desc["ln_eps"] is None else desc["ln_eps"],
                      type_map=tuple(model["type_map"]), ntypes=len(model["type_map"]))
    start_lr = lr["start_lr"]
    if lr["stop_lr"] is not None and lr["stop_lr_ratio"] is not None:
        raise ValueError(f"{path}: learning_rate.stop_lr and stop_lr_ratio exclude each other")
    stop_lr = (lr["stop_lr"] if lr["stop_lr"] is not None
               else start_lr * lr["stop_lr_ratio"] if lr["stop_lr_ratio"] is not None else 5e-8)
    decay_steps = _int(path, lr["decay_steps"], "learning_rate.decay_steps")
    if decay_steps >= steps:  # DeePMD-kit's adjustment of a decay_steps that does not fit the run
        decay_steps = 100 if steps // 10 > 100 else steps // 100 + 1
    from .loss import LossConfig

    loss_config = LossConfig(**{k: float(loss[k]) for k in DEFAULTS["loss"] if k.endswith(("_e", "_f", "_v"))},
                             intensive=bool(loss["intensive_ener_virial"]))
    train = dict(steps=steps, batch_size=_batch_size(path, tdata["batch_size"], "training.training_data.batch_size"),
                 start_lr=float(start_lr), stop_lr=float(stop_lr), decay_steps=decay_steps, loss=loss_config,
                 seed=int(training["seed"] if training["seed"] is not None else seed),
                 val_every=_int(path, training["disp_freq"], "training.disp_freq"),
                 save_every=_int(path, training["save_freq"], "training.save_freq"))
    if lr["scale_by_worker"] not in ("linear", "sqrt", "none"):
        raise ValueError(f"{path}: learning_rate.scale_by_worker must be 'linear', 'sqrt' or 'none', "
                         f"got {lr['scale_by_worker']!r}")
    return DeepmdInput(
        type_map=list(model["type_map"]), descriptor=descriptor, sel=_sel(path, desc["sel"]),
        fitting=dict(neuron=tuple(fit["neuron"]), activation_function=fit["activation_function"],
                     resnet_dt=fit["resnet_dt"]),
        seed=int(seed), train=train, training_systems=_systems(path, tdata["systems"]),
        validation_systems=[] if vdata is None else _systems(path, vdata["systems"]),
        val_batch_size=("auto", 32) if vdata is None else _batch_size(path, vdata["batch_size"],
                                                                      "training.validation_data.batch_size"),
        numb_btch=1 if vdata is None else _int(path, vdata["numb_btch"], "training.validation_data.numb_btch"),
        stat_batches=_int(path, model["data_stat_nbatch"], "model.data_stat_nbatch"),
        disp_file=str(training["disp_file"]), scale_by_worker=lr["scale_by_worker"])


def auto_batch_size(spec, natoms) -> int:
    """An int batch size from ``spec`` (an int or ``("auto", N)``): ``ceil(N / median(natoms))``."""
    if isinstance(spec, int):
        return spec
    import numpy as np

    return max(1, math.ceil(spec[1] / float(np.median(natoms))))


# -- helpers ---------------------------------------------------------------------------------------------------
def _section(path, data, where, sub, defaults, fixed, aliases=None) -> dict:
    """``data`` with aliases renamed, fixed keys checked, defaults filled; unknown keys refused by name."""
    name = where or "the top level"
    if not isinstance(data, dict):
        raise ValueError(f"{path}: {name} must be a JSON object, got {type(data).__name__}")
    out = {}
    for key, value in data.items():
        if key.startswith("_"):
            continue  # a comment
        key = (aliases or {}).get(key, key)
        full = f"{where}.{key}" if where else key
        if key in fixed:
            allowed = fixed[key] if isinstance(fixed[key], tuple) else (fixed[key],)
            if not any(value == a and isinstance(value, bool) == isinstance(a, bool) for a in allowed):
                shown = " or ".join(repr(a) for a in allowed)
                raise ValueError(f"{path}: {full} = {value!r} is not supported by graphdesc (it implements "
                                 f"{shown} only)")
            continue
        if key not in defaults and key not in sub:
            why = _WHY.get(key, "graphdesc does not implement it")
            raise ValueError(f"{path}: {full} is not supported by graphdesc: {why}. Remove it (graphdesc "
                             "refuses every key it cannot honour)")
        out[key] = value
    return {**defaults, **out}


def _precision(path, value, where) -> str:
    mapping = {"default": "float64", "float64": "float64", "float32": "float32"}
    if value not in mapping:
        raise ValueError(f"{path}: {where} = {value!r}: graphdesc supports 'float64' ('default') and 'float32'")
    return mapping[value]


def _int(path, value, where) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{path}: {where} must be a positive integer, got {value!r}")
    return value


def _batch_size(path, value, where):
    if isinstance(value, str) and (value == "auto" or value.startswith("auto:")):
        n = value.partition(":")[2] or "32"
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"{path}: {where} = {value!r}: 'auto:N' needs a positive integer N")
        return ("auto", int(n))
    if isinstance(value, list):
        if not value or len(set(value)) != 1:
            raise ValueError(f"{path}: {where} = {value!r}: graphdesc takes one batch size for all systems")
        value = value[0]
    return _int(path, value, where)


def _sel(path, value):
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, str) and (value == "auto" or value.startswith("auto:")):
        try:
            ratio = float(value.partition(":")[2] or 1.1)
        except ValueError:
            raise ValueError(f"{path}: model.descriptor.sel = {value!r}: 'auto:r' needs a number r") from None
        return ("auto", ratio)
    return _int(path, value, "model.descriptor.sel")


def _systems(path, value) -> list:
    """System paths: a string (a directory, file or glob) or a list; relative paths are taken from the working
    directory, or else from the input file's directory."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) for v in items):
        raise ValueError(f"{path}: systems must be a path or a list of paths, got {value!r}")
    out = []
    for item in items:
        base = item.split("#")[0]
        here = Path(base).exists() or (any(c in base for c in "*?[") and glob.glob(base, recursive=True))
        out.append(item if Path(base).is_absolute() or here else str(Path(path).parent / item))
    return out
