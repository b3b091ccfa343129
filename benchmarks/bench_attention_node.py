"""Eager energy+force with the folded attention as one autograd node, and with the formula it replaces.

``graphdesc._backend.ATTENTION_NODE`` switches the node (``graphdesc._backend.folded_attention``) on and off
in one process; calls alternate between the two, the order flipping every round, on ``bench_dpa1.py``'s
model and structures (fcc Cu). Per size: the median ms/atom of each, the median of the rounds' paired ratios
(the formula's time over the node's) with its quartiles, and the largest force difference::

    python benchmarks/bench_attention_node.py                       # fp64 and fp32, 32-864 atoms
    python benchmarks/bench_attention_node.py --cells 2,3 --rounds 31 --precisions float64
    python benchmarks/bench_attention_node.py --report benchmarks/results/attention_node.json
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _timing import run_header, save_results, sized_run_args, start_sized_run  # noqa: E402


def measure(cells: int, precision: str, rounds: int, cache: str) -> dict:
    """One size and precision: both variants' times per call, in rounds, and their largest force difference."""
    import torch

    import graphdesc._backend as B
    from bench_dpa1 import RCUT, make_model, system_positions
    from graphdesc.graph import build_graph
    from graphdesc.torch import EnergyModel

    with open(make_model("cu", precision, cache), "rb") as f:
        config, params = pickle.load(f)["graphdesc"]
    dtype = getattr(torch, precision)
    model = EnergyModel(config, params).to(dtype=dtype).eval()
    positions, cell = system_positions("cu", cells)
    graph = build_graph(torch.as_tensor(positions, dtype=dtype), RCUT, cell=torch.as_tensor(cell, dtype=dtype),
                        pbc=True)
    atype = torch.zeros(len(positions), dtype=torch.int64)
    times, forces = {"node": [], "formula": []}, {}
    try:
        for r in range(rounds + 1):  # round 0 warms both up
            for variant in ("node", "formula") if r % 2 == 0 else ("formula", "node"):
                B.ATTENTION_NODE = variant == "node"
                t0 = time.perf_counter()
                forces[variant] = model(graph, atype)["force"]
                if r:
                    times[variant].append(time.perf_counter() - t0)
    finally:
        B.ATTENTION_NODE = True
    n = len(positions)
    ratios = [f / s for f, s in zip(times["formula"], times["node"])]
    quartiles = statistics.quantiles(ratios, n=4)
    return dict(atoms=n, precision=precision, node_ms=1e3 * statistics.median(times["node"]) / n,
                formula_ms=1e3 * statistics.median(times["formula"]) / n, ratio=statistics.median(ratios),
                ratio_q1=quartiles[0], ratio_q3=quartiles[2],
                df_max=float((forces["node"] - forces["formula"]).abs().max()), times=times)


def markdown(result: dict) -> str:
    lines = [f"`{result['command']}`, fcc Cu, {result['threads']} threads, torch {result['torch']}, {result['date']} "
             f"at {result['code']}, load {result['load']} at the start, {result['rounds']} rounds: eager "
             "energy+force with the attention node and with the formula, calls interleaved.", "",
             "| precision | atoms | node ms/atom | formula ms/atom | formula / node time (median of pairs) | "
             "quartiles | max \\|ΔF\\| (eV/Å) |",
             "|---|---:|---:|---:|---:|---|---:|"]
    for p in result["points"]:
        lines.append(f"| {p['precision']} | {p['atoms']} | {p['node_ms']:.3f} | {p['formula_ms']:.3f} | "
                     f"{p['ratio']:.2f}x | {p['ratio_q1']:.2f}–{p['ratio_q3']:.2f} | {p['df_max']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sized_run_args(parser, "attention_node.json", "2,3,4,6")
    parser.add_argument("--precisions", default="float64,float32")
    parser.add_argument("--rounds", type=int, default=21, help="timed calls per variant")
    started = start_sized_run(parser, argv, markdown)
    if started is None:
        return 0
    args, cells = started
    result = dict(run_header("bench_attention_node.py", argv, args.threads), rounds=args.rounds, points=[])
    for precision in args.precisions.split(","):
        for c in cells:
            point = measure(c, precision, args.rounds, args.cache)
            result["points"].append(point)
            print(f"{precision} {point['atoms']:5} atoms: node {point['node_ms']:.3f}, formula "
                  f"{point['formula_ms']:.3f} ms/atom, {point['ratio']:.2f}x", flush=True)
    print("\n" + markdown(result))
    save_results(result, args.out, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
