"""Energy, force and virial losses with DeePMD-kit-style prefactors, and validation RMSEs.

Per batch of ``nf`` frames (``n_f`` atoms in frame ``f``, ``N`` atoms in all):

* energy: ``mean_f ((E_f - E*_f) / n_f)^2`` -- per-atom energy MSE, eV²;
* force: ``mean_{i,a} (F_ia - F*_ia)^2`` over the ``3N`` components, (eV/Å)²;
* virial: ``mean_{f,ab} ((W_fab - W*_fab) / n_f)^2`` over the frames that have
  a virial label, eV².

The total is ``p_e * energy + p_f * force + p_v * virial``. As in DeePMD-kit,
each prefactor moves from its ``start`` to its ``limit`` value as the learning
rate decays: ``p = limit + (start - limit) * lr / start_lr``; equal start and
limit give a constant prefactor.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

__all__ = ["LossConfig", "loss_terms", "COMPONENTS", "Metrics"]

#: The loss components, in table order.
COMPONENTS = ("energy", "force", "virial")


@dataclass(frozen=True)
class LossConfig:
    """Loss prefactors (DeePMD-kit's ``ener`` loss names and defaults)."""

    start_pref_e: float = 0.02
    limit_pref_e: float = 1.0
    start_pref_f: float = 1000.0
    limit_pref_f: float = 1.0
    start_pref_v: float = 0.0
    limit_pref_v: float = 0.0

    def __post_init__(self):
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not any(asdict(self).values()):
            raise ValueError("every loss prefactor is 0: nothing to train")

    def prefactors(self, lr_ratio: float = 1.0) -> dict:
        """``{"energy", "force", "virial"}`` prefactors at ``lr / start_lr = lr_ratio``."""
        return {name: limit + (start - limit) * lr_ratio
                for name, start, limit in zip(COMPONENTS, (self.start_pref_e, self.start_pref_f, self.start_pref_v),
                                              (self.limit_pref_e, self.limit_pref_f, self.limit_pref_v))}

    def uses(self, component: str) -> bool:
        """Whether ``component`` ever has a non-zero prefactor."""
        start, limit = (getattr(self, f"{p}_pref_{component[0]}") for p in ("start", "limit"))
        return start > 0 or limit > 0

    @classmethod
    def only(cls, *components: str) -> LossConfig:
        """Unit prefactors on ``components``, zero elsewhere (e.g. ``LossConfig.only("force")``)."""
        unknown = set(components) - set(COMPONENTS)
        if unknown or not components:
            raise ValueError(f"components must be among {COMPONENTS}, got {components!r}")
        kw = {}
        for c in COMPONENTS:
            kw[f"start_pref_{c[0]}"] = kw[f"limit_pref_{c[0]}"] = 1.0 if c in components else 0.0
        return cls(**kw)


def loss_terms(pred: dict, batch, components=COMPONENTS) -> dict:
    """The MSE of each of ``components`` (see the module docstring), as 0-d tensors.

    Args:
        pred: model outputs with ``energy (nf,)`` and, for the force and virial
            terms, ``force (N, 3)`` and ``virial (nf, 3, 3)``.
        batch: a :class:`~graphdesc.train.batch.Batch` with the labels.
    """
    terms = {}
    for component in components:
        err = _squared_errors(pred, batch, component)
        if err is None and component == "force":
            raise ValueError("a force loss needs force labels, but this batch has frames without forces")
        terms[component] = pred["energy"].new_zeros(()) if err is None or not err.numel() else torch.mean(err)
    return terms


def _squared_errors(pred: dict, batch, component: str):
    """Squared errors of the labelled entries of ``component`` (energy and virial per atom), or None
    when the batch has no such labels; frames without a virial are left out."""
    if component == "energy":
        return ((pred["energy"] - batch.energy) / batch.natoms) ** 2
    if component == "force":
        return None if batch.force is None else (pred["force"] - batch.force) ** 2
    if batch.virial is None:
        return None
    return (((pred["virial"] - batch.virial) / batch.natoms[:, None, None]) ** 2)[batch.virial_mask]


class Metrics:
    """Accumulates squared errors over batches; :meth:`rmse` gives DeePMD's validation RMSEs.

    ``energy`` eV/atom, ``force`` eV/Å (per component), ``virial`` eV/atom.
    """

    def __init__(self):
        self._sums = {c: 0.0 for c in COMPONENTS}
        self._counts = {c: 0 for c in COMPONENTS}

    def add(self, pred: dict, batch) -> None:
        with torch.no_grad():
            for component in COMPONENTS:
                err = _squared_errors(pred, batch, component) if component in pred else None
                if err is not None:
                    self._sums[component] += float(torch.sum(err))
                    self._counts[component] += err.numel()

    def rmse(self) -> dict:
        """``{component: rmse}`` for the components seen (None for the others)."""
        return {c: math.sqrt(self._sums[c] / self._counts[c]) if self._counts[c] else None for c in COMPONENTS}
