"""Traced programs with the folded smooth attention against the masked layer, paired in one process.

    python benchmarks/bench_fold.py                     # .pt2 packages on fcc Cu (32, 256 atoms) and the training step
    python benchmarks/bench_fold.py --cells 2,4,6 --steps 60
    python benchmarks/bench_fold.py --report benchmarks/results/fold_traced.json   # re-render the .md

In traced programs (``.pt2`` packages, compiled training) the block width is symbolic, so the folded layer
counts the ``sel - width`` extra phantoms as a signed term of each softmax denominator
(``graph_path._signed_softmax``). This benchmark builds each program twice from the same model, once as the
code is and once with the fold switched off (``folded_phantoms`` returning None while it traces: the masked
layer), and times the two alternately, call by call, in one process, so that a shared CPU slows both alike:

* ``package``: energy+force of bench_dpa1's fp64 model (its cache) on fcc Cu through an AOTInductor package,
  one package per variant for every size;
* ``training step``: the compiled (``inductor``) training step of bench_train_step (small preset, 4 EMT demo
  frames of 32 atoms, E/F/V loss, backward, fused Adam), the two programs fed the same batches.

Reports the median of each, the median of the per-pair ratios (masked / fold), and how far the two programs'
outputs are apart (forces, or energy/force/virial for the training forward).
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import time

from _timing import run_header, save_results, sized_run_args, start_sized_run

HERE = os.path.dirname(os.path.abspath(__file__))
VARIANTS = ("fold", "masked")


def _variants(build):
    """``{"fold": build(), "masked": build()}``, the second traced with the fold switched off."""
    import graphdesc.descriptor.graph_path as gp

    rule, out = gp.folded_phantoms, {"fold": build()}
    gp.folded_phantoms = lambda config, width: None
    try:
        out["masked"] = build()
    finally:
        gp.folded_phantoms = rule
    return out


def _paired(call, rounds: int) -> dict:
    """Alternate ``call(variant)`` ``rounds`` times (the order flips each round): seconds per variant."""
    times = {v: [] for v in VARIANTS}
    for i in range(rounds):
        for v in (VARIANTS if i % 2 == 0 else VARIANTS[::-1]):
            t0 = time.perf_counter()
            call(v)
            times[v].append(time.perf_counter() - t0)
    return times


def _row(program: str, label: str, atoms: int, times: dict, scale: float, diff: float) -> dict:
    ratios = [m / f for m, f in zip(times["masked"], times["fold"])]
    return dict(program=program, label=label, atoms=atoms, rounds=len(ratios),
                fold=scale * statistics.median(times["fold"]), masked=scale * statistics.median(times["masked"]),
                ratio=statistics.median(ratios), max_diff=diff)


def packages(cells: list, cache: str, rounds: int) -> list:
    """The package rows: ms/atom of each variant per size of fcc Cu."""
    import torch

    from bench_dpa1 import RCUT, make_model, system_positions
    from graphdesc.export import export_package, load_package
    from graphdesc.graph import build_graph
    from graphdesc.torch import EnergyModel

    with open(make_model("cu", "float64", cache), "rb") as f:
        config, params = pickle.load(f)["graphdesc"]
    model = EnergyModel(config, params).eval()
    stamp = f"{os.getpid()}-{time.time_ns()}"

    def build():
        path = os.path.join(cache, f"fold-bench-{stamp}-{len(os.listdir(cache))}.pt2")
        print(f"  exporting {os.path.basename(path)} ...", flush=True)
        export_package(model, path)
        package = load_package(path)
        os.remove(path)
        return package

    pk = _variants(build)
    rows = []
    for c in cells:
        positions, cell = system_positions("cu", c)
        graph = build_graph(torch.as_tensor(positions), RCUT, cell=torch.as_tensor(cell), pbc=True)
        atype = torch.zeros(len(positions), dtype=torch.int64)
        args = (atype, graph.edge_index, graph.edge_vec, graph.edge_mask, graph.n_node)
        forces = {v: pk[v](*args, check=False)["force"] for v in VARIANTS}
        times = _paired(lambda v: pk[v](*args, check=False), rounds)
        rows.append(_row("package", "fcc Cu, E+F", len(positions), times, 1e3 / len(positions),
                         float((forces["fold"] - forces["masked"]).abs().max())))
        print(markdown_row(rows[-1]), flush=True)
    return rows


def training_step(steps: int) -> dict:
    """The training-step row: ms per step of each variant, the two fed the same batches."""
    import numpy as np
    import torch

    from graphdesc.cli import _new_model
    from graphdesc.train import emt_dataset, fit_statistics, loss_terms
    from graphdesc.train.batch import GraphCache
    from graphdesc.train.compiled import TrainingForward

    data = emt_dataset(48, seed=0)
    model, _ = _new_model(data, "small")
    fit_statistics(model, data)
    forward = _variants(lambda: TrainingForward(model, "inductor"))
    cache = GraphCache(data, model.config.rcut)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=True)
    rng = np.random.default_rng(0)
    batches = [cache.batch(rng.choice(len(data), 4, replace=False)) for _ in range(8)]
    out = {v: forward[v](batches[0].graph, batches[0].atype) for v in VARIANTS}
    diff = max(float((out["fold"][k] - out["masked"][k]).detach().abs().max()) for k in out["fold"])
    count = [0]

    def step(v):
        batch = batches[count[0] // 2 % len(batches)]
        count[0] += 1
        terms = loss_terms(forward[v](batch.graph, batch.atype), batch, ["energy", "force", "virial"],
                           intensive=True)
        loss = terms["energy"] * 0.02 + terms["force"] * 1000 + terms["virial"] * 0.02
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    _paired(step, 6)  # compiles both, warms up
    row = _row("training step", "small preset, 4 x 32 atoms, E/F/V", 128, _paired(step, steps), 1e3, diff)
    print(markdown_row(row), flush=True)
    return row


HEAD = ("| program | what | atoms | fold | masked | masked / fold (median of pairs) | pairs | max \\|Δ\\| |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|")


def markdown_row(r: dict) -> str:
    unit = "ms/atom" if r["program"] == "package" else "ms/step"
    return (f"| {r['program']} | {r['label']} | {r['atoms']} | {r['fold']:.3f} {unit} | {r['masked']:.3f} {unit} | "
            f"{r['ratio']:.2f}x | {r['rounds']} | {r['max_diff']:.1e} |")


def markdown(result: dict) -> str:
    return "\n".join([
        f"`{result['command']}`, {result['threads']} threads, torch {result['torch']}, {result['cpu']}, "
        f"{result['date']} at {result['code']}, load {result['load']} at the start: folded (signed) smooth attention "
        "against the masked layer in traced programs, alternating call by call.", "", HEAD,
        *map(markdown_row, result["rows"])]) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="package calls per variant and size, alternating")
    parser.add_argument("--steps", type=int, default=60, help="training steps per variant, alternating (0: none)")
    sized_run_args(parser, "fold_traced.json", cells="2,4")
    started = start_sized_run(parser, argv, markdown)
    if started is None:
        return 0
    args, cells = started
    import torch

    from bench_dpa1 import _device_name

    result = dict(run_header("bench_fold.py", argv, args.threads), cpu=_device_name(torch.device("cpu")), rows=[])
    result["rows"] += packages(cells, args.cache, args.rounds) if cells else []
    if args.steps:
        result["rows"].append(training_step(args.steps))
    print(markdown(result))
    save_results(result, args.out, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
