"""Neighbor-graph build time per atom: graphdesc.graph.build_graph vs ASE's neighbor_list.

fcc Cu (a = 3.61 Å, thermal jitter 0.05 Å), periodic cubic box, rcut 6 Å
(78 neighbors per atom), from ~1k to ~100k atoms. graphdesc's time is split
into the pair search (vesin) and the rest (center-major nearest-first sort,
edge vectors). ASE runs up to --ase-max atoms (its memory grows fast).
Medians of repeated runs after a warm-up. Prints a Markdown table, writes JSON and the table as ``.md``.

    python benchmarks/bench_graph_build.py [--quick] [--ase-max 110000]
    python benchmarks/bench_graph_build.py --report benchmarks/results/graph_build.json   # re-render the .md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys

import numpy as np
import vesin
from ase import Atoms
from ase.neighborlist import neighbor_list

from _timing import median_time, rerender, save_results

from graphdesc.examples import fcc_positions
from graphdesc.graph import build_graph

HERE = os.path.dirname(os.path.abspath(__file__))
CUTOFF = 6.0


HEAD = ("| atoms | edges/atom | build_graph (µs/atom) | of which vesin search | ASE neighbor_list (µs/atom) "
        "| ASE / graphdesc |\n|---:|---:|---:|---:|---:|---:|")


def row_line(row: dict) -> str:
    ase = row["ase_us_per_atom"]
    ase_cells = ("skipped", "") if ase is None else (f"{ase:.1f}", f"{ase / row['build_us_per_atom']:.1f}x")
    return (f"| {row['atoms']} | {row['edges_per_atom']:.1f} | {row['build_us_per_atom']:.1f} | "
            f"{row['search_us_per_atom']:.1f} | {ase_cells[0]} | {ase_cells[1]} |")


def markdown(result: dict) -> str:
    meta = result["meta"]
    return "\n".join([f"`python benchmarks/bench_graph_build.py`, fcc Cu, rcut {meta['cutoff']} Å, periodic, numpy "
                      f"{meta['numpy']}, vesin {meta['vesin']}, {meta.get('date', 'undated')}; medians.", "",
                      HEAD, *map(row_line, result["rows"])]) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="up to ~4k atoms")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ase-max", type=int, default=110_000, help="largest system given to ASE")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "graph_build.json"))
    parser.add_argument("--report", metavar="JSON", help="only re-render the .md of an earlier run")
    args = parser.parse_args(argv)
    if args.report:
        return rerender(args.report, markdown)
    cells = [7, 10] if args.quick else [7, 10, 16, 22, 30]
    print(f"fcc Cu, rcut {CUTOFF} A, numpy {np.__version__}, vesin {vesin.__version__}, {platform.machine()}\n")
    print(HEAD)
    rows = []
    for nc in cells:
        pos = fcc_positions(nc, jitter=0.05, seed=nc)
        cell = np.eye(3) * 3.61 * nc
        n = len(pos)
        graph = build_graph(pos, CUTOFF, cell=cell, pbc=True)
        t_build = median_time(lambda: build_graph(pos, CUTOFF, cell=cell, pbc=True), args.repeats, 30.0)
        search = vesin.NeighborList(cutoff=CUTOFF, full_list=True)
        t_search = median_time(lambda: search.compute(pos, cell, True, "ijS"),
                               args.repeats)
        t_ase = None
        if n <= args.ase_max:
            atoms = Atoms(f"Cu{n}", positions=pos, cell=cell, pbc=True)
            t_ase = median_time(lambda: neighbor_list("ijS", atoms, CUTOFF), max(3, args.repeats // 2))
        row = dict(atoms=n, edges_per_atom=graph.num_edges / n, build_us_per_atom=1e6 * t_build / n,
                   search_us_per_atom=1e6 * t_search / n, ase_us_per_atom=None if t_ase is None else 1e6 * t_ase / n)
        rows.append(row)
        print(row_line(row), flush=True)
    meta = {"numpy": np.__version__, "vesin": vesin.__version__, "python": sys.version.split()[0],
            "machine": platform.machine(), "cutoff": CUTOFF, "date": datetime.date.today().isoformat()}
    save_results({"meta": meta, "rows": rows}, args.out, markdown)

if __name__ == "__main__":
    main()
