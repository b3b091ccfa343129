"""``graphdesc lammps demo``: the demo model, exported, running MD in LAMMPS, in one command."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np

__all__ = ["write_structure", "INPUT", "run_demo", "thermo_rows"]

INPUT = """# pair_style graphdesc: NVE molecular dynamics of a Cu/Al crystal with a graphdesc .pt2 package
units        metal
atom_style   atomic
boundary     p p p
newton       on                       # required: ghost forces go back to their owners
read_data    {data}
mass         1 63.546
mass         2 26.982
pair_style   graphdesc {package}
pair_coeff   * * {elements}           # one element per LAMMPS type, matched to the model's type_map
velocity     all create {temperature} 12345 dist gaussian
timestep     0.001                    # ps
fix          nve all nve
thermo       {thermo}
thermo_style custom step temp pe ke etotal press
thermo_modify format float %.10f
run          {steps}
"""


def write_structure(path, *, cells: int = 3, al_fraction: float = 0.25, seed: int = 0) -> list:
    """A ``cells^3`` fcc Cu crystal with a fraction of Al as a LAMMPS data file; returns the element order."""
    from ase.build import bulk
    from ase.io import write

    atoms = bulk("Cu", "fcc", a=3.63, cubic=True).repeat((cells,) * 3)
    rng = np.random.default_rng(seed)
    symbols = np.array(atoms.get_chemical_symbols())
    symbols[rng.permutation(len(atoms))[: int(al_fraction * len(atoms))]] = "Al"
    atoms.set_chemical_symbols(symbols.tolist())
    write(path, atoms, format="lammps-data", specorder=["Cu", "Al"], atom_style="atomic")
    return ["Cu", "Al"]


def thermo_rows(log: str, columns: int) -> np.ndarray:
    """The numeric thermo rows (``columns`` numbers each, an integer step first) of a LAMMPS log."""
    rows = []
    for line in log.splitlines():
        parts = line.split()
        if len(parts) == columns and re.fullmatch(r"-?\d+", parts[0]):
            try:
                rows.append([float(v) for v in parts])
            except ValueError:
                continue
    return np.array(rows)


def train_argv(output, steps: int) -> list:
    """The ``graphdesc`` arguments with which the demo trains its model: ``steps`` steps into ``output``."""
    return ["train", "--demo", "--steps", str(steps), "--lr", "3e-3", "--stop-lr", "1e-4", "--pref-v", "0.02", "1",
            "-o", str(output), "--no-progress"]


def run_demo(output, *, model=None, steps: int = 100, train_steps: int = 300, ranks: int = 1,
             temperature: float = 600.0) -> int:
    """Train (or load) a model, export it, build the plugin and run ``steps`` NVE steps; print thermo and drift."""
    from ..cli import main as cli
    from . import build, lmp_command, mpirun_command

    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    if model is None:
        print(f"training the EMT demo model ({train_steps} steps) ...", flush=True)
        status = cli(train_argv(out / "train", train_steps))
        if status:
            return status
        model = str(out / "train" / "best.npz")
    package = Path(model)
    if package.suffix != ".pt2":
        package = out / "model.pt2"
        if cli(["export", str(model), "-o", str(package)]):
            return 1
    build(progress=lambda msg: print(msg, flush=True))
    elements = write_structure(out / "data.lmp")
    (out / "in.lammps").write_text(INPUT.format(data="data.lmp", package=package.resolve(), elements=" ".join(elements),
                                                temperature=temperature, thermo=max(1, steps // 10), steps=steps))
    cmd = lmp_command() + ["-in", "in.lammps", "-log", "log.lammps", "-screen", "none"]
    if ranks > 1:
        cmd = mpirun_command(ranks) + cmd
    print(f"running LAMMPS: {' '.join(cmd)}  (in {out}/)", flush=True)
    run = subprocess.run(cmd, cwd=out, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", **os.environ})
    log = (out / "log.lammps").read_text() if (out / "log.lammps").exists() else ""
    if run.returncode != 0:
        errors = [line for line in (log + run.stdout).splitlines() if "ERROR" in line]
        print("LAMMPS failed: " + ("\n".join(errors) or run.stderr[-2000:]))
        return 1
    rows = thermo_rows(log, 6)
    print("\n  step     temp K        pe eV        ke eV     etotal eV      press bar")
    for r in rows:
        print(f"{int(r[0]):6d} {r[1]:10.2f} {r[2]:12.5f} {r[3]:12.5f} {r[4]:13.6f} {r[5]:14.2f}")
    natoms = int(re.search(r"^\s*(\d+) atoms", log, re.M).group(1))
    span_ps = (rows[-1, 0] - rows[0, 0]) * 0.001
    drift = np.polyfit(rows[:, 0] * 0.001, rows[:, 4] / natoms, 1)[0] if len(rows) > 2 else float("nan")
    print(f"\n{natoms} atoms, {int(rows[-1, 0])} steps ({span_ps:g} ps) on {ranks} MPI rank(s); "
          f"total-energy drift {drift:.2e} eV/atom/ps\nfiles: {out}/in.lammps, {out}/data.lmp, {out}/log.lammps")
    return 0
