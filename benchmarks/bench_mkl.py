"""MKL's Intel kernels against MKL's own choice on this CPU: matrix products and energy+force, side by side.

On a CPU that is not Intel's, MKL runs slower kernels unless graphdesc answers its CPU check
(:mod:`graphdesc.mkl`). Each point runs in a fresh process under each setting (``GRAPHDESC_MKL_INTEL=1``:
MKL's Intel kernels; ``=0``: MKL's own choice), back to back, the order alternating from round to round.
Two tables: the rate of the matrix products of a DPA1 call (the batched ``(52, 78, 78) @ (52, 78, 128)``
of the attention, a ``(4056, 100) @ (100, 128)`` projection, and the 2048^3 product behind the floor
of ``bench_dpa1.py``), and the energy+force time per atom of each path (``bench_dpa1.py``'s child), with the
median of the rounds' paired ratios; with ``--lammps``, a third: LAMMPS MD steps on ``bench_dpa1``'s ``.pt2``
package (``pair_style graphdesc``, ``bench_lammps.py``'s run, MPI ranks of one thread), started as
``graphdesc.lammps.lmp_command()`` starts it under each setting, its log saying which kernels MKL runs::

    python benchmarks/bench_mkl.py                              # Cu fp64, 32-864 atoms, graph and deepmd
    python benchmarks/bench_mkl.py --precision float32 --cells 2,4 --rounds 5
    python benchmarks/bench_mkl.py --paths "" --lammps 4,6 --out benchmarks/results/mkl_lammps.json
    python benchmarks/bench_mkl.py --report benchmarks/results/mkl.json   # re-render the .md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _timing import rerender, run_header, save_results  # noqa: E402
from bench_allocator import ab_options, ab_points, alternating, paired_medians, paired_rounds  # noqa: E402

from graphdesc.mkl import KNOB  # noqa: E402

#: setting -> the variable of the child's environment
SETTINGS = {"intel": "1", "mkl": "0"}
#: the products timed: name -> (batch or None, m, k, n)
PRODUCTS = {"bmm (52,78,78)@(52,78,128)": (52, 78, 78, 128), "mm (4056,100)@(100,128)": (None, 4056, 100, 128),
            "mm 2048^3": (None, 2048, 2048, 2048)}


def kernels_child(precision: str, threads: int) -> dict:
    """GFLOP/s of each of :data:`PRODUCTS` in this process (median of 30 calls, 5 for the large one)."""
    import graphdesc  # noqa: F401  (before torch: it sets MKL's kernels as the environment says)
    import torch

    from _timing import median_time

    torch.set_num_threads(threads)
    dtype, rates = getattr(torch, precision), {}
    for name, (b, m, k, n) in PRODUCTS.items():
        lead = (b,) if b else ()
        x, y = torch.randn(*lead, m, k, dtype=dtype), torch.randn(*lead, k, n, dtype=dtype)
        seconds = median_time(lambda: x @ y, repeats=5 if m >= 2048 else 30)
        rates[name] = 2 * (b or 1) * m * k * n / seconds / 1e9
    return dict(rates=rates, mkl=graphdesc.mkl.policy())


def _env(setting: str) -> dict:
    return {**os.environ, KNOB: SETTINGS[setting]}


def kernel_rounds(args) -> dict:
    """``{setting: [rates per round]}`` of :func:`kernels_child`, alternating as :func:`paired_rounds` does."""
    runs = {s: [] for s in SETTINGS}
    for r in range(args.rounds):
        for s in alternating(SETTINGS, r):
            cmd = [sys.executable, __file__, "--kernels-child", "--precision", args.precision,
                   "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(s))
            if proc.returncode != 0:
                raise SystemExit(f"products under {s}: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
            runs[s].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} products {s:6} " + ", ".join(f"{k} {v:.1f}" for k, v in runs[s][-1]["rates"].items()),
                  flush=True)
    return runs


@contextlib.contextmanager
def _setting(setting: str):
    """``os.environ`` under ``setting`` within (``lmp_command()`` reads it, and ``lmp`` inherits it)."""
    before = os.environ.get(KNOB)
    os.environ[KNOB] = SETTINGS[setting]
    try:
        yield
    finally:
        if before is None:
            del os.environ[KNOB]
        else:
            os.environ[KNOB] = before


def lammps_rounds(args, cells: list, package: str) -> dict:
    """``{cells: {setting: [{atoms, ms, said}] per round}}``: ms per LAMMPS MD step under each setting, alternating
    as :func:`paired_rounds` does; ``said``: the pair style's log line on MKL's kernels."""
    from bench_dpa1 import system_positions
    from bench_lammps import lammps_ms_per_step

    runs = {c: {s: [] for s in SETTINGS} for c in cells}
    for r in range(args.rounds):
        for c in cells:
            positions, cell = system_positions(args.system, c)
            for s in alternating(SETTINGS, r):
                with tempfile.TemporaryDirectory() as folder, _setting(s):
                    ms = lammps_ms_per_step(package, positions, cell, folder, args.lammps_ranks, args.lammps_steps)
                    said = re.findall(r"MKL: (.*)", open(os.path.join(folder, "log.lammps")).read())
                row = dict(atoms=len(positions), ms=ms, said=said[0].strip() if said else "no MKL line")
                runs[c][s].append(row)
                print(f"round {r + 1} lammps {row['atoms']:5} atoms {s:6} {ms:9.1f} ms/step  MKL: {row['said']}",
                      flush=True)
    return runs


def markdown(result: dict) -> str:
    lines = [f"`{result['command']}`, {result['system']} {result['precision']}, {result['threads']} threads, "
             f"torch {result['torch']}, {result['cpu']}, {result['date']} at {result['code']}, load {result['load']} "
             f"at the start, {result['rounds']} rounds (medians over rounds). `intel`: {KNOB}=1, "
             f"\"{result['said']['intel']}\"; `mkl`: {KNOB}=0, \"{result['said']['mkl']}\".", "",
             "| product | intel GFLOP/s | mkl GFLOP/s | intel / mkl rate |", "|---|---:|---:|---:|"]
    for name, k in result["products"].items():
        lines.append(f"| {name} | {k['intel']:.1f} | {k['mkl']:.1f} | {k['ratio']:.2f}x |")
    if result["rows"]:
        lines += ["", "| path | atoms | intel ms/atom | mkl ms/atom | mkl / intel time |", "|---|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['path']} | {r['atoms']} | {r['intel_ms']:.3f} | {r['mkl_ms']:.3f} | {r['ratio']:.2f}x |")
    if result.get("lammps"):
        lines += ["", "| LAMMPS | atoms | steps | intel ms/step | mkl ms/step | mkl / intel time | log, intel "
                      "| log, mkl |", "|---|---:|---:|---:|---:|---:|---|---|"]
        for r in result["lammps"]:
            lines.append(f"| {r['ranks']} MPI ranks | {r['atoms']} | {r['steps']} | {r['intel_ms']:.0f} | "
                         f"{r['mkl_ms']:.0f} | {r['ratio']:.2f}x | {r['said']['intel']} | {r['said']['mkl']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ab_options(parser, "mkl.json")
    parser.add_argument("--lammps", default="", metavar="CELLS", help="also LAMMPS MD steps at these sizes (cu)")
    parser.add_argument("--lammps-ranks", type=int, default=2)
    parser.add_argument("--lammps-steps", type=int, default=5)
    parser.add_argument("--kernels-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.kernels_child:
        print(json.dumps(kernels_child(args.precision, args.threads)))
        return 0
    if args.report:
        rerender(args.report, markdown)
        return 0
    import torch
    from bench_dpa1 import _device_name

    header = run_header("bench_mkl.py", argv, args.threads)
    cells, paths, model_path, packages = ab_points(parser, args)
    lammps_cells, package = [], None
    if args.lammps:
        from _timing import parse_cells
        from bench_dpa1 import make_package

        from graphdesc.lammps import build

        if args.system != "cu":
            parser.error("--lammps: the LAMMPS run is fcc Cu's (bench_lammps.py)")
        lammps_cells = parse_cells(parser, args.lammps)
        build(progress=print)
        package = make_package(model_path, "cpu", args.cache)
    kernels = kernel_rounds(args)
    products = {}
    for name in PRODUCTS:
        mkl, intel, ratio = paired_medians(kernels["mkl"], kernels["intel"], lambda k: k["rates"][name])
        products[name] = dict(intel=intel, mkl=mkl, ratio=ratio)
    runs = paired_rounds(args, {s: _env(s) for s in SETTINGS}, paths, cells, model_path, packages)
    rows = []
    for p in paths:
        for c in cells:
            fast, slow = runs[(p, c, "intel")], runs[(p, c, "mkl")]
            intel, mkl, ratio = paired_medians(fast, slow, lambda x: x["us_per_atom"] / 1e3)
            rows.append(dict(path=p, atoms=fast[0]["atoms"], intel_ms=intel, mkl_ms=mkl, ratio=ratio,
                             runs={"intel": fast, "mkl": slow}))
    lammps = []
    for c, by in (lammps_rounds(args, lammps_cells, package) if lammps_cells else {}).items():
        intel, mkl, ratio = paired_medians(by["intel"], by["mkl"], lambda x: x["ms"])
        lammps.append(dict(ranks=args.lammps_ranks, steps=args.lammps_steps, atoms=by["intel"][0]["atoms"],
                           intel_ms=intel, mkl_ms=mkl, ratio=ratio, said={s: by[s][0]["said"] for s in SETTINGS},
                           runs=by))
    said, cpu = {s: kernels[s][0]["mkl"] for s in SETTINGS}, _device_name(torch.device("cpu"))
    result = dict(header, system=args.system, precision=args.precision, rounds=args.rounds, cpu=cpu, said=said,
                  products=products, kernels=kernels, rows=rows, lammps=lammps)
    print("\n" + markdown(result))
    save_results(result, args.out, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
