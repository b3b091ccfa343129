"""EnergyConfig: the hyperparameters of a DPA1 energy model (descriptor + fitting net)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..descriptor.config import ACTIVATIONS, DPA1Config, _int, check_known_keys

__all__ = ["EnergyConfig"]


@dataclass(frozen=True)
class EnergyConfig:
    """A DPA1 descriptor followed by DeePMD-kit's energy fitting network.

    Frozen and hashable. The float precision is the descriptor's.

    Attributes:
        descriptor: the :class:`~graphdesc.descriptor.DPA1Config`.
        neuron: hidden widths of the fitting net (DeePMD's default ``[240, 240, 240]``).
            Hidden layers are residual when their shape allows it (as DeePMD's
            ``FittingNet``); the output layer is linear, ``(neuron[-1], 1)``.
        activation_function: of the hidden layers, one of DeePMD's names.
        resnet_dt: learnable ``idt`` scale on residual hidden layers (DeePMD default True).
        mixed_types: one network for every type (DeePMD's default with DPA1, whose
            descriptor carries the center's type embedding); False gives one
            network per type, DeePMD's ``mixed_types=False``.
        deepmd_compat: evaluate the descriptor with DeePMD-kit's padding-row term
            (see :func:`~graphdesc.descriptor.dpa1_graph`); set by the DeePMD-kit
            loader so imported models reproduce DeePMD-kit.
    """

    descriptor: DPA1Config
    neuron: tuple = (240, 240, 240)
    activation_function: str = "tanh"
    resnet_dt: bool = True
    mixed_types: bool = True
    deepmd_compat: bool = False

    def __post_init__(self):
        if not isinstance(self.descriptor, DPA1Config):
            raise TypeError(f"descriptor must be a DPA1Config, got {type(self.descriptor).__name__}")
        if isinstance(self.neuron, (str, bytes)) or not hasattr(self.neuron, "__len__"):
            raise ValueError(f"neuron must be a list of layer widths, got {self.neuron!r}")
        object.__setattr__(self, "neuron", tuple(_int(f"neuron[{i}]", n, 1) for i, n in enumerate(self.neuron)))
        if isinstance(self.activation_function, str):
            object.__setattr__(self, "activation_function", self.activation_function.lower())
        if self.activation_function not in ACTIVATIONS:
            raise ValueError(f"activation_function must be one of {ACTIVATIONS}, got {self.activation_function!r}")
        for name in ("resnet_dt", "mixed_types", "deepmd_compat"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")

    @property
    def ntypes(self) -> int:
        return self.descriptor.ntypes

    @property
    def precision(self) -> str:
        return self.descriptor.precision

    @property
    def rcut(self) -> float:
        return self.descriptor.rcut

    def to_dict(self) -> dict:
        """Plain JSON-able dict; :meth:`from_dict` restores it."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["descriptor"] = self.descriptor.to_dict()
        out["neuron"] = list(self.neuron)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> EnergyConfig:
        """Build from a dict, rejecting unknown keys by name."""
        check_known_keys(cls, data)
        if "descriptor" not in data:
            raise ValueError("EnergyConfig needs a 'descriptor' entry")
        data = dict(data)
        desc = data["descriptor"]
        data["descriptor"] = desc if isinstance(desc, DPA1Config) else DPA1Config.from_dict(desc)
        return cls(**data)
