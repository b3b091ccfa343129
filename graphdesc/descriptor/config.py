"""DPA1Config: the hyperparameters of the DPA1 (se_atten) descriptor, DeePMD-kit names and defaults."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import numpy as np

__all__ = ["DPA1Config", "ACTIVATIONS", "SMOOTH_SHIFT"]

SMOOTH_SHIFT = 20.0
"""DeePMD's fixed logit shift of smooth attention: an absent slot's logit is ``-SMOOTH_SHIFT``."""

#: Activation names accepted by ``activation_function`` (DeePMD spellings).
ACTIVATIONS = ("tanh", "relu", "relu6", "softplus", "sigmoid", "gelu", "gelu_tf", "silu", "linear", "none")


@dataclass(frozen=True)
class DPA1Config:
    """Hyperparameters of DPA1, with DeePMD-kit 3.2's names and the defaults of its ``DescrptDPA1`` class.

    These are the Python class's defaults, which are not those of a DeePMD-kit
    *input file* (``input.json``: e.g. ``axis_neuron 4``, ``neuron [10, 20, 40]``,
    ``smooth_type_embedding false``, ``set_davg_zero true``); reading an input
    file applies the latter (:mod:`graphdesc.train.deepmd_input`).

    Frozen and hashable (list arguments are stored as tuples), so it can be a
    static argument of ``jax.jit``. Every value is checked on construction;
    a bad one raises ``ValueError`` naming the field.

    Shapes that follow (``ng = neuron[-1]``, ``M = axis_neuron``,
    ``dt = tebd_dim``): descriptor ``(N, ng*M [+ dt])``, rot_mat ``(N, ng, 3)``.

    Attributes:
        rcut: cutoff radius in Å (> 0).
        rcut_smth: where the smooth switch starts, Å (0 <= rcut_smth < rcut).
        sel: neighbor slots ``nnei`` (an int, or DeePMD's one-element list).
            graphdesc's graph path does not truncate to ``sel``; it is the
            ``1/sel`` normalization, the smooth-softmax width and the width of
            the dense layout.
        ntypes: number of atom types.
        neuron: widths of the embedding net; ``ng = neuron[-1]``.
        axis_neuron: ``M``, rows of the contraction kept as the second factor (<= ng).
        tebd_dim: type-embedding width ``dt``.
        tebd_input_mode: ``"concat"`` (``"strip"`` is not implemented).
        resnet_dt: learnable ``idt`` scale on residual-capable embedding layers.
        type_one_side: the embedding input omits the center's type.
        attn: attention hidden width ``H``.
        attn_layer: number of gated attention layers (>= 0).
        attn_dotr: gate attention weights by the angular dot product.
        attn_mask: must be False (DeePMD's masked variant is not supported).
        scaling_factor: ``alpha = (H * scaling_factor)^-1/2`` when ``temperature`` is None.
        normalize: L2-normalize q, k and v rows.
        temperature: if set, the logit scale ``alpha`` itself (it multiplies).
        smooth_type_embedding: DeePMD's smooth attention (shift 20, ``sw`` gates).
        trainable_ln: LayerNorm weights trainable (they are used either way).
        ln_eps: LayerNorm epsilon.
        env_protection: ``p`` in ``1/(r+p)`` and ``d/(r+p)^2``, Å.
        concat_output_tebd: append the center's type embedding to the descriptor.
        precision: ``"float64"`` or ``"float32"``.
        activation_function: one of :data:`ACTIVATIONS`.
        set_davg_zero: statistics keep ``davg = 0``.
        use_tebd_bias: the type-embedding layer has a bias.
        type_map: optional element names, one per type.
    """

    rcut: float
    rcut_smth: float
    sel: int
    ntypes: int
    neuron: tuple = (25, 50, 100)
    axis_neuron: int = 8
    tebd_dim: int = 8
    tebd_input_mode: str = "concat"
    resnet_dt: bool = False
    type_one_side: bool = False
    attn: int = 128
    attn_layer: int = 2
    attn_dotr: bool = True
    attn_mask: bool = False
    scaling_factor: float = 1.0
    normalize: bool = True
    temperature: float | None = None
    smooth_type_embedding: bool = True
    trainable_ln: bool = True
    ln_eps: float = 1e-5
    env_protection: float = 0.0
    concat_output_tebd: bool = True
    precision: str = "float64"
    activation_function: str = "tanh"
    set_davg_zero: bool = False
    use_tebd_bias: bool = False
    type_map: tuple | None = field(default=None)

    def __post_init__(self):
        sel = self.sel
        if isinstance(sel, (list, tuple)):
            if len(sel) != 1:
                raise ValueError(f"sel: DPA1 mixes types and takes one number, got {list(sel)}")
            sel = sel[0]

        def set_(name, value):  # the dataclass is frozen: normalize fields in place once
            object.__setattr__(self, name, value)

        set_("sel", _int("sel", sel, 1))
        set_("ntypes", _int("ntypes", self.ntypes, 1))
        set_("rcut", _float("rcut", self.rcut))
        set_("rcut_smth", _float("rcut_smth", self.rcut_smth))
        if not self.rcut > 0:
            raise ValueError(f"rcut must be > 0, got {self.rcut}")
        if not 0 <= self.rcut_smth < self.rcut:
            raise ValueError(f"rcut_smth must satisfy 0 <= rcut_smth < rcut = {self.rcut}, got {self.rcut_smth}")
        if isinstance(self.neuron, (str, bytes)) or not hasattr(self.neuron, "__len__") or len(self.neuron) == 0:
            raise ValueError(f"neuron must be a non-empty list of layer widths, got {self.neuron!r}")
        set_("neuron", tuple(_int(f"neuron[{i}]", n, 1) for i, n in enumerate(self.neuron)))
        set_("axis_neuron", _int("axis_neuron", self.axis_neuron, 1))
        if self.axis_neuron > self.neuron[-1]:
            raise ValueError(f"axis_neuron ({self.axis_neuron}) must be <= neuron[-1] ({self.neuron[-1]})")
        set_("tebd_dim", _int("tebd_dim", self.tebd_dim, 1))
        set_("attn", _int("attn", self.attn, 1))
        set_("attn_layer", _int("attn_layer", self.attn_layer, 0))
        if self.tebd_input_mode != "concat":
            msg = "'strip' is not implemented in graphdesc" if self.tebd_input_mode == "strip" else "unknown"
            raise ValueError(f"tebd_input_mode must be 'concat', got {self.tebd_input_mode!r} ({msg})")
        if self.attn_mask:
            raise ValueError("attn_mask=True is not supported (DeePMD-kit's DPA1 does not support it either)")
        for name in ("resnet_dt", "type_one_side", "attn_dotr", "normalize", "smooth_type_embedding",
                     "trainable_ln", "concat_output_tebd", "set_davg_zero", "use_tebd_bias"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        set_("scaling_factor", _float("scaling_factor", self.scaling_factor))
        if not self.scaling_factor > 0:
            raise ValueError(f"scaling_factor must be > 0, got {self.scaling_factor}")
        if self.temperature is not None:
            set_("temperature", _float("temperature", self.temperature))
        set_("ln_eps", _float("ln_eps", self.ln_eps))
        if not self.ln_eps > 0:
            raise ValueError(f"ln_eps must be > 0, got {self.ln_eps}")
        set_("env_protection", _float("env_protection", self.env_protection))
        if self.env_protection < 0:
            raise ValueError(f"env_protection must be >= 0, got {self.env_protection}")
        if self.precision not in ("float64", "float32"):
            raise ValueError(f"precision must be 'float64' or 'float32', got {self.precision!r}")
        if isinstance(self.activation_function, str):
            set_("activation_function", self.activation_function.lower())
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(f"activation_function must be one of {ACTIVATIONS}, got {self.activation_function!r}")
        if self.type_map is not None:
            set_("type_map", tuple(str(t) for t in self.type_map))
            if len(self.type_map) != self.ntypes:
                raise ValueError(f"type_map has {len(self.type_map)} names but ntypes = {self.ntypes}")

    # -- derived sizes -------------------------------------------------------
    @property
    def nnei(self) -> int:
        """Neighbor slots ``sum(sel)``."""
        return self.sel

    @property
    def ng(self) -> int:
        """Embedding width ``neuron[-1]``."""
        return self.neuron[-1]

    @property
    def embed_input_dim(self) -> int:
        """Embedding-net input width: ``1 + dt`` (type_one_side) or ``1 + 2 dt``."""
        return 1 + self.tebd_dim * (1 if self.type_one_side else 2)

    @property
    def dim_out(self) -> int:
        """Descriptor width ``ng*M`` (+ ``dt`` with concat_output_tebd)."""
        return self.ng * self.axis_neuron + (self.tebd_dim if self.concat_output_tebd else 0)

    @property
    def alpha(self) -> float:
        """The logit scale: ``temperature``, or ``(attn * scaling_factor)^-1/2``."""
        if self.temperature is not None:
            return self.temperature
        return 1.0 / math.sqrt(self.attn * self.scaling_factor)

    def to_dict(self) -> dict:
        """Plain JSON-able dict (lists for tuples); ``DPA1Config(**d)`` restores it."""
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: dict) -> DPA1Config:
        """Build from a dict, rejecting unknown keys by name."""
        check_known_keys(cls, data)
        return cls(**data)


def check_known_keys(cls, data: dict) -> None:
    """Raise ``ValueError`` naming the keys of ``data`` that are not fields of dataclass ``cls``."""
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {unknown}")


def _int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(name, value):
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out
