"""Peak memory and time of the DPA1 descriptor: graph path vs dense reference path (torch, CPU).

fcc Cu (a = 3.61 Å, jitter 0.05 Å), periodic, rcut 6 Å (78 neighbors per
atom), DPA1 with attn_layer 2, attn 128, neuron [25, 50, 100], axis_neuron 16,
tebd_dim 8, sel 120, float64. Three paths on the same graph:

* ``graph``        -- dpa1_graph on the compact graph (blocks of the largest degree, 78);
* ``graph-static`` -- dpa1_graph on the shape-static layout (blocks of sel = 120);
* ``dense``        -- dpa1_dense on padded (N, sel) slots (plain batched attention).

Two modes: ``forward`` (no autograd) and ``forward+grad`` (forward, then the
gradient of sum(descriptor) with respect to edge_vec / vec: what forces need).
Each (path, mode) runs in a fresh subprocess: inputs and model are built, the
kernel's peak-RSS counter is reset (``/proc/self/clear_refs``), one call runs,
and the peak RSS above the pre-call RSS is the call's peak memory. Time is the
median of further calls. Prints a Markdown table and writes JSON.

    python benchmarks/bench_dpa1_memory.py [--cells 6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PATHS = ("graph", "graph-static", "dense")
MODES = ("forward", "forward+grad")


def child(path: str, mode: str, cells: int, repeats: int) -> dict:
    import numpy as np
    import torch

    from _timing import median_time, rss_kib

    from graphdesc.descriptor import DPA1Config, cast_params, dense_inputs, dpa1_dense, dpa1_graph, init_params
    from graphdesc.examples import fcc_positions
    from graphdesc.graph import NeighborGraph, build_graph, to_static

    torch.set_num_threads(2)
    config = DPA1Config(rcut=6.0, rcut_smth=0.5, sel=120, ntypes=1, neuron=(25, 50, 100), axis_neuron=16,
                        tebd_dim=8, attn=128, attn_layer=2)
    params = cast_params(init_params(config, seed=0), torch.zeros(1, dtype=torch.float64))
    pos = fcc_positions(cells, jitter=0.05, seed=1)
    graph = build_graph(pos, config.rcut, cell=np.eye(3) * 3.61 * cells, pbc=True)
    graph = NeighborGraph(*(torch.from_numpy(np.asarray(a)) for a in
                            (graph.edge_index, graph.edge_vec, graph.edge_mask, graph.n_node)))
    n = len(pos)
    atype = torch.zeros(n, dtype=torch.int64)
    grad = mode == "forward+grad"
    if path == "dense":
        inputs = dense_inputs(graph, atype, config.sel)
        leaf = inputs["vec"]

        def run(v):
            return dpa1_dense(params, config, **{**inputs, "vec": v})[0]
    else:
        g = to_static(graph, config.sel) if path == "graph-static" else graph
        leaf = g.edge_vec

        def run(v):
            return dpa1_graph(params, config, g.replace(edge_vec=v), atype, static=path == "graph-static")[0]

    def call():
        if grad:
            v = leaf.detach().requires_grad_(True)
            (dv,) = torch.autograd.grad(run(v).sum(), v)
            return dv
        with torch.no_grad():
            return run(leaf)

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (peak RSS) to the current RSS
    before = rss_kib("VmRSS")
    call()
    peak = rss_kib("VmHWM") - before
    seconds = median_time(call, repeats, budget_s=60.0)
    return dict(path=path, mode=mode, atoms=n, edges_per_atom=int(graph.num_edges) / n,
                peak_mib=peak / 1024, peak_kib_per_atom=peak / n, ms_per_atom=1e3 * seconds / n)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=6, help="fcc cells per side: 4 * cells^3 atoms (6 -> 864)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "dpa1_memory.json"))
    parser.add_argument("--child", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.cells, args.repeats)))
        return 0
    import torch

    print(f"DPA1 fcc Cu {4 * args.cells**3} atoms, rcut 6, attn_layer 2, sel 120, float64, "
          f"torch {torch.__version__}, 2 threads, {platform.processor() or platform.machine()}\n")
    print("| path | mode | peak memory (MiB) | KiB/atom | time (ms/atom) |")
    print("|---|---|---:|---:|---:|")
    rows = []
    for mode in MODES:
        for path in PATHS:
            out = subprocess.run([sys.executable, __file__, "--child", path, mode, "--cells", str(args.cells),
                                  "--repeats", str(args.repeats)], capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"| {path} | {mode} | {row['peak_mib']:.0f} | {row['peak_kib_per_atom']:.0f} | "
                  f"{row['ms_per_atom']:.2f} |", flush=True)
    for mode in MODES:
        by = {r["path"]: r for r in rows if r["mode"] == mode}
        print(f"\n{mode}: dense / graph peak memory = {by['dense']['peak_mib'] / by['graph']['peak_mib']:.2f}x, "
              f"time = {by['dense']['ms_per_atom'] / by['graph']['ms_per_atom']:.2f}x")
    meta = dict(torch=torch.__version__, machine=platform.machine(), threads=2, cells=args.cells)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
