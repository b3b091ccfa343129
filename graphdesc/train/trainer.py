"""The training loop: Adam, exponential learning-rate decay, E/F/V losses, validation, checkpoints.

Example::

    from graphdesc.train import TrainConfig, emt_dataset, fit_statistics, train
    train_set, val_set = emt_dataset(96).split(0.25)
    model = EnergyModel(config)                  # a graphdesc.torch.EnergyModel
    fit_statistics(model, train_set)              # descriptor davg/dstd and per-type energy shift
    history = train(model, train_set, val_set, TrainConfig(steps=600), output="runs/demo")

Validation runs on the initial model, after every epoch (or every
``val_every`` steps) and at the end; ``output`` then holds ``model.npz`` (the
latest), ``best.npz`` (lowest validation loss) and ``history.json``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..model.checkpoint import atomic_write
from .batch import GraphCache, iterate_batches
from .compiled import MODES, TrainingForward
from .data import Dataset
from .distributed import ranks, share
from .loss import COMPONENTS, LossConfig, Metrics, label_counts, loss_terms
from .schedule import ExpDecay

__all__ = ["TrainConfig", "History", "train", "evaluate", "fit_statistics", "match_type_map", "TrainingDiverged",
           "CHECKPOINT"]


@dataclass(frozen=True)
class TrainConfig:
    """Training settings.

    Attributes:
        steps: optimizer steps (the learning-rate schedule spans them).
        batch_size: frames per batch.
        start_lr, stop_lr, decay_steps: :class:`~graphdesc.train.ExpDecay`.
        loss: prefactors, :class:`~graphdesc.train.LossConfig`.
        mode: execution mode of the training forward pass, one of
            ``eager``, ``traced``, ``aot_eager``, ``inductor``
            (:class:`~graphdesc.train.TrainingForward`).
        val_every: steps between validations; default one epoch.
        max_time: stop after this many seconds of training (the schedule
            stays planned over ``steps``); None for no limit.
        seed: shuffling seed.
        val_batch_size: frames per validation batch.
        save_every: steps between training checkpoints (``checkpoint.npz``,
            for ``--restart``; DeePMD-kit's ``save_freq``); they are also
            written at every validation. Default: only at validations.
    """

    steps: int = 1000
    batch_size: int = 4
    start_lr: float = 1e-3
    stop_lr: float = 1e-5
    decay_steps: int | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    mode: str = "eager"
    val_every: int | None = None
    max_time: float | None = None
    seed: int = 0
    val_batch_size: int = 8
    save_every: int | None = None

    def __post_init__(self):
        optional = tuple(n for n in ("val_every", "save_every") if getattr(self, n) is not None)
        for name in ("steps", "batch_size", "val_batch_size") + optional:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not isinstance(self.loss, LossConfig):
            raise TypeError(f"loss must be a LossConfig, got {type(self.loss).__name__}")
        if self.max_time is not None and not self.max_time > 0:
            raise ValueError(f"max_time must be > 0 seconds, got {self.max_time!r}")
        self.schedule()  # validates the learning rates

    def schedule(self) -> ExpDecay:
        return ExpDecay(self.start_lr, self.stop_lr, self.steps, self.decay_steps)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class History:
    """What happened: one row per validation, and step timings.

    Attributes:
        rows: dicts with ``step``, ``epoch``, ``lr``, ``train_loss`` (mean
            over the steps since the last row; None at step 0), ``val``
            (``{"energy", "force", "virial"}`` RMSEs: eV/atom, eV/Å, eV/atom;
            None where there are no labels), ``val_loss`` and ``wall_s``.
        step_seconds: wall time of every optimizer step (the first includes
            compilation in the compiled modes).
    """

    rows: list = field(default_factory=list)
    step_seconds: list = field(default_factory=list)

    @property
    def median_step_seconds(self) -> float:
        """Median wall time per step, the first step (compilation) left out."""
        later = self.step_seconds[1:] or self.step_seconds
        return float(np.median(later)) if later else math.nan

    def to_dict(self) -> dict:
        return {"rows": self.rows, "step_seconds": self.step_seconds,
                "median_step_seconds": self.median_step_seconds}


def match_type_map(model, dataset: Dataset) -> Dataset:
    """``dataset`` with its types renumbered to the model's ``type_map`` (errors name the mismatch).

    A model without a ``type_map`` takes the dataset's type numbers as they are
    (they must be below ``ntypes``).
    """
    model_map = model.config.descriptor.type_map
    ntypes = model.config.ntypes
    if model_map is None:
        if len(dataset.type_map) > ntypes:
            raise ValueError(f"the dataset has {len(dataset.type_map)} types {list(dataset.type_map)} but the model "
                             f"has ntypes={ntypes}")
        return dataset
    model_map = tuple(model_map)
    if tuple(dataset.type_map) == model_map:
        return dataset
    missing = [s for s in dataset.type_map if s not in model_map]
    if missing:
        raise ValueError(f"the dataset holds elements {missing} that are not in the model's type_map {list(model_map)}")
    lookup = np.array([model_map.index(s) for s in dataset.type_map], dtype=np.int64)
    return Dataset([replace(f, atype=lookup[f.atype]) for f in dataset.frames], model_map)


def fit_statistics(model, dataset: Dataset, *, max_frames: int = 1000) -> None:
    """Install data statistics in ``model``, as DeePMD-kit does before training.

    * descriptor ``davg``/``dstd`` from the environments of up to
      ``max_frames`` frames (:func:`graphdesc.descriptor.compute_stats`);
    * the per-type energy shift ``bias_atom_e``: the least-squares solution of
      ``E_f = sum_t count_{f,t} bias_t`` over the frames (types absent from
      the data get 0).
    """
    dataset = match_type_map(model, dataset)
    cache = GraphCache(dataset, model.config.rcut)
    frames = range(min(len(dataset), max_frames))
    model.compute_stats([(cache.graph(k), dataset[k].atype) for k in frames])
    counts = np.stack([np.bincount(f.atype, minlength=model.config.ntypes) for f in dataset.frames]).astype(float)
    energies = np.array([f.energy for f in dataset.frames])
    bias = np.linalg.lstsq(counts, energies, rcond=None)[0]
    model.set_energy_bias(bias)


def evaluate(model, dataset: Dataset, *, batch_size: int = 8, cache: GraphCache | None = None) -> dict:
    """RMSEs of ``model`` on ``dataset``: ``{"energy" (eV/atom), "force" (eV/Å), "virial" (eV/atom)}``
    (None where the dataset has no such labels)."""
    dataset = match_type_map(model, dataset) if cache is None else cache.dataset
    cache = cache or GraphCache(dataset, model.config.rcut)
    return _metrics(model, cache, np.arange(len(dataset)), batch_size).rmse()


def _metrics(model, cache: GraphCache, indices, batch_size: int) -> Metrics:
    """Squared errors of ``model`` on the frames ``indices`` of ``cache`` (no autograd graph kept)."""
    dtype, device = _dtype_device(model)
    dataset = cache.dataset
    metrics = Metrics()
    for batch in iterate_batches(cache, batch_size, indices=indices, dtype=dtype, device=device):
        out = model(batch.graph, batch.atype, forces=dataset.has_forces or dataset.has_virial, create_graph=False)
        metrics.add({k: v.detach() for k, v in out.items()}, batch)
    return metrics


def train(model, train_set: Dataset, val_set: Dataset | None = None, config: TrainConfig | None = None, *,
          output=None, progress: bool = True, log=None, restart=None, curve_file: str = "lcurve.out") -> History:
    """Train ``model`` (an :class:`~graphdesc.torch.EnergyModel`) in place; returns the :class:`History`.

    Args:
        model: the model; call :func:`fit_statistics` first for a fresh one.
        train_set: training frames.
        val_set: validation frames (default: none, no validation rows but the
            training loss).
        config: :class:`TrainConfig` (default settings if None).
        output: directory for ``model.npz``, ``best.npz``, ``checkpoint.npz``,
            ``history.json`` and the learning curve; None writes nothing.
        progress: show a progress bar (tqdm).
        log: ``callable(str)`` for the validation lines; default prints
            through the progress bar.
        restart: a ``checkpoint.npz`` of an earlier run: continue it exactly
            (weights, optimizer moments, step, learning-rate position,
            data order and history are restored; the run's settings that
            shape the result must equal ``config``'s).
        curve_file: name of the learning-curve table in ``output`` (DeePMD-kit's
            ``disp_file``): one line per validation, step, RMSEs, lr, training loss.

    Under ``torch.distributed`` (started by ``torchrun``; see
    :mod:`graphdesc.train.distributed`) the model is wrapped in
    ``DistributedDataParallel``: each rank evaluates its share of every
    global batch of ``config.batch_size`` frames, validation errors are
    summed over the ranks, and only rank 0 writes files and logs. The result
    equals the one-process run's (to rounding). Only ``mode="eager"`` runs
    under DDP.

    Raises:
        TrainingDiverged: the loss or a gradient became NaN/inf; the message
            names the step and the loss term (or parameter), and the last
            checkpoint written before it is left as it was.
    """
    from tqdm.auto import tqdm

    config = config or TrainConfig()
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    r = ranks()
    if r.parallel and config.mode != "eager":
        raise ValueError(f"mode {config.mode!r} does not run under DistributedDataParallel ({r.world} processes): "
                         "the compiled modes trace the model's double backward, which DDP's gradient hooks do not "
                         "see; use mode='eager' (or one process)")
    train_set = _checked(model, train_set, config.loss, "train_set")
    val_set = None if val_set is None else _checked(model, val_set, config.loss, "val_set")
    dtype, device = _dtype_device(model)
    schedule = config.schedule()
    train_cache = GraphCache(train_set, model.config.rcut)
    val_cache = None if val_set is None else GraphCache(val_set, model.config.rcut)
    val_every = config.val_every or max(1, math.ceil(len(train_set) / config.batch_size))
    out_dir = None if output is None or not r.main else Path(output)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.glob(".*.npz.*.tmp"):  # a write cut short by a kill (the file it replaces is intact)
            stale.unlink(missing_ok=True)

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    # one fused kernel over every tensor where torch has one (CPU, CUDA) instead of the default (foreach)
    # update's dozen ops: 0.7 ms less per compiled step on the small preset (profiled, 4 x 32 atoms)
    fused = params[0].device.type in ("cpu", "cuda") if params else None
    optimizer = torch.optim.Adam(params, lr=schedule.start_lr, fused=fused)
    run = _RunState(fingerprint=_fingerprint(train_set))
    history = History()
    if restart is not None:
        run, history = _restore(restart, model, optimizer, config, run.fingerprint)
    net = torch.nn.parallel.DistributedDataParallel(model) if r.parallel else model
    forward = TrainingForward(net, config.mode)
    rng = np.random.default_rng(config.seed)
    if run.epoch_rng is not None:
        rng.bit_generator.state = run.epoch_rng
    bar = tqdm(total=config.steps, initial=run.step, desc=f"train ({config.mode})", unit="step",
               disable=not (progress and r.main), dynamic_ncols=True)
    say = (log or bar.write) if r.main else (lambda text: None)
    t_start = time.perf_counter() - run.elapsed

    def save_checkpoint():
        if output is None:
            return
        run.elapsed, run.saved_step = time.perf_counter() - t_start, run.step  # every rank knows what rank 0 wrote
        if out_dir is not None:
            _save_checkpoint(out_dir / CHECKPOINT, model, optimizer, run, history, config, train_set.type_map)

    def validate():
        row = {"step": run.step, "epoch": run.epoch, "lr": schedule(max(run.step - 1, 0)),
               "train_loss": float(np.mean(run.losses)) if run.losses else None,
               "wall_s": time.perf_counter() - t_start}
        if val_cache is not None:
            model.eval()
            indices = share(np.arange(len(val_set)), r)
            row["val"] = _metrics(model, val_cache, indices, config.val_batch_size).reduce(r).rmse()
            model.train()
            prefs = config.loss.prefactors(0.0)  # the limit prefactors: the loss training ends with
            row["val_loss"] = sum(prefs[c] * row["val"][c] ** 2 for c in COMPONENTS if row["val"][c] is not None)
        history.rows.append(row)
        run.losses.clear()
        say(_format_row(row))
        if out_dir is not None:
            extra = {"step": run.step, "epoch": run.epoch, "val": row.get("val"), "train_config": config.to_dict(),
                     "type_map": list(train_set.type_map)}
            model.save(out_dir / "model.npz", extra=extra)
            if row.get("val_loss", -math.inf) <= run.best or val_cache is None:
                run.best = row.get("val_loss", run.best)
                model.save(out_dir / "best.npz", extra=extra)
            text = json.dumps(history.to_dict(), indent=1).encode()
            atomic_write(out_dir / "history.json", lambda fh: fh.write(text))
            curve = _curve(history.rows).encode()
            atomic_write(out_dir / curve_file, lambda fh: fh.write(curve))
        save_checkpoint()

    if restart is None:
        say(_header(val_cache is not None))
        validate()
    else:
        say(f"restarted from {restart} at step {run.step} of {config.steps}")
    resumed = restart is not None
    stop = run.step >= config.steps
    while not stop:
        if not resumed:
            run.epoch, run.offset = run.epoch + 1, 0
        resumed = False
        run.epoch_rng = rng.bit_generator.state  # the order of this epoch is drawn from here
        order = rng.permutation(np.arange(len(train_set)))
        for start in range(run.offset * config.batch_size, len(order), config.batch_size):
            t0 = time.perf_counter()
            lr = schedule(run.step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            prefs = config.loss.prefactors(lr / schedule.start_lr)
            value, terms, loss = _loss(forward, train_cache, order[start:start + config.batch_size], prefs,
                                       config.loss.intensive, r, dtype, device)
            if not math.isfinite(value):
                bar.close()
                raise TrainingDiverged(_diverged(run, value, terms, output, schedule.start_lr))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            bad = _nonfinite_gradients(model)
            if bad:
                bar.close()
                raise TrainingDiverged(_diverged(run, value, terms, output, schedule.start_lr, bad))
            optimizer.step()
            run.step += 1
            run.offset += 1
            run.losses.append(value)
            history.step_seconds.append(time.perf_counter() - t0)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3g}", lr=f"{lr:.2g}", refresh=False)
            out_of_time = config.max_time is not None and r.sum([time.perf_counter() - t_start > config.max_time])[0]
            if run.step >= config.steps or out_of_time:
                stop = True
                break
            if run.step % val_every == 0:
                validate()
            elif config.save_every and run.step % config.save_every == 0:
                save_checkpoint()
    bar.close()
    if restart is None or history.rows[-1]["step"] != run.step:
        validate()
    return history


class TrainingDiverged(FloatingPointError):
    """The loss or a gradient became NaN or inf; nothing was written after the last good checkpoint."""


#: The training checkpoint written in ``output`` (``--restart`` continues from it).
CHECKPOINT = "checkpoint.npz"

#: TrainConfig fields that may change on a restart: they do not change the trained weights.
_FREE_ON_RESTART = ("mode", "val_every", "max_time", "save_every", "val_batch_size")


@dataclass
class _RunState:
    """Where a run is: everything beyond weights and optimizer moments that a restart needs."""

    fingerprint: str
    step: int = 0
    epoch: int = 0
    offset: int = 0  # batches of the current epoch done
    epoch_rng: dict | None = None  # data-order RNG state at the start of the current epoch
    best: float = math.inf
    losses: list = field(default_factory=list)  # training losses since the last validation row
    elapsed: float = 0.0
    saved_step: int | None = None


def _loss(forward, cache: GraphCache, indices, prefs: dict, intensive: bool, r, dtype, device):
    """``(value, terms, loss)`` of one global batch ``indices``: the loss value and the per-term values
    (floats, over the whole batch: summed over ranks) and this rank's differentiable loss.

    In a process group, this rank evaluates its share of ``indices`` with the global batch's counts, so
    DDP's average of the ranks' gradients times ``world`` is the whole batch's gradient. A rank whose share
    is empty evaluates one frame with weight 0 (DDP needs every rank in every backward).
    """
    components = [c for c in COMPONENTS if prefs[c] > 0]
    if not r.parallel:
        batch = cache.batch(indices, dtype=dtype, device=device)
        terms = loss_terms(forward(batch.graph, batch.atype), batch, components, intensive=intensive)
        loss = sum(prefs[c] * terms[c] for c in terms)
        return float(loss.detach()), {c: float(t.detach()) for c, t in terms.items()}, loss
    mine = share(indices, r)
    weight = r.world if len(mine) else 0.0
    batch = cache.batch(mine if len(mine) else indices[:1], dtype=dtype, device=device)
    counts = label_counts([cache.dataset[int(i)] for i in indices])
    # the energy term always joins (weight 0 if unused): DDP expects a gradient for every parameter
    components = ["energy"] + [c for c in components if c != "energy"]
    terms = loss_terms(forward(batch.graph, batch.atype), batch, components, intensive=intensive, counts=counts)
    local = [float(terms[c].detach()) * (weight / r.world) for c in components]
    totals = dict(zip(components, r.sum(local)))
    value = sum(prefs[c] * totals[c] for c in components)
    return float(value), totals, weight * sum(prefs[c] * terms[c] for c in components)


def _nonfinite_gradients(model) -> list:
    """Names of the parameters whose gradient holds NaN or inf (one fused check first)."""
    named = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
    if not named or bool(torch.isfinite(torch.stack([g.sum() for _, g in named])).all()):
        return []
    return [n for n, g in named if not bool(torch.isfinite(g).all())]


def _diverged(run: _RunState, value, terms: dict, output, start_lr, bad_params=()) -> str:
    where = f"step {run.step}"
    if bad_params:
        what = (f"the gradient of {', '.join(bad_params[:3])}{' ...' if len(bad_params) > 3 else ''} became "
                f"NaN/inf (loss {value:g}: {', '.join(f'{c} {v:g}' for c, v in terms.items())})")
    else:
        culprits = [c for c, v in terms.items() if not math.isfinite(v)] or list(terms)
        what = (f"the {' and '.join(culprits)} loss term{'s' if len(culprits) > 1 else ''} became "
                f"{', '.join(f'{terms[c]:g}' for c in culprits)} (total loss {value:g})")
    if output is None:
        kept = "nothing was written (no output directory)"
    elif run.saved_step is None:
        kept = "no checkpoint had been written yet"
    else:
        kept = f"the last good checkpoint, {Path(output) / CHECKPOINT} (step {run.saved_step}), is kept"
    return (f"training stopped at {where}: {what}; {kept}. Lower start_lr (now {start_lr:g}) or check the "
            "labels, then --restart from the checkpoint or start over")


def _fingerprint(dataset: Dataset) -> str:
    """A hash of the frames' types, positions, cells and labels: a restart must see the same data."""
    import hashlib

    h = hashlib.sha256()
    for f in dataset.frames:
        for a in (f.atype, f.positions, f.cell, np.float64(f.energy), f.forces, f.virial):
            if a is not None:
                h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _save_checkpoint(path: Path, model, optimizer, run: _RunState, history: History, config: TrainConfig,
                     type_map) -> None:
    opt = optimizer.state_dict()
    arrays = {f"optimizer/{i}/{k}": v.detach().cpu().numpy() for i, st in opt["state"].items() for k, v in st.items()}
    arrays["step_seconds"] = np.asarray(history.step_seconds, dtype=np.float64)
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in opt["param_groups"]]
    state = {"run": asdict(run), "rows": history.rows, "optimizer_groups": groups,
             "parameters": [n for n, p in model.named_parameters() if p.requires_grad]}
    extra = {"step": run.step, "epoch": run.epoch, "train_config": config.to_dict(), "type_map": list(type_map),
             "train_state": state}
    model.save(path, extra=extra, state=arrays)


def _restore(path, model, optimizer, config: TrainConfig, fingerprint: str):
    """Load weights, optimizer state and the run state of a training checkpoint into ``model`` and
    ``optimizer``; errors name the file and what does not match."""
    from ..model.checkpoint import load_model, load_state_arrays

    config_saved, params, extra = load_model(path)
    state = extra.get("train_state")
    if not isinstance(state, dict):
        raise ValueError(f"{path} is a model checkpoint without a training state: --restart needs the "
                         f"{CHECKPOINT} a training run writes (use --init-model to start from these weights)")
    if config_saved != model.current_config():
        raise ValueError(f"{path}: the checkpoint's model config differs from the model being trained")
    saved, now = extra.get("train_config", {}), config.to_dict()
    differ = sorted(k for k in set(saved) | set(now) if k not in _FREE_ON_RESTART and saved.get(k) != now.get(k))
    if differ:
        raise ValueError(f"{path}: cannot continue the run exactly: its settings differ in "
                         + ", ".join(f"{k} ({saved.get(k)!r} in the checkpoint, now {now.get(k)!r})" for k in differ)
                         + "; restart with the same settings, or use --init-model to start a new schedule")
    run = _RunState(**state["run"])
    if run.fingerprint != fingerprint:
        raise ValueError(f"{path}: the training data differ from the data the run was started on "
                         "(a restart continues the same data order over the same frames)")
    if state.get("parameters") != [n for n, p in model.named_parameters() if p.requires_grad]:
        raise ValueError(f"{path}: the checkpoint's trainable parameters differ from the model's")
    arrays = load_state_arrays(path)
    model.load_params(params)
    opt_state = {}
    for key, value in arrays.items():
        if key.startswith("optimizer/"):
            _, i, k = key.split("/")
            opt_state.setdefault(int(i), {})[k] = torch.as_tensor(value)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in state["optimizer_groups"]]
    try:
        optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as err:
        raise ValueError(f"{path}: the optimizer state does not fit the model: {err}") from None
    history = History(rows=list(state["rows"]), step_seconds=[float(t) for t in arrays.get("step_seconds", [])])
    return run, history


def _checked(model, dataset, loss: LossConfig, name: str) -> Dataset:
    if not isinstance(dataset, Dataset):
        raise TypeError(f"{name} must be a graphdesc.train.Dataset, got {type(dataset).__name__}")
    dataset = match_type_map(model, dataset)
    if loss.uses("force"):
        dataset.require("forces", f"the loss has a force term (start_pref_f={loss.start_pref_f}, "
                                  f"limit_pref_f={loss.limit_pref_f}) for {name}")
    if loss.uses("virial"):
        dataset.require("virial", f"the loss has a virial term (start_pref_v={loss.start_pref_v}, "
                                  f"limit_pref_v={loss.limit_pref_v}) for {name}")
    return dataset


def _dtype_device(model):
    first = next(model.buffers())
    return first.dtype, first.device


def _curve(rows) -> str:
    """The learning curve as a whitespace table (DeePMD-kit's ``lcurve.out`` spirit; SI-ish units: eV, A)."""
    lines = [f"# {'step':>8} {'rmse_e_val':>12} {'rmse_f_val':>12} {'rmse_v_val':>12} {'lr':>10} {'train_loss':>12}"
             "   (eV/atom, eV/A, eV/atom)"]
    for row in rows:
        val = row.get("val") or {}
        cells = [f"{val[c]:12.6e}" if val.get(c) is not None else f"{'nan':>12}" for c in COMPONENTS]
        loss = f"{row['train_loss']:12.6e}" if row["train_loss"] is not None else f"{'nan':>12}"
        lines.append(f"  {row['step']:8d} {' '.join(cells)} {row['lr']:10.3e} {loss}")
    return "\n".join(lines) + "\n"


def _header(with_val: bool) -> str:
    head = f"{'step':>7} {'epoch':>5} {'lr':>8} {'train loss':>11}"
    if with_val:
        head += f" {'val E meV/atom':>15} {'val F meV/A':>12} {'val V meV/atom':>15}"
    return head


def _format_row(row) -> str:
    loss = "-" if row["train_loss"] is None else f"{row['train_loss']:.4g}"
    text = f"{row['step']:7d} {row['epoch']:5d} {row['lr']:8.2e} {loss:>11}"
    if "val" in row:
        text += "".join(f" {'-' if v is None else f'{1e3 * v:.2f}':>{w}}"
                        for v, w in zip((row["val"][c] for c in COMPONENTS), (15, 12, 15)))
    return text
