"""Neighbor-graph build time per atom: graphdesc.graph.build_graph vs ASE's neighbor_list.

fcc Cu (a = 3.61 Å, thermal jitter 0.05 Å), periodic cubic box, rcut 6 Å
(78 neighbors per atom), from ~1k to ~100k atoms. graphdesc's time is split
into the pair search (vesin) and the rest (center-major nearest-first sort,
edge vectors). ASE runs up to --ase-max atoms (its memory grows fast).
Medians of repeated runs after a warm-up. Prints a Markdown table, writes JSON.

    python benchmarks/bench_graph_build.py [--quick] [--ase-max 110000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import numpy as np
import vesin
from ase import Atoms
from ase.neighborlist import neighbor_list

from _timing import median_time

from graphdesc.examples import fcc_positions
from graphdesc.graph import build_graph

HERE = os.path.dirname(os.path.abspath(__file__))
CUTOFF = 6.0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="up to ~4k atoms")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ase-max", type=int, default=110_000, help="largest system given to ASE")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "graph_build.json"))
    args = parser.parse_args(argv)
    cells = [7, 10] if args.quick else [7, 10, 16, 22, 30]
    print(f"fcc Cu, rcut {CUTOFF} A, numpy {np.__version__}, vesin {vesin.__version__}, {platform.machine()}\n")
    print("| atoms | edges/atom | build_graph (us/atom) | of which vesin search | ASE neighbor_list (us/atom) | ASE / graphdesc |")
    print("|---:|---:|---:|---:|---:|---:|")
    rows = []
    for nc in cells:
        pos = fcc_positions(nc, jitter=0.05, seed=nc)
        cell = np.eye(3) * 3.61 * nc
        n = len(pos)
        graph = build_graph(pos, CUTOFF, cell=cell, pbc=True)
        t_build = median_time(lambda: build_graph(pos, CUTOFF, cell=cell, pbc=True), args.repeats, 30.0)
        t_search = median_time(lambda: vesin.NeighborList(cutoff=CUTOFF, full_list=True).compute(pos, cell, True, "ijS"),
                               args.repeats)
        t_ase = None
        if n <= args.ase_max:
            atoms = Atoms(f"Cu{n}", positions=pos, cell=cell, pbc=True)
            t_ase = median_time(lambda: neighbor_list("ijS", atoms, CUTOFF), max(3, args.repeats // 2))
        row = dict(atoms=n, edges_per_atom=graph.num_edges / n, build_us_per_atom=1e6 * t_build / n,
                   search_us_per_atom=1e6 * t_search / n, ase_us_per_atom=None if t_ase is None else 1e6 * t_ase / n)
        rows.append(row)
        ase = "skipped" if t_ase is None else f"{row['ase_us_per_atom']:.1f}"
        ratio = "" if t_ase is None else f"{t_ase / t_build:.1f}x"
        print(f"| {n} | {row['edges_per_atom']:.1f} | {row['build_us_per_atom']:.1f} | {row['search_us_per_atom']:.1f} | "
              f"{ase} | {ratio} |", flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    meta = {"numpy": np.__version__, "vesin": vesin.__version__, "python": sys.version.split()[0],
            "machine": platform.machine(), "cutoff": CUTOFF}
    with open(args.out, "w") as fh:
        json.dump({"meta": meta, "rows": rows}, fh, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
