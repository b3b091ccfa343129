"""DeePMD-kit interchange: ``DescrptDPA1.serialize()`` dicts and the files that hold them.

graphdesc reads and writes DeePMD-kit 3.2's serialized DPA1 dict
(DPA1_MATH.md section 10) without importing DeePMD-kit. Features graphdesc does
not implement (strip mode, compression, type exclusion, electronic-configuration
type embedding, spin, ``lmax != 1``, the exponential switch, slot-dependent
statistics) are refused with an error that names them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import _backend as B
from .config import DPA1Config
from .params import tree_map

__all__ = ["params_from_deepmd", "params_to_deepmd", "load_deepmd", "read_model_file"]

_CONFIG_KEYS = (
    "rcut", "rcut_smth", "sel", "ntypes", "neuron", "axis_neuron", "tebd_dim", "tebd_input_mode",
    "resnet_dt", "type_one_side", "attn", "attn_layer", "attn_dotr", "attn_mask", "scaling_factor",
    "normalize", "temperature", "smooth_type_embedding", "trainable_ln", "ln_eps", "env_protection",
    "concat_output_tebd", "precision", "activation_function", "set_davg_zero", "use_tebd_bias", "type_map",
)


def params_from_deepmd(serialized: dict):
    """Read a DeePMD-kit ``DescrptDPA1.serialize()`` dict.

    Args:
        serialized: the descriptor dict (``type == "dpa1"``), with numpy arrays
            (or nested lists) as variables.

    Returns:
        ``(config, params)``: a :class:`DPA1Config` and a numpy parameter tree
        in the dict's precision.

    Raises:
        ValueError: not a DPA1 dict, or a feature graphdesc does not implement.
    """
    d = serialized
    if not isinstance(d, dict) or d.get("type") not in ("dpa1", "se_atten") or d.get("@class") != "Descriptor":
        raise ValueError("serialized must be a DeePMD-kit DPA1 descriptor dict (@class 'Descriptor', type 'dpa1')")
    _refuse(d)
    kw = {k: d[k] for k in _CONFIG_KEYS if k in d}
    kw["ln_eps"] = 1e-5 if kw.get("ln_eps") is None else kw["ln_eps"]
    te_layers = d["type_embedding"]["embedding"]["layers"]
    if len(te_layers) != 1:
        raise ValueError(f"type_embedding: expected one layer, got {len(te_layers)}")
    kw["use_tebd_bias"] = te_layers[0]["@variables"].get("b") is not None  # version-1 dicts lack the key
    kw["attn_layer"] = len(d["attention_layers"]["attention_layers"])
    config = DPA1Config(**kw)
    dtype = np.dtype(config.precision)
    arr = lambda x: None if x is None else np.asarray(x, dtype=dtype)  # noqa: E731

    def layer(ld):
        v = ld["@variables"]
        out = {"w": arr(v["w"])}
        if v.get("b") is not None:
            out["b"] = arr(v["b"])
        if v.get("idt") is not None:
            out["idt"] = arr(v["idt"])
        return out

    nets = d["embeddings"]["networks"]
    if d["embeddings"].get("ndim", 0) != 0 or len(nets) != 1:
        raise ValueError("embeddings: expected one shared embedding network (ndim 0)")
    attention = []
    for al in d["attention_layers"]["attention_layers"]:
        inner = al["attention_layer"]
        if inner.get("num_heads", 1) != 1:
            raise ValueError(f"attention: num_heads must be 1, got {inner['num_heads']}")
        if bool(inner.get("smooth", config.smooth_type_embedding)) != config.smooth_type_embedding:
            raise ValueError("attention layer 'smooth' flag differs from smooth_type_embedding")
        qkv, out, ln = layer(inner["in_proj"]), layer(inner["out_proj"]), al["attn_layer_norm"]["@variables"]
        attention.append({"in_w": qkv["w"], "in_b": qkv["b"], "out_w": out["w"], "out_b": out["b"],
                          "ln_w": arr(ln["w"]), "ln_b": arr(ln["b"])})
    params = {
        "type_embedding": layer(te_layers[0]),
        "embedding": [layer(ld) for ld in nets[0]["layers"]],
        "attention": attention,
        "davg": _slot_uniform("davg", arr(d["@variables"]["davg"]), config),
        "dstd": _slot_uniform("dstd", arr(d["@variables"]["dstd"]), config),
    }
    return config, params


def _refuse(d: dict) -> None:
    problems = []
    if d.get("tebd_input_mode", "concat") != "concat":
        problems.append(f"tebd_input_mode {d['tebd_input_mode']!r}")
    if d.get("compress") or d.get("@version", 2) == 3:
        problems.append("a compressed model")
    if d.get("exclude_types"):
        problems.append(f"exclude_types {d['exclude_types']}")
    if d.get("use_econf_tebd"):
        problems.append("use_econf_tebd")
    if d.get("spin") is not None:
        problems.append("spin")
    if d.get("lmax", 1) != 1:
        problems.append(f"lmax {d['lmax']}")
    if d.get("env_mat", {}).get("use_exp_switch"):
        problems.append("use_exp_switch")
    if problems:
        raise ValueError("graphdesc does not implement " + ", ".join(problems) + " (DPA1 with these is refused)")


def _slot_uniform(name, stat, config):
    """DeePMD stores ``(ntypes, nnei, 4)``; graphdesc keeps the (uniform) slot row ``(ntypes, 4)``."""
    expect = (config.ntypes, config.sel, 4)
    if stat.shape != expect:
        raise ValueError(f"@variables.{name} must have shape {expect}, got {stat.shape}")
    if not np.array_equal(stat, np.broadcast_to(stat[:, :1, :], stat.shape)):
        raise ValueError(f"@variables.{name} differs between neighbor slots; graphdesc needs slot-uniform "
                         f"statistics (DeePMD-kit's own statistics are)")
    return np.ascontiguousarray(stat[:, 0, :])


def params_to_deepmd(config: DPA1Config, params: dict) -> dict:
    """The DeePMD-kit 3.2 ``DescrptDPA1.serialize()`` dict of a graphdesc model.

    ``DescrptDPA1.deserialize`` accepts it; statistics are tiled over the
    ``sel`` slots. Arrays are numpy in ``config.precision``.
    """
    p = tree_map(lambda a: np.asarray(B.to_numpy(a), dtype=config.precision), params)
    prec = config.precision

    def layer(lp, act, resnet, *, bias=True):
        idt = lp.get("idt")
        return {"@class": "Layer", "@version": 2, "bias": bias, "use_timestep": idt is not None,
                "activation_function": act, "resnet": resnet, "precision": prec, "trainable": True,
                "@variables": {"w": lp["w"], "b": lp.get("b"), "idt": idt}}

    def network(layers, in_dim, neuron, act, *, bias=True, resnet_dt=config.resnet_dt):
        return {"@class": "EmbeddingNetwork", "@version": 2, "in_dim": in_dim, "neuron": list(neuron),
                "activation_function": act, "resnet_dt": resnet_dt, "bias": bias, "precision": prec,
                "layers": [layer(lp, act, True, bias=bias) for lp in layers]}

    common = {"nnei": config.sel, "embed_dim": config.ng, "hidden_dim": config.attn, "dotr": config.attn_dotr,
              "do_mask": False, "scaling_factor": config.scaling_factor, "normalize": config.normalize,
              "temperature": config.temperature}
    ln_common = {"trainable_ln": config.trainable_ln, "ln_eps": config.ln_eps, "precision": prec}
    attention_layers = [
        {**common, **ln_common,
         "attention_layer": {**common, "num_heads": 1, "bias": True, "smooth": config.smooth_type_embedding,
                             "precision": prec,
                             "in_proj": layer({"w": lp["in_w"], "b": lp["in_b"]}, "none", False),
                             "out_proj": layer({"w": lp["out_w"], "b": lp["out_b"]}, "none", False)},
         "attn_layer_norm": {"@class": "LayerNorm", "@version": 1, "eps": config.ln_eps,
                             "trainable": config.trainable_ln, "precision": prec,
                             "@variables": {"w": lp["ln_w"], "b": lp["ln_b"]}}}
        for lp in p["attention"]
    ]
    type_map = None if config.type_map is None else list(config.type_map)
    te_bias = config.use_tebd_bias
    return {
        "@class": "Descriptor", "type": "dpa1", "@version": 2,
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in config.to_dict().items()
           if k not in ("sel", "attn_layer", "type_map")},
        "sel": [config.sel], "attn_layer": config.attn_layer, "type_map": type_map,
        "attn_mask": False, "use_econf_tebd": False,
        "embeddings": {"@class": "NetworkCollection", "@version": 1, "ndim": 0, "ntypes": config.ntypes,
                       "network_type": "embedding_network",
                       "networks": [network(p["embedding"], config.embed_input_dim, config.neuron,
                                            config.activation_function)]},
        "attention_layers": {"@class": "NeighborGatedAttention", "@version": 1, "layer_num": config.attn_layer,
                             **common, **ln_common, "attention_layers": attention_layers},
        "env_mat": {"rcut": config.rcut, "rcut_smth": config.rcut_smth, "protection": config.env_protection,
                    "use_exp_switch": False},
        "type_embedding": {"@class": "TypeEmbedNet", "@version": 2, "ntypes": config.ntypes,
                           "neuron": [config.tebd_dim], "resnet_dt": False, "precision": prec,
                           "activation_function": "Linear", "trainable": True, "padding": True,
                           "use_econf_tebd": False, "use_tebd_bias": te_bias, "type_map": type_map,
                           "embedding": network([p["type_embedding"]], config.ntypes, [config.tebd_dim],
                                                "Linear", bias=te_bias, resnet_dt=False)},
        "exclude_types": [], "env_protection": config.env_protection,
        "@variables": {"davg": np.ascontiguousarray(np.repeat(p["davg"][:, None, :], config.sel, axis=1)),
                       "dstd": np.ascontiguousarray(np.repeat(p["dstd"][:, None, :], config.sel, axis=1))},
        "trainable": True, "spin": None,
    }


def load_deepmd(source):
    """``(config, params)`` from a DeePMD-kit DPA1 dict, or a file that holds one.

    Args:
        source: a dict (the descriptor's ``serialize()`` output, or a whole
            model dict with a ``descriptor`` inside), or a path to a ``.pkl`` /
            ``.pickle`` (pickled dict), ``.json``, ``.yaml`` / ``.yml`` or
            ``.dp`` / ``.hlo`` (DeePMD-kit's native HDF5; needs ``h5py``) file.
            Files are read as data only: a pickle that names any Python global
            beyond numpy's array constructors is refused before anything runs
            (:mod:`graphdesc.safe_io`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is corrupt, truncated, not a DeePMD-kit DPA1
            model, or asks to run code (:class:`~graphdesc.safe_io.UnsafeFileError`);
            the message names the file.
    """
    if isinstance(source, dict):
        return params_from_deepmd(_find_descriptor(source))
    return read_model_file(source, lambda data: params_from_deepmd(_find_descriptor(data)))


def _read(path: Path) -> dict:
    """The dict in a DeePMD-kit model file, read without running anything it holds (:mod:`graphdesc.safe_io`)."""
    from .. import safe_io

    if not path.exists():
        raise FileNotFoundError(f"no such DeePMD-kit model file: {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not a file")
    suffix = path.suffix.lower()
    if suffix in (".pkl", ".pickle"):
        data = safe_io.load_pickle(path)
    elif suffix == ".json":
        data = _variables_to_numpy(safe_io.load_json(path))
    elif suffix in (".yaml", ".yml"):
        data = _variables_to_numpy(safe_io.load_yaml(path))
    elif suffix in (".dp", ".hlo"):
        data = safe_io.load_hdf5_model(path, _variables_to_numpy)
    else:
        raise ValueError(f"{path}: unknown model file type {suffix!r}; expected .pkl, .json, .yaml, .yml, .dp or .hlo")
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, not a DeePMD-kit model dict")
    return data


def read_model_file(path, parse):
    """``parse(dict)`` of the DeePMD-kit model file ``path``; any structural error names the file.

    A file that reads but lacks an entry, or holds one of the wrong kind, gives
    ``ValueError("<path>: not a usable DeePMD-kit model: ...")`` rather than a
    bare ``KeyError`` from deep inside the parser.
    """
    path = Path(path)
    data = _read(path)
    try:
        return parse(data)
    except (KeyError, TypeError, IndexError, AttributeError) as err:
        what = f"missing entry {err}" if isinstance(err, KeyError) else f"{type(err).__name__}: {err}"
        raise ValueError(f"{path}: not a usable DeePMD-kit model: {what}") from None
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def _variables_to_numpy(obj, dataset=None, in_variables=False):
    """Decode the leaves under ``@variables``: DeePMD's ``np.ndarray`` records,
    plain lists, or (in ``.dp`` files) HDF5 dataset names."""
    if isinstance(obj, dict):
        if obj.get("@class") == "np.ndarray" and obj.get("@is_variable"):
            return np.asarray(obj["value"], dtype=np.dtype(obj["dtype"]))
        return {k: _variables_to_numpy(v, dataset, in_variables or k == "@variables") for k, v in obj.items()}
    if in_variables and isinstance(obj, str) and dataset is not None:
        return dataset(obj)
    if in_variables and isinstance(obj, list):
        return np.asarray(obj)
    if isinstance(obj, list):
        return [_variables_to_numpy(v, dataset, in_variables) for v in obj]
    return obj


def _find_descriptor(data: dict) -> dict:
    """The DPA1 descriptor dict inside a descriptor, model or wrapped model dict."""
    stack = [data]
    while stack:
        d = stack.pop()
        if isinstance(d, dict):
            if d.get("@class") == "Descriptor":
                return d
            stack.extend(d[k] for k in ("model", "descriptor", "model_dict") if k in d)
    raise ValueError("no DeePMD-kit descriptor dict found (looked for @class 'Descriptor' under model/descriptor)")
