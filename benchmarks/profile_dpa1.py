"""Where the time of one DPA1 energy+force call goes: torch.profiler self CPU time by op group.

    python benchmarks/profile_dpa1.py                       # fcc Cu, fp64, 32, 108, 256 and 864 atoms
    python benchmarks/profile_dpa1.py --system diamond --cells 2,4 --precision float32

Uses the same weights and structures as ``bench_dpa1.py`` (and its model cache). Prints a
Markdown table, one column per size: each op group's share of the profiled self CPU time, and writes it
with the raw seconds to ``--out`` (JSON, and the table as ``.md`` beside it); then the per-call cost
unprofiled, and the rate of the call's matrix products (the profiler's FLOP count over their self CPU
time) against a 2048^3 product's in the same run.

    python benchmarks/profile_dpa1.py --report benchmarks/results/profile_dpa1.json   # re-render the .md
"""
from __future__ import annotations

import argparse
import collections
import os
import pickle
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import median_time, run_header, save_results, sized_run_args, start_sized_run  # noqa: E402
from bench_dpa1 import RCUT, SYSTEMS, make_model, system_positions  # noqa: E402

GROUPS = {  # op name -> group; ops not listed are elementwise (aten::) or engine/dispatch (anything else)
    "matmul (mm, bmm)": ("mm", "bmm", "addmm", "baddbmm", "matmul"),
    "copies and fills": ("copy_", "cat", "fill_", "zero_", "clone", "empty", "empty_strided", "zeros",
                         "zeros_like", "ones_like", "full", "new_zeros", "empty_like", "_to_copy", "stack"),
    "reductions": ("sum", "linalg_vector_norm", "amax", "max", "mean", "norm", "softmax", "_softmax",
                   "_softmax_backward_data", "cumsum", "logsumexp"),
    "scatter/gather": ("index_select", "scatter_add_", "index_add_", "index", "gather", "scatter_reduce_",
                       "index_put_", "_index_put_impl_", "embedding", "repeat_interleave", "nonzero"),
    "views": ("view", "reshape", "as_strided", "transpose", "permute", "expand", "unsqueeze", "squeeze", "slice",
              "select", "t", "split", "split_with_sizes", "narrow", "alias", "detach", "_unsafe_view", "unbind",
              "lift_fresh", "result_type", "to", "contiguous"),
}
OP_GROUP = {f"aten::{op}": group for group, ops in GROUPS.items() for op in ops}
#: the matmul group's ops whose FLOPs the profiler counts (``aten::matmul`` dispatches to the others)
MATMUL_OPS = tuple(f"aten::{op}" for op in GROUPS["matmul (mm, bmm)"] if op != "matmul")


def group_of(name: str) -> str:
    if name in OP_GROUP:
        return OP_GROUP[name]
    return "elementwise" if name.startswith("aten::") else "autograd engine, dispatch"


def profile_call(system: str, cells: int, precision: str, cache: str, calls: int = 3) -> dict:
    """One size: ``atoms``; ``seconds``, ``{group: self CPU seconds per call}`` of ``calls`` profiled E+F calls
    after two warm-ups; ``op_calls``, profiled events per call; and the per-call cost unprofiled (medians):
    ``build_ms`` (the neighbor graph), ``call_ms`` (energy+force) and ``tiny_call_ms``, the same call with every
    width of the model set to 1 (the same ops with little arithmetic: an upper bound on Python and dispatch)."""
    import torch
    from torch.profiler import profile

    from graphdesc.graph import build_graph
    from graphdesc.torch import EnergyModel

    with open(make_model(system, precision, cache), "rb") as f:
        config, params = pickle.load(f)["graphdesc"]
    dtype = getattr(torch, precision)
    positions, cell = system_positions(system, cells)
    model = EnergyModel(config, params).to(dtype=dtype).eval()
    graph = build_graph(torch.as_tensor(positions, dtype=dtype), RCUT, cell=torch.as_tensor(cell, dtype=dtype),
                        pbc=True)
    atype = torch.zeros(len(positions), dtype=torch.int64)
    for _ in range(2):
        model(graph, atype)
    with profile(with_flops=True) as prof:
        for _ in range(calls):
            model(graph, atype)
    seconds, matmul_flops = collections.Counter(), 0
    for event in prof.key_averages():
        seconds[group_of(event.key)] += event.self_cpu_time_total / 1e6 / calls
        if event.key in MATMUL_OPS:
            matmul_flops += event.flops / calls
    op_calls = sum(event.count for event in prof.key_averages()) / calls

    def build():
        return build_graph(torch.as_tensor(positions, dtype=dtype), RCUT, cell=torch.as_tensor(cell, dtype=dtype),
                           pbc=True)

    tiny = EnergyModel(tiny_config(config)).to(dtype=dtype).eval()
    tiny.compute_stats([(graph, atype)])
    return dict(atoms=len(positions), seconds=dict(seconds), op_calls=op_calls, matmul_gflop=matmul_flops / 1e9,
                build_ms=1e3 * median_time(build, 7), call_ms=1e3 * median_time(lambda: model(graph, atype), 7),
                tiny_call_ms=1e3 * median_time(lambda: tiny(graph, atype), 7))


def tiny_config(config):
    """``config`` with every width 1: the same ops and layers, almost no arithmetic."""
    import dataclasses

    d = config.descriptor
    descriptor = dataclasses.replace(d, neuron=(1,) * len(d.neuron), axis_neuron=1, tebd_dim=1, attn=1)
    return dataclasses.replace(config, descriptor=descriptor, neuron=(1,) * len(config.neuron))


def markdown(result: dict) -> str:
    """Each op group's share of the call's self CPU time (ms per call in brackets), one column per size."""
    columns = [(c["atoms"], c["seconds"]) for c in result["columns"]]
    groups = sorted({g for _, s in columns for g in s}, key=lambda g: -max(s.get(g, 0) for _, s in columns))
    code = f" at {result['code']}" if "code" in result else ""
    lines = [f"`{result.get('command', 'python benchmarks/profile_dpa1.py')}`, {result['system']} "
             f"{result['precision']}, {result['threads']} threads, torch {result['torch']}, {result['date']}{code}, "
             f"load {result.get('load', '?')}: share of self CPU time per E+F call (ms per call).", "",
             "| op group | " + " | ".join(f"{n} atoms" for n, _ in columns) + " |", "|---|" + "---:|" * len(columns)]
    for group in groups:
        cells_text = [f"{100 * s.get(group, 0) / sum(s.values()):.0f} % ({1e3 * s.get(group, 0):.0f})"
                      for _, s in columns]
        lines.append(f"| {group} | " + " | ".join(cells_text) + " |")
    sized = [c for c in result["columns"] if "call_ms" in c]
    if sized:
        lines += ["", "Per-call cost, unprofiled medians (ms per call): the neighbor graph, the energy+force call, "
                  "and the same call with every width 1 (the same ops with little arithmetic: an upper bound on "
                  "Python and dispatch; the `(deg, deg)` pair scores per center remain).", "",
                  "| atoms | graph build | E+F call | E+F call, widths 1 | widths-1 share of the call | op calls |",
                  "|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {c['atoms']} | {c['build_ms']:.1f} | {c['call_ms']:.1f} | {c['tiny_call_ms']:.1f} | "
                  f"{100 * c['tiny_call_ms'] / c['call_ms']:.0f} % | {c['op_calls']:.0f} |" for c in sized]
    rated = [c for c in result["columns"] if "matmul_gflop" in c]
    if rated and "gemm_gflops" in result:
        rate = result["gemm_gflops"]
        lines += ["", f"The matrix products inside the call: their FLOPs (the profiler's count of every mm, bmm and "
                  f"addmm), their profiled self CPU time and the rate that makes, against a 2048^3 product's "
                  f"{rate:.1f} GFLOP/s in the same run.", "",
                  "| atoms | matmul GFLOP per call | matmul ms per call | GFLOP/s in the call "
                  "| share of the 2048^3 rate |", "|---:|---:|---:|---:|---:|"]
        for c in rated:
            ms = 1e3 * c["seconds"].get("matmul (mm, bmm)", 0)
            lines.append(f"| {c['atoms']} | {c['matmul_gflop']:.2f} | {ms:.0f} | {c['matmul_gflop'] / ms * 1e3:.1f} | "
                         f"{100 * c['matmul_gflop'] / ms * 1e3 / rate:.0f} % |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=list(SYSTEMS), default="cu")
    parser.add_argument("--precision", choices=["float64", "float32"], default="float64")
    sized_run_args(parser, "profile_dpa1.json", cells="2,3,4,6")
    started = start_sized_run(parser, argv, markdown)
    if started is None:
        return 0
    args, cells = started
    from bench_dpa1 import gemm_gflops

    result = dict(run_header("profile_dpa1.py", argv, args.threads), system=args.system, precision=args.precision,
                  columns=[profile_call(args.system, c, args.precision, args.cache) for c in cells],
                  gemm_gflops=gemm_gflops(args.precision, "cpu", args.threads))
    print(markdown(result))
    save_results(result, args.out, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
