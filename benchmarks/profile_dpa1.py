"""Where the time of one DPA1 energy+force call goes: torch.profiler self CPU time by op group.

    python benchmarks/profile_dpa1.py                       # fcc Cu, fp64, 32 and 864 atoms
    python benchmarks/profile_dpa1.py --system diamond --cells 2,4 --precision float32

Uses the same weights and structures as ``bench_dpa1.py`` (and its model cache). Prints a
Markdown table, one column per size: each op group's share of the profiled self CPU time, and writes it
with the raw seconds to ``--out`` (JSON, and the table as ``.md`` beside it).

    python benchmarks/profile_dpa1.py --report benchmarks/results/profile_dpa1.json   # re-render the .md
"""
from __future__ import annotations

import argparse
import collections
import datetime
import os
import pickle
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import rerender, save_results  # noqa: E402
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


def group_of(name: str) -> str:
    if name in OP_GROUP:
        return OP_GROUP[name]
    return "elementwise" if name.startswith("aten::") else "autograd engine, dispatch"


def profile_call(system: str, cells: int, precision: str, cache: str, calls: int = 3) -> tuple[int, dict]:
    """``(atoms, {group: self CPU seconds per call})`` of ``calls`` profiled E+F calls after two warm-ups."""
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
    with profile() as prof:
        for _ in range(calls):
            model(graph, atype)
    seconds = collections.Counter()
    for event in prof.key_averages():
        seconds[group_of(event.key)] += event.self_cpu_time_total / 1e6 / calls
    return len(positions), dict(seconds)


def markdown(result: dict) -> str:
    """Each op group's share of the call's self CPU time (ms per call in brackets), one column per size."""
    columns = [(c["atoms"], c["seconds"]) for c in result["columns"]]
    groups = sorted({g for _, s in columns for g in s}, key=lambda g: -max(s.get(g, 0) for _, s in columns))
    lines = [f"`python benchmarks/profile_dpa1.py`, {result['system']} {result['precision']}, {result['threads']} "
             f"threads, torch {result['torch']}, {result['date']}: share of self CPU time per E+F call "
             "(ms per call).", "",
             "| op group | " + " | ".join(f"{n} atoms" for n, _ in columns) + " |", "|---|" + "---:|" * len(columns)]
    for group in groups:
        cells_text = [f"{100 * s.get(group, 0) / sum(s.values()):.0f} % ({1e3 * s.get(group, 0):.0f})"
                      for _, s in columns]
        lines.append(f"| {group} | " + " | ".join(cells_text) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=list(SYSTEMS), default="cu")
    parser.add_argument("--cells", default="2,6", help="comma list of cells per side (cu: 2 -> 32 atoms, 6 -> 864)")
    parser.add_argument("--precision", choices=["float64", "float32"], default="float64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cache", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".cache"))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                      "profile_dpa1.json"))
    parser.add_argument("--report", metavar="JSON", help="only re-render the .md of an earlier run")
    args = parser.parse_args(argv)
    if args.report:
        rerender(args.report, markdown)
        return 0
    try:
        cells = [int(c) for c in args.cells.split(",")]
    except ValueError:
        parser.error(f"--cells: expected a comma list of integers, got {args.cells!r}")
    import torch

    torch.set_num_threads(args.threads)
    os.makedirs(args.cache, exist_ok=True)
    columns = [profile_call(args.system, c, args.precision, args.cache) for c in cells]
    result = dict(system=args.system, precision=args.precision, threads=args.threads, torch=torch.__version__,
                  date=datetime.date.today().isoformat(), columns=[dict(atoms=n, seconds=s) for n, s in columns])
    print(markdown(result))
    save_results(result, args.out, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
