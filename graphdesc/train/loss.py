"""Energy, force and virial losses with DeePMD-kit-style prefactors, and validation RMSEs.

Per batch of ``nf`` frames (``n_f`` atoms in frame ``f``, ``N`` atoms in all):

* energy: ``mean_f (E_f - E*_f)^2 / n_f^2`` -- per-atom energy MSE, eV²;
* force: ``mean_{i,a} (F_ia - F*_ia)^2`` over the ``3N`` components, (eV/Å)²;
* virial: ``mean_{f,ab} (W_fab - W*_fab)^2 / n_f^2`` over the frames that have
  a virial label, eV².

That is graphdesc's default, ``intensive=True`` (DeePMD-kit's
``intensive_ener_virial: true``): the energy and virial terms are per-atom
errors squared, so their weight against the force term does not change with
the system size. ``intensive=False`` divides by ``n_f`` once instead of
``n_f^2``, DeePMD-kit 3.2's default (its "legacy" normalization), whose
energy and virial terms grow with the atom count.

The total is ``p_e * energy + p_f * force + p_v * virial``. As in DeePMD-kit,
each prefactor moves from its ``start`` to its ``limit`` value as the learning
rate decays: ``p = limit + (start - limit) * lr / start_lr``; equal start and
limit give a constant prefactor.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

__all__ = ["LossConfig", "loss_terms", "label_counts", "COMPONENTS", "Metrics"]

#: The loss components, in table order.
COMPONENTS = ("energy", "force", "virial")


@dataclass(frozen=True)
class LossConfig:
    """Loss prefactors (DeePMD-kit's ``ener`` loss names and defaults) and the normalization.

    Attributes:
        intensive: divide energy and virial errors by ``n_f^2`` (default; per-atom
            errors squared) or, if False, by ``n_f`` (DeePMD-kit's input-file
            default, ``intensive_ener_virial: false``). See the module docstring.
    """

    start_pref_e: float = 0.02
    limit_pref_e: float = 1.0
    start_pref_f: float = 1000.0
    limit_pref_f: float = 1.0
    start_pref_v: float = 0.0
    limit_pref_v: float = 0.0
    intensive: bool = True

    def __post_init__(self):
        if not isinstance(self.intensive, bool):
            raise ValueError(f"intensive must be a bool, got {self.intensive!r}")
        for name, value in self._prefs().items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not any(self._prefs().values()):
            raise ValueError("every loss prefactor is 0: nothing to train")

    def _prefs(self) -> dict:
        return {k: v for k, v in asdict(self).items() if "_pref_" in k}

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


def loss_terms(pred: dict, batch, components=COMPONENTS, *, intensive: bool = True, counts: dict | None = None) -> dict:
    """The MSE of each of ``components`` (see the module docstring), as 0-d tensors.

    Args:
        pred: float model outputs with ``energy (nf,)`` eV and, for the force and virial
            terms, ``force (N, 3)`` eV/Å and ``virial (nf, 3, 3)`` eV.
        batch: a :class:`~graphdesc.train.batch.Batch` with the labels.
        intensive: ``n_f^2`` (True) or ``n_f`` (False) normalization of the
            energy and virial errors.
        counts: ``{component: entries}`` of the *global* batch when this batch
            is one rank's share of it (:func:`label_counts`): each term is then
            its sum of squared errors over these entries, so the terms of all
            ranks add up to the global mean. Default: the mean over ``batch``.

    Returns:
        ``{component: scalar tensor}`` in ``pred``'s dtype: energy and virial terms in eV^2 (per atom^2 when
        ``intensive``, per atom otherwise), the force term in (eV/Å)^2.
    """
    terms = {}
    for component in components:
        err = _squared_errors(pred, batch, component, intensive)
        if err is None and component == "force":
            raise ValueError("a force loss needs force labels, but this batch has frames without forces")
        if err is None or not err.numel():
            terms[component] = pred["energy"].new_zeros(())
        else:
            terms[component] = torch.mean(err) if counts is None else torch.sum(err) / max(counts[component], 1)
    return terms


def label_counts(frames) -> dict:
    """``{component: labelled entries}`` of ``frames`` (:class:`~graphdesc.train.Frame` s): the
    denominators of the loss means (frames; ``3N`` force components; 9 per frame with a virial)."""
    return {"energy": len(frames), "force": 3 * sum(f.natoms for f in frames),
            "virial": 9 * sum(f.virial is not None for f in frames)}


def _squared_errors(pred: dict, batch, component: str, intensive: bool = True):
    """Squared errors of the labelled entries of ``component`` (energy and virial divided by ``n_f``,
    or by ``sqrt(n_f)`` when not ``intensive``), or None when the batch has no such labels; frames
    without a virial are left out."""
    norm = batch.natoms if intensive else torch.sqrt(batch.natoms)
    if component == "energy":
        return ((pred["energy"] - batch.energy) / norm) ** 2
    if component == "force":
        return None if batch.force is None else (pred["force"] - batch.force) ** 2
    if batch.virial is None:
        return None
    return (((pred["virial"] - batch.virial) / norm[:, None, None]) ** 2)[batch.virial_mask]


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

    def reduce(self, ranks) -> Metrics:
        """Sum the squared errors and counts over the ranks of a process group
        (:class:`~graphdesc.train.distributed.Ranks`); returns self."""
        total = ranks.sum([self._sums[c] for c in COMPONENTS] + [self._counts[c] for c in COMPONENTS])
        for k, c in enumerate(COMPONENTS):
            self._sums[c], self._counts[c] = float(total[k]), int(round(total[len(COMPONENTS) + k]))
        return self

    def rmse(self) -> dict:
        """``{component: rmse}`` for the components seen (None for the others)."""
        return {c: math.sqrt(self._sums[c] / self._counts[c]) if self._counts[c] else None for c in COMPONENTS}
