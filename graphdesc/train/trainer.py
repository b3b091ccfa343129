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

from .batch import GraphCache, iterate_batches
from .compiled import MODES, TrainingForward
from .data import Dataset
from .loss import COMPONENTS, LossConfig, Metrics, loss_terms
from .schedule import ExpDecay

__all__ = ["TrainConfig", "History", "train", "evaluate", "fit_statistics", "match_type_map"]


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

    def __post_init__(self):
        for name in ("steps", "batch_size", "val_batch_size") + (("val_every",) if self.val_every is not None else ()):
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
    dtype, device = _dtype_device(model)
    metrics = Metrics()
    for batch in iterate_batches(cache, batch_size, dtype=dtype, device=device):
        out = model(batch.graph, batch.atype, forces=dataset.has_forces or dataset.has_virial, create_graph=False)
        metrics.add({k: v.detach() for k, v in out.items()}, batch)
    return metrics.rmse()


def train(model, train_set: Dataset, val_set: Dataset | None = None, config: TrainConfig | None = None, *,
          output=None, progress: bool = True, log=None) -> History:
    """Train ``model`` (an :class:`~graphdesc.torch.EnergyModel`) in place; returns the :class:`History`.

    Args:
        model: the model; call :func:`fit_statistics` first for a fresh one.
        train_set: training frames.
        val_set: validation frames (default: none, no validation rows but the
            training loss).
        config: :class:`TrainConfig` (default settings if None).
        output: directory for ``model.npz``, ``best.npz`` and ``history.json``;
            None writes nothing.
        progress: show a progress bar (tqdm).
        log: ``callable(str)`` for the validation lines; default prints
            through the progress bar.
    """
    from tqdm.auto import tqdm

    config = config or TrainConfig()
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    train_set = _checked(model, train_set, config.loss, "train_set")
    val_set = None if val_set is None else _checked(model, val_set, config.loss, "val_set")
    dtype, device = _dtype_device(model)
    schedule = config.schedule()
    train_cache = GraphCache(train_set, model.config.rcut)
    val_cache = None if val_set is None else GraphCache(val_set, model.config.rcut)
    val_every = config.val_every or max(1, math.ceil(len(train_set) / config.batch_size))
    out_dir = None if output is None else Path(output)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)

    model.train()
    forward = TrainingForward(model, config.mode)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=schedule.start_lr)
    rng = np.random.default_rng(config.seed)
    history = History()
    best = math.inf
    bar = tqdm(total=config.steps, desc=f"train ({config.mode})", unit="step", disable=not progress,
               dynamic_ncols=True)
    say = log or bar.write
    losses, step, epoch, t_start = [], 0, 0, time.perf_counter()

    def validate():
        nonlocal best
        row = {"step": step, "epoch": epoch, "lr": schedule(max(step - 1, 0)),
               "train_loss": float(np.mean(losses)) if losses else None, "wall_s": time.perf_counter() - t_start}
        if val_cache is not None:
            model.eval()
            row["val"] = evaluate(model, val_set, batch_size=config.val_batch_size, cache=val_cache)
            model.train()
            prefs = config.loss.prefactors(0.0)  # the limit prefactors: the loss training ends with
            row["val_loss"] = sum(prefs[c] * row["val"][c] ** 2 for c in COMPONENTS if row["val"][c] is not None)
        history.rows.append(row)
        losses.clear()
        say(_format_row(row))
        if out_dir is not None:
            extra = {"step": step, "epoch": epoch, "val": row.get("val"), "train_config": config.to_dict(),
                     "type_map": list(train_set.type_map)}
            model.save(out_dir / "model.npz", extra=extra)
            if row.get("val_loss", -math.inf) <= best or val_cache is None:
                best = row.get("val_loss", best)
                model.save(out_dir / "best.npz", extra=extra)
            (out_dir / "history.json").write_text(json.dumps(history.to_dict(), indent=1))

    say(_header(val_cache is not None))
    validate()
    stop = False
    while not stop:
        epoch += 1
        for batch in iterate_batches(train_cache, config.batch_size, shuffle=True, rng=rng, dtype=dtype,
                                     device=device):
            t0 = time.perf_counter()
            lr = schedule(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            prefs = config.loss.prefactors(lr / schedule.start_lr)
            terms = loss_terms(forward(batch.graph, batch.atype), batch, [c for c in COMPONENTS if prefs[c] > 0])
            loss = sum(prefs[c] * terms[c] for c in terms)
            value = float(loss.detach())
            if not math.isfinite(value):
                bar.close()
                raise FloatingPointError(f"the loss became {value} at step {step}: lower start_lr "
                                         f"(now {schedule.start_lr}) or check the labels")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            losses.append(value)
            history.step_seconds.append(time.perf_counter() - t0)
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3g}", lr=f"{lr:.2g}", refresh=False)
            out_of_time = config.max_time is not None and time.perf_counter() - t_start > config.max_time
            if step >= config.steps or out_of_time:
                stop = True
                break
            if step % val_every == 0:
                validate()
    bar.close()
    validate()
    return history


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
