"""The gradient-flow doctor: does every loss component reach every parameter, in every execution mode?

:func:`gradient_doctor` differentiates each loss component alone (energy,
force, virial) and all together, in each execution mode
(:data:`~graphdesc.train.MODES`), on one or more batches, and compares every
parameter gradient with eager autograd's:

* ``reach``: parameter tensors with a non-zero gradient (in any batch);
* ``lost``: tensors eager gives a gradient and the mode gives none or zero --
  what a ``detach`` in a traced graph does to a force loss;
* ``gained``: the reverse;
* ``non-finite``: NaN or inf in a gradient;
* ``max|dg|``: the largest difference from eager, absolute and relative to
  the tensor's largest eager gradient entry.

A mode *fails* when it loses or gains a tensor, yields a non-finite gradient,
or differs from eager by more than ``tolerance * max(1, max|g_eager|)`` in some
tensor (default 1e-10 in float64, 1e-4 in float32).

:func:`softmax_health` checks the softmax the attention runs on: outputs and
Jacobians of :func:`~graphdesc.segment.segment_softmax` and
:func:`~graphdesc.segment.masked_softmax` over a grid of logit ranges, masks
(with NaN, inf and 1e300 planted in masked slots) and phantom terms, against
a long-double reference, flagging dead zones (the reference has a gradient,
the computed one is exactly 0), non-finite values and masked entries that
leak into a result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .compiled import MODES, TrainingForward
from .loss import COMPONENTS, loss_terms

__all__ = ["gradient_doctor", "DoctorReport", "softmax_health", "format_softmax_health"]

#: Loss components the doctor differentiates: each alone, then their sum.
DOCTOR_COMPONENTS = COMPONENTS + ("all",)


@dataclass
class ModeResult:
    """One (component, mode) cell of the doctor's table, aggregated over batches."""

    component: str
    mode: str
    reached: set = field(default_factory=set)
    lost: set = field(default_factory=set)
    gained: set = field(default_factory=set)
    nonfinite: set = field(default_factory=set)
    max_abs: float = 0.0
    max_rel: float = 0.0
    loss_abs: float = 0.0
    too_far: set = field(default_factory=set)
    per_param_rel: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def failed(self) -> bool:
        return bool(self.error or self.lost or self.gained or self.nonfinite or self.too_far)


@dataclass
class DoctorReport:
    """All cells, the parameter names and the settings; :meth:`format` renders the tables."""

    names: list
    modes: list
    components: list
    results: dict  # (component, mode) -> ModeResult
    tolerance: float
    batch_sizes: list

    @property
    def failed(self) -> bool:
        return any(r.failed for r in self.results.values())

    def failures(self) -> list:
        """One line per failing (component, mode)."""
        lines = []
        for (component, mode), r in self.results.items():
            if r.error:
                lines.append(f"{mode} / {component}: {r.error}")
                continue
            for what, names in (("lost gradients of", r.lost), ("gained gradients of", r.gained),
                                ("non-finite gradients in", r.nonfinite), ("differs from eager beyond "
                                                                           f"{self.tolerance:g} in", r.too_far)):
                if names:
                    lines.append(f"{mode} / {component}: {what} {len(names)} tensors: {', '.join(sorted(names))}")
        return lines

    def format(self) -> str:
        total = len(self.names)
        head = (f"{'loss':8} {'mode':10} {'reach':>7} {'lost':>5} {'gained':>6} {'non-finite':>10} "
                f"{'max|dloss|':>11} {'max|dg|':>10} {'rel':>10}  status")
        lines = [head, "-" * len(head)]
        for component in self.components:
            for mode in self.modes:
                r = self.results[(component, mode)]
                if r.error:
                    lines.append(f"{component:8} {mode:10} error: {r.error}")
                    continue
                eager = mode == "eager"
                cmp = ("-", "-", "-") if eager else (f"{r.loss_abs:.1e}", f"{r.max_abs:.1e}", f"{r.max_rel:.1e}")
                lines.append(f"{component:8} {mode:10} {len(r.reached):>3}/{total:<3} "
                             f"{'-' if eager else len(r.lost):>5} {'-' if eager else len(r.gained):>6} "
                             f"{len(r.nonfinite):>10} {cmp[0]:>11} {cmp[1]:>10} {cmp[2]:>10}  "
                             f"{'FAIL' if r.failed else 'ok'}")
        lines.append("")
        lines.append(self._per_parameter())
        return "\n".join(lines)

    def _per_parameter(self) -> str:
        others = [m for m in self.modes if m != "eager"]
        flags = "".join(c[0].upper() for c in self.components)
        width = max(len(n) for n in self.names)
        head = f"{'parameter':{width}}  eager reach ({flags})  " + " ".join(f"{m:>10}" for m in others)
        lines = ["per parameter: eager reach per loss, and each mode's largest relative gradient difference "
                 "from eager over all losses", head, "-" * len(head)]
        for name in self.names:
            reach = "".join(c[0].upper() if name in self.results[(c, "eager")].reached else "."
                            for c in self.components)
            cells = []
            for m in others:
                rs = [self.results[(c, m)] for c in self.components]
                if any(r.error for r in rs):
                    cells.append("error")
                elif any(name in r.lost for r in rs):
                    cells.append("LOST")
                elif any(name in r.nonfinite for r in rs):
                    cells.append("NONFINITE")
                elif any(name in r.gained for r in rs):
                    cells.append("GAINED")
                else:
                    cells.append(f"{max(r.per_param_rel.get(name, 0.0) for r in rs):.1e}")
            lines.append(f"{name:{width}}  {reach:>{len(flags) + 14}}  " + " ".join(f"{c:>10}" for c in cells))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "tolerance": self.tolerance, "batch_sizes": self.batch_sizes, "parameters": self.names,
            "failed": self.failed, "failures": self.failures(),
            "results": [{"component": c, "mode": m, "reach": sorted(r.reached), "lost": sorted(r.lost),
                         "gained": sorted(r.gained), "nonfinite": sorted(r.nonfinite), "max_abs": r.max_abs,
                         "max_rel": r.max_rel, "loss_abs": r.loss_abs, "error": r.error,
                         "per_param_rel": r.per_param_rel} for (c, m), r in self.results.items()],
        }


def _component_loss(out, batch, component):
    terms = loss_terms(out, batch, COMPONENTS if component == "all" else (component,))
    return sum(terms.values())


def gradient_doctor(model, batches, *, modes=MODES, components=DOCTOR_COMPONENTS, tolerance=None,
                    keep_saved_detach: bool = False, progress=None) -> DoctorReport:
    """Compare parameter gradients of each loss component across execution modes (see the module docstring).

    Args:
        model: an :class:`~graphdesc.torch.EnergyModel` (its parameters are not changed).
        batches: :class:`~graphdesc.train.Batch` es with energy ``(nf,)``, force ``(N, 3)`` and
            virial ``(nf, 3, 3)`` labels (use two of different sizes to catch shape specialization).
        modes: execution modes; ``"eager"`` is the reference and always runs.
        components: loss components (``"all"`` is their unit-weight sum).
        tolerance: relative gradient tolerance; default 1e-10 (float64) or 1e-4 (float32).
        keep_saved_detach: trace without the detach repair (the doctor must then fail).
        progress: ``callable(str)`` told about each mode.
    """
    say = progress or (lambda msg: None)
    modes = ["eager"] + [m for m in modes if m != "eager"]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown modes {unknown}; choose from {MODES}")
    bad = [c for c in components if c not in DOCTOR_COMPONENTS]
    if bad:
        raise ValueError(f"unknown loss components {bad}; choose from {DOCTOR_COMPONENTS}")
    batches = list(batches)
    if not batches:
        raise ValueError("the doctor needs at least one batch")
    dtype = next(model.buffers()).dtype
    tolerance = tolerance if tolerance is not None else (1e-10 if dtype == torch.float64 else 1e-4)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    names = [n for n, _ in named]
    params = [p for _, p in named]
    was_training = model.training
    model.train()

    grads, losses, results = {}, {}, {}
    for mode in modes:
        say(f"{mode}: {'tracing and compiling' if mode not in ('eager', 'traced') else 'running'} ...")
        try:
            forward = TrainingForward(model, mode, keep_saved_detach=keep_saved_detach)
            for b, batch in enumerate(batches):
                for component in components:
                    loss = _component_loss(forward(batch.graph, batch.atype), batch, component)
                    g = torch.autograd.grad(loss, params, allow_unused=True)
                    grads[(mode, b, component)] = [torch.zeros_like(p) if x is None else x.detach()
                                                   for x, p in zip(g, params)]
                    losses[(mode, b, component)] = float(loss.detach())
        except Exception as exc:  # a mode that cannot run is a finding, not a crash
            for component in components:
                results[(component, mode)] = ModeResult(component, mode, error=f"{type(exc).__name__}: {exc}"[:300])
            continue
        for component in components:
            results[(component, mode)] = _compare(component, mode, names, grads, losses, len(batches), tolerance)
    model.train(was_training)
    return DoctorReport(names, modes, list(components), results, tolerance, [b.num_frames for b in batches])


def _compare(component, mode, names, grads, losses, n_batches, tolerance) -> ModeResult:
    r = ModeResult(component, mode)
    for b in range(n_batches):
        mine, ref = grads[(mode, b, component)], grads[("eager", b, component)]
        r.loss_abs = max(r.loss_abs, abs(losses[(mode, b, component)] - losses[("eager", b, component)]))
        for name, g, e in zip(names, mine, ref):
            finite = bool(torch.isfinite(g).all())
            nonzero, eager_nonzero = bool((g != 0).any()), bool((e != 0).any())
            if not finite:
                r.nonfinite.add(name)
            if nonzero:
                r.reached.add(name)
            if mode == "eager":
                continue
            if eager_nonzero and not nonzero:
                r.lost.add(name)
            if nonzero and not eager_nonzero:
                r.gained.add(name)
            if not finite:
                continue
            diff = float((g - e).abs().max()) if g.numel() else 0.0
            scale = float(e.abs().max()) if e.numel() else 0.0
            rel = diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)
            r.max_abs, r.max_rel = max(r.max_abs, diff), max(r.max_rel, rel)
            r.per_param_rel[name] = max(r.per_param_rel.get(name, 0.0), rel)
            if diff > tolerance * max(1.0, scale):
                r.too_far.add(name)
    return r


# -- softmax health ------------------------------------------------------------------------------------------
_SIZES = (1, 2, 3, 5, 8)  # segment sizes; with masks, some segments end up empty or fully masked
_REGIMES = {
    "equal logits": lambda rng, n: np.zeros(n),
    "normal, scale 1": lambda rng, n: rng.normal(0, 1, n),
    "normal, scale 30": lambda rng, n: rng.normal(0, 30, n),
    "ties at the max": lambda rng, n: np.where(rng.random(n) < 0.5, 2.0, rng.normal(0, 1, n)),
    "exp range edge": lambda rng, n: rng.uniform(-745, 709, n),
    "saturated (gap 50)": lambda rng, n: np.where(np.arange(n) % 3 == 0, 50.0, 0.0) + rng.normal(0, 1e-3, n),
    "huge (+-1e300)": lambda rng, n: rng.choice([-1e300, 1e300, 0.0], n),
}
_MASKS = ("no mask", "30% masked, NaN/inf planted", "one segment fully masked")
_PHANTOMS = ("no phantoms", "phantoms c>0, p=-20", "phantoms c<0 (removed)", "phantoms c=0")


def _case(rng, regime, mask_kind, phantom_kind):
    sizes = np.array(_SIZES)
    ids = np.repeat(np.arange(len(sizes)), sizes)
    n = len(ids)
    logits = _REGIMES[regime](rng, n)
    valid = np.ones(n, bool)
    if mask_kind.startswith("30%"):
        valid = rng.random(n) >= 0.3
    elif mask_kind.startswith("one segment"):
        valid = ids != 2
    planted = np.array([np.nan, np.inf, -np.inf, 1e300])
    logits = np.where(valid, logits, planted[np.arange(n) % 4])
    count = None
    if phantom_kind.startswith("phantoms c>0"):
        count = rng.integers(1, 4, len(sizes)).astype(float)
    elif phantom_kind.startswith("phantoms c<0"):
        count = -rng.integers(1, 3, len(sizes)).astype(float)
    elif phantom_kind.startswith("phantoms c=0"):
        count = np.zeros(len(sizes))
    return logits, ids, valid, count


def _reference(logits, ids, valid, count, p_logit):
    """Long-double softmax and its Jacobian ``J[i, j] = w_i (delta_ij - w_j)`` within a segment."""
    with np.errstate(over="ignore"):  # exp(p - top) may overflow to inf: then the phantoms are dropped
        return _reference_impl(logits, ids, valid, count, p_logit)


def _reference_impl(logits, ids, valid, count, p_logit):
    x = logits.astype(np.longdouble)
    w = np.zeros(len(x), np.longdouble)
    for s in np.unique(ids):
        idx = np.flatnonzero((ids == s) & valid)
        c = 0.0 if count is None else count[s]
        top = max([x[i] for i in idx] + ([p_logit] if c > 0 else []), default=0.0)
        e = np.exp(x[idx] - top)
        denom = e.sum()
        if c != 0 and denom + c * np.exp(np.longdouble(p_logit) - top) > 0:
            denom = denom + c * np.exp(np.longdouble(p_logit) - top)
        if len(idx) and denom > 0:
            w[idx] = e / denom
    same = (ids[:, None] == ids[None, :]) & valid[:, None] & valid[None, :]
    jac = np.where(same, w[:, None] * (np.eye(len(x)) - w[None, :]), 0)
    return w, jac


def softmax_health(functions=None, *, seed: int = 0, dtype=torch.float64) -> list:
    """Rows ``{function, regime, cases, max_dw, max_dJ, dead_zones, nonfinite, leaks, ok}``, one per
    (function, logit regime), aggregated over the mask and phantom variants.

    Args:
        functions: ``{name: f(logits, segment_ids, num_segments, mask, phantom_count, phantom_logit)}``
            returning ``(E,)`` weights; default graphdesc's ``segment_softmax`` and
            ``masked_softmax`` (the latter on the segments laid out as padded rows).
        dtype: float64 (``ok`` needs ``max|dJ| <= 1e-12``) or float32 (``1e-5``).
    """
    rng = np.random.default_rng(seed)
    functions = functions or _library_softmaxes()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    p_logit = -20.0
    rows = []
    for name, function in functions.items():
        for regime in _REGIMES:
            row = dict(function=name, regime=regime, cases=0, max_dw=0.0, max_dJ=0.0, dead_zones=0,
                       nonfinite=0, leaks=0)
            for mask_kind in _MASKS:
                for phantom_kind in _PHANTOMS:
                    logits, ids, valid, count = _case(rng, regime, mask_kind, phantom_kind)
                    w_ref, j_ref = _reference(logits, ids, valid, count, p_logit)
                    w, jac = _weights_and_jacobian(function, logits, ids, valid, count, p_logit, dtype)
                    row["cases"] += 1
                    row["nonfinite"] += int((~np.isfinite(w)).sum() + (~np.isfinite(jac)).sum())
                    if np.isfinite(w).all() and np.isfinite(jac).all():
                        row["max_dw"] = max(row["max_dw"], float(np.abs(w - w_ref).max()))
                        row["max_dJ"] = max(row["max_dJ"], float(np.abs(jac - j_ref).max()))
                    row["dead_zones"] += int(((np.abs(j_ref) > 1e-12) & (jac == 0)).sum())
                    masked = ~valid
                    row["leaks"] += int((w[masked] != 0).sum() + (jac[:, masked] != 0).sum()
                                        + (jac[masked, :] != 0).sum())
            row["ok"] = (row["nonfinite"] == row["dead_zones"] == row["leaks"] == 0
                         and row["max_dw"] <= tol and row["max_dJ"] <= tol)
            rows.append(row)
    return rows


def _library_softmaxes() -> dict:
    from ..segment import masked_softmax, segment_softmax

    def segment(x, ids, n_seg, mask, count, p_logit):
        return segment_softmax(x, ids, n_seg, mask=mask, phantom_count=count, phantom_logit=p_logit)

    def dense(x, ids, n_seg, mask, count, p_logit):  # the same segments as padded rows (S, K)
        ids_np = ids.numpy()
        width = int(np.bincount(ids_np).max())
        slot = torch.as_tensor(np.arange(len(ids_np)) - np.searchsorted(ids_np, ids_np))
        rows_mask = torch.zeros(n_seg, width, dtype=torch.bool).index_put((ids, slot), mask)
        rows = torch.zeros(n_seg, width, dtype=x.dtype).index_put((ids, slot), x)
        out = masked_softmax(rows, rows_mask, phantom_count=None if count is None else count[:, None],
                             phantom_logit=p_logit)
        return out[ids, slot]

    return {"segment_softmax": segment, "masked_softmax": dense}


def _weights_and_jacobian(function, logits, ids, valid, count, p_logit, dtype):
    """Weights ``(E,)`` and Jacobian ``(E, E)`` of ``function``, as float64 numpy."""
    seg, mask = torch.as_tensor(ids), torch.as_tensor(valid)
    n_seg = int(ids.max()) + 1
    c = None if count is None else torch.tensor(count, dtype=dtype)

    def f(v):
        return function(v, seg, n_seg, mask, c, p_logit)

    x = torch.tensor(logits, dtype=dtype)
    w = f(x)
    jac = torch.autograd.functional.jacobian(f, x)
    return w.detach().double().numpy(), jac.double().numpy()


def format_softmax_health(rows) -> str:
    """The rows of :func:`softmax_health` as a text table: one line per function and logit regime, with the
    largest output and Jacobian errors against the long-double reference, dead zones, non-finite values,
    mask leaks and a status."""
    head = (f"{'function':16} {'logits':20} {'cases':>5} {'max|dw|':>9} {'max|dJ|':>9} {'dead zones':>10} "
            f"{'non-finite':>10} {'mask leaks':>10}  status")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['function']:16} {r['regime']:20} {r['cases']:5d} {r['max_dw']:9.1e} {r['max_dJ']:9.1e} "
                     f"{r['dead_zones']:10d} {r['nonfinite']:10d} {r['leaks']:10d}  {'ok' if r['ok'] else 'FAIL'}")
    return "\n".join(lines)
