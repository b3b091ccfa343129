"""Does ``torch.compile`` of the block stage speed up eager energy+force? (Issue 17's first option.)

    python benchmarks/bench_compiled_stage.py                 # fcc Cu fp64, 32, 256 and 864 atoms
    python benchmarks/bench_compiled_stage.py --cells 4 --precision float32
    python benchmarks/bench_compiled_stage.py --report benchmarks/results/compiled_stage.json   # re-render the .md

The model, weights and structures of ``bench_dpa1.py`` (its cache). Each energy+force call runs the edge
stage eagerly and then the block stage piece by piece with its gradient taken right away, exactly as the torch
shell's evaluation does (``graphdesc.torch._piecewise_gradient``); the block stage of a piece (attention,
contraction, readout, fitting: ``center_energy``) is either eager or ``torch.compile``d by inductor, with
static shapes (one compile per piece shape) or dynamic ones. The three variants run interleaved, call by call,
in one process; the first compiled call includes the compile. Forces are compared with eager's.
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
VARIANTS = ("eager", "compiled, static shapes", "compiled, dynamic shapes")


def measure(system: str, cells: int, precision: str, cache: str, rounds: int) -> dict:
    """Median ms/atom of each variant over ``rounds`` interleaved calls, its first call, and max |dF| vs eager."""
    import torch

    from bench_dpa1 import RCUT, make_model, system_positions
    from graphdesc.descriptor.nets import type_table
    from graphdesc.graph import build_graph, edge_force_virial
    from graphdesc.model.energy import atom_energy_stages, center_energy
    from graphdesc.torch import EnergyModel, _piecewise_gradient

    with open(make_model(system, precision, cache), "rb") as f:
        config, params = pickle.load(f)["graphdesc"]
    dtype = getattr(torch, precision)
    model = EnergyModel(config, params, attention="blocks").to(dtype=dtype).eval()
    positions, cell = system_positions(system, cells)
    graph = build_graph(torch.as_tensor(positions, dtype=dtype), RCUT, cell=torch.as_tensor(cell, dtype=dtype),
                        pbc=True)
    atype = torch.zeros(len(positions), dtype=torch.int64)
    n = len(positions)

    def stage(p, piece, table):
        return center_energy(p, config, piece, table, attention="blocks")

    stages = {"eager": stage, "compiled, static shapes": torch.compile(stage, dynamic=False),
              "compiled, dynamic shapes": torch.compile(stage, dynamic=True)}

    def call(variant):
        vec = graph.edge_vec.detach().requires_grad_(True)
        g = graph.replace(edge_vec=vec)
        p = model.params()
        with torch.enable_grad():
            parts, pieces, _ = atom_energy_stages(p, config, g, atype, attention="blocks")
            table = type_table(p["descriptor"], config.descriptor)
            _, grad = _piecewise_gradient(parts, pieces, lambda piece: stages[variant](p, piece, table), vec)
        return edge_force_virial(grad, g, n)[0], len(pieces)

    first, forces, times = {}, {}, {v: [] for v in VARIANTS}
    for variant in VARIANTS:
        t0 = time.perf_counter()
        forces[variant], pieces = call(variant)
        first[variant] = time.perf_counter() - t0
    for _ in range(rounds):
        for variant in VARIANTS:
            t0 = time.perf_counter()
            call(variant)
            times[variant].append(time.perf_counter() - t0)
    return dict(system=system, precision=precision, atoms=n, pieces=pieces, rounds=rounds, variants=[
        dict(variant=v, ms_per_atom=1e3 * statistics.median(times[v]) / n, first_call_s=first[v],
             spread=max(times[v]) / min(times[v]),
             df_max_vs_eager=float((forces[v] - forces["eager"]).abs().max())) for v in VARIANTS])


def markdown(result: dict) -> str:
    code = f" at {result['code']}" if "code" in result else ""
    lines = [f"`{result['command']}`, {result['threads']} threads, torch {result['torch']}, {result['date']}{code}, "
             f"load {result['load']} at the start: energy+force with the block stage eager or compiled, "
             "interleaved call by call.", "",
             "| system | precision | atoms | pieces | variant | ms/atom | eager / variant time | first call (s) | "
             "max/min of calls | max \\|ΔF\\| vs eager (eV/Å) |",
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for point in result["points"]:
        eager = point["variants"][0]["ms_per_atom"]
        for v in point["variants"]:
            lines.append(f"| {point['system']} | {point['precision']} | {point['atoms']} | {point['pieces']} | "
                         f"{v['variant']} | {v['ms_per_atom']:.3f} | {eager / v['ms_per_atom']:.2f}x | "
                         f"{v['first_call_s']:.1f} | {v['spread']:.2f} | {v['df_max_vs_eager']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", default="cu")
    parser.add_argument("--precision", choices=["float64", "float32"], default="float64")
    parser.add_argument("--rounds", type=int, default=7, help="timed calls per variant, interleaved")
    sized_run_args(parser, "compiled_stage.json", cells="2,4,6")
    started = start_sized_run(parser, argv, markdown)
    if started is None:
        return 0
    args, cells = started
    result = dict(run_header("bench_compiled_stage.py", argv, args.threads), points=[])
    for c in cells:
        result["points"].append(measure(args.system, c, args.precision, args.cache, args.rounds))
        print(markdown(result).splitlines()[-1], flush=True)
    print(markdown(result))
    save_results(result, args.out, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
