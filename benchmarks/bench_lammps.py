"""LAMMPS (``pair_style graphdesc``) against the ASE calculator on the same ``.pt2``, and 1 against 2 MPI ranks.

    python benchmarks/bench_lammps.py                     # fcc Cu 864 to 16,384 atoms
    python benchmarks/bench_lammps.py --cells 6 8 --drift # smaller sweep, plus the NVE drift of the demo model

Writes ``benchmarks/results/lammps_cpu.{json,md}``. Model and structures are
``bench_dpa1``'s (fcc Cu, DPA1 attn_layer 2, attn 128, fitting [240]*3, rcut 6,
fp64). Per size: ms per MD step (velocity Verlet, energy + forces + virial)
of LAMMPS on 1 and 2 MPI ranks (``Loop time`` of ``run STEPS`` after a
``run 0`` warm-up, one OpenMP/torch thread per rank) and of ASE's
``VelocityVerlet`` with :class:`graphdesc.ase.Calculator` on the same package
(2 torch threads, so both use the 2 cores), and atom-steps per second.

``--drift``: trains the demo model (``graphdesc train --demo``, 600 steps),
exports it, and runs 1,000 NVE steps of 1 fs on a 108-atom Cu/Al crystal at
300 K; reports the total-energy drift in eV/atom/ps (slope of a linear fit).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def lammps_ms_per_step(package, positions, cell, folder, ranks, steps) -> float:
    from ase import Atoms
    from ase.io import write

    from graphdesc.lammps import lmp_command, mpirun_command

    atoms = Atoms(f"Cu{len(positions)}", positions=positions, cell=cell, pbc=True)
    write(os.path.join(folder, "data.lmp"), atoms, format="lammps-data", atom_style="atomic")
    script = f"""units metal
atom_style atomic
boundary p p p
read_data data.lmp
mass 1 63.546
pair_style graphdesc {package}
pair_coeff * * X
velocity all create 300 1 dist gaussian
timestep 0.001
fix 1 all nve
thermo {steps}
run 0
run {steps}
"""
    with open(os.path.join(folder, "in.lmp"), "w") as f:
        f.write(script)
    cmd = lmp_command() + ["-in", "in.lmp", "-log", "log.lammps", "-screen", "none"]
    if ranks > 1:
        cmd = mpirun_command(ranks) + cmd
    run = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = open(os.path.join(folder, "log.lammps")).read()
    if run.returncode:
        raise RuntimeError(f"lmp failed: {[line for line in log.splitlines() if 'ERROR' in line]}")
    loop = re.findall(rf"Loop time of (\S+) on {ranks} procs for {steps} steps", log)
    return 1e3 * float(loop[-1]) / steps


def ase_ms_per_step(package, positions, cell, steps) -> float:
    import torch
    from ase import Atoms, units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from graphdesc.ase import Calculator

    torch.set_num_threads(2)
    atoms = Atoms(f"Cu{len(positions)}", positions=positions, cell=cell, pbc=True)
    atoms.calc = Calculator(package, type_map=["Cu"])
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=__import__("numpy").random.default_rng(1))
    dyn = VelocityVerlet(atoms, 1.0 * units.fs)
    dyn.run(1)  # warm-up
    t0 = time.perf_counter()
    dyn.run(steps)
    return 1e3 * (time.perf_counter() - t0) / steps


def drift(folder) -> dict:
    import numpy as np

    from graphdesc.cli import main as cli
    from graphdesc.lammps import lmp_command
    from graphdesc.lammps.demo import INPUT, thermo_rows, write_structure

    assert cli(["train", "--demo", "--steps", "600", "--lr", "3e-3", "--stop-lr", "1e-4", "--pref-v", "0.02", "1",
                "-o", os.path.join(folder, "train"), "--no-progress"]) == 0
    package = os.path.join(folder, "model.pt2")
    assert cli(["export", os.path.join(folder, "train", "best.npz"), "-o", package]) == 0
    write_structure(os.path.join(folder, "data.lmp"))
    with open(os.path.join(folder, "in.lammps"), "w") as f:
        f.write(INPUT.format(data="data.lmp", package=package, elements="Cu Al", temperature=300.0, thermo=10,
                             steps=1000))
    subprocess.run(lmp_command() + ["-in", "in.lammps", "-log", "log.lammps", "-screen", "none"], cwd=folder,
                   check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
    rows = thermo_rows(open(os.path.join(folder, "log.lammps")).read(), 6)
    slope = np.polyfit(rows[:, 0] * 1e-3, rows[:, 4] / 108, 1)[0]
    return {"atoms": 108, "steps": int(rows[-1, 0]), "dt_fs": 1.0, "temperature_K": 300,
            "drift_ev_per_atom_per_ps": float(slope),
            "max_etotal_deviation_ev_per_atom": float(np.ptp(rows[:, 4]) / 108)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, nargs="+", default=[6, 8, 10, 13, 16])
    parser.add_argument("--seconds", type=float, default=12.0, help="time budget per measurement (sets the steps)")
    parser.add_argument("--drift", action="store_true", help="also the 1,000-step NVE drift of the demo model")
    parser.add_argument("--cache", default=os.path.join(HERE, ".cache"))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "lammps_cpu"))
    args = parser.parse_args(argv)
    import torch
    from bench_dpa1 import make_model, make_package, system_positions

    from graphdesc.lammps import build

    build(progress=print)
    os.makedirs(args.cache, exist_ok=True)
    package = make_package(make_model("cu", "float64", args.cache), "cpu", args.cache)
    rows = []
    print(f"{'atoms':>6s} {'steps':>5s} {'lammps 1 rank':>14s} {'lammps 2 ranks':>15s} {'ase':>10s}  (ms/step)")
    for cells in args.cells:
        positions, cell = system_positions("cu", cells)
        n = len(positions)
        steps = max(2, int(args.seconds / (n * 1.5e-3)))
        with tempfile.TemporaryDirectory() as folder:
            one = lammps_ms_per_step(package, positions, cell, folder, 1, steps)
            two = lammps_ms_per_step(package, positions, cell, folder, 2, steps)
        ase = ase_ms_per_step(package, positions, cell, steps)
        row = {"atoms": n, "steps": steps, "lammps_1_ms": one, "lammps_2_ms": two, "ase_ms": ase,
               "atom_steps_per_s": {"lammps_1": 1e3 * n / one, "lammps_2": 1e3 * n / two, "ase": 1e3 * n / ase}}
        rows.append(row)
        print(f"{n:6d} {steps:5d} {one:14.1f} {two:15.1f} {ase:10.1f}", flush=True)
    result = {"meta": {"date": datetime.date.today().isoformat(), "torch": torch.__version__,
                       "load": os.getloadavg()}, "rows": rows}
    if args.drift:
        with tempfile.TemporaryDirectory() as folder:
            result["drift"] = drift(folder)
        print(f"NVE drift: {result['drift']}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write(markdown(result))
    print(f"wrote {args.out}.json, {args.out}.md")
    return 0


def markdown(result) -> str:
    lines = [f"LAMMPS vs ASE on one .pt2 (fcc Cu fp64, bench_dpa1's model), {result['meta']['date']}, "
             f"torch {result['meta']['torch']}; ms per MD step and atom-steps/s.", "",
             "| atoms | steps | LAMMPS 1 rank ms/step | LAMMPS 2 ranks ms/step | ASE ms/step "
             "| LAMMPS 1 rank atom-steps/s | LAMMPS 2 ranks atom-steps/s | ASE atom-steps/s | 2 ranks speed-up |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        a = r["atom_steps_per_s"]
        lines.append(f"| {r['atoms']} | {r['steps']} | {r['lammps_1_ms']:.0f} | {r['lammps_2_ms']:.0f} | "
                     f"{r['ase_ms']:.0f} | {a['lammps_1']:.0f} | {a['lammps_2']:.0f} | {a['ase']:.0f} | "
                     f"{r['lammps_1_ms'] / r['lammps_2_ms']:.2f}x |")
    if "drift" in result:
        d = result["drift"]
        lines += ["", f"NVE drift of the demo model: {d['drift_ev_per_atom_per_ps']:.2e} eV/atom/ps over "
                      f"{d['steps']} steps of {d['dt_fs']} fs ({d['atoms']} atoms, {d['temperature_K']} K); "
                      f"total-energy range {d['max_etotal_deviation_ev_per_atom']:.1e} eV/atom."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
