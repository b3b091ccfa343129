"""The DPA1 benchmark harness: its FLOP count, and a quick run whose paths must agree."""

import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the benchmark needs torch (graphdesc[torch])")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_dpa1.py")


def _bench():
    """bench_dpa1 as a module; its folder goes on sys.path, as when it runs as a script (it imports _timing)."""
    if os.path.dirname(SCRIPT) not in sys.path:
        sys.path.append(os.path.dirname(SCRIPT))
    spec = importlib.util.spec_from_file_location("bench_dpa1", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flop_count_matches_torch_counter(monkeypatch):
    """model_flops (3x the forward matmul count) against torch's FlopCounterMode on a real forward, with the
    masked attention layer: the model's own work. (The folded layer's logit matmul has two more columns and one
    more key, 0.3 % more FLOPs here: implementation overhead that the floor does not count.)"""
    from torch.utils.flop_counter import FlopCounterMode

    import graphdesc.descriptor.graph_path as gp

    monkeypatch.setattr(gp, "folded_phantoms", lambda config, width: None)
    from graphdesc.descriptor import DPA1Config
    from graphdesc.graph import build_graph
    from graphdesc.model import EnergyConfig
    from graphdesc.torch import EnergyModel

    bench = _bench()
    config = EnergyConfig(DPA1Config(rcut=6.0, rcut_smth=0.5, sel=120, ntypes=1, axis_neuron=16))
    positions, cell = bench.system_positions("cu", 2)  # uniform degree: blocks hold no padding rows
    graph = build_graph(torch.as_tensor(positions), 6.0, cell=torch.as_tensor(cell), pbc=True)
    atype = torch.zeros(len(positions), dtype=torch.int64)
    degrees = torch.bincount(graph.edge_index[1], minlength=len(positions)).tolist()
    assert set(degrees) == {78}
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        EnergyModel(config).atom_energy(graph, atype)
    measured = counter.get_total_flops()
    # the counter also sees the switch/gate outer products (8 deg^2 per atom, 0.2 %), ours does not
    assert bench.model_flops(config, degrees) / 3 == pytest.approx(measured, rel=5e-3)
    # by hand, per Cu atom (78 edges): embedding 78*2*(17*25 + 25*50 + 50*100) = 1,041,300; per attention
    # layer 78*2*100*384 + 2*2*78^2*128 + 78*2*128*100 = 11,102,208; contraction 62,400; readout 12,800;
    # fitting 2*(1608*240 + 2*240*240 + 240) = 1,002,720: 24,323,636 forward, x3 with forces
    assert bench.model_flops(config, degrees) / len(degrees) == pytest.approx(3 * 24_323_636, rel=1e-12)


def test_quick_run_agrees_across_paths(tmp_path):
    """graph, dense reference and DeePMD-kit's own torch model on the same weights: same energies and forces."""
    pytest.importorskip("deepmd", reason="deepmd-kit is a test dependency (graphdesc[test])")
    pytest.importorskip("matplotlib", reason="the plot needs matplotlib (graphdesc[bench])")
    out = tmp_path / "dpa1"
    cmd = [sys.executable, SCRIPT, "--quick", "--systems", "cu", "--precisions", "float64",
           "--paths", "dense,deepmd,graph", "--repeats", "1", "--budget", "0", "--out", str(out),
           "--cache", str(tmp_path / "cache")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "dpa1.json").read_text())
    assert result["skipped"] == []
    rows = {(r["path"], r["atoms"]): r for r in result["rows"]}
    assert sorted(rows) == sorted((p, a) for p in ("graph", "dense", "deepmd") for a in (32, 108))
    for (path, atoms), row in rows.items():
        assert row["neighbors_mean"] == 78.0 and row["neighbors_max"] == 78
        assert row["us_per_atom"] > 0 and row["peak_mib"] > 0 and row["calls"] >= 1
        assert row["force_max"] > 1e-4  # forces large enough for the comparison to mean something
        if path != "graph":
            assert row["de_per_atom_vs_graph"] < 1e-12, (path, atoms)
            assert row["df_max_vs_graph"] < 1e-12 * max(1.0, row["force_max"]), (path, atoms)
    summary, full = (tmp_path / "dpa1.md").read_text().split("All measurements:")
    summary, floor = summary.split("Against the matmul floor")
    assert summary.count("| cu | float64 |") == 2 and full.count("| cu | float64 |") == 6
    floor_rows = [line.split("|")[1:-1] for line in floor.splitlines() if line.startswith("| cu |")]
    assert [int(r[2]) for r in floor_rows] == [32, 108] and all(r[3].strip() == "graph" for r in floor_rows)
    for r in floor_rows:  # x floor = ms/atom over floor ms/atom, as printed
        assert abs(float(r[6]) - float(r[4]) / float(r[5])) < 0.02 * float(r[6]) + 0.01
    assert (tmp_path / "dpa1.png").stat().st_size > 10_000
    forces = list((tmp_path / "cache" / "forces").glob("*.npy"))
    assert len(forces) == 6 and all(np.isfinite(np.load(f)).all() for f in forces)


def test_against_runs_an_older_commit_beside_today(tmp_path):
    """--against REV: the graph path of a worktree of REV (labelled by its commit) runs right after today's, the
    child's graphdesc is checked to come from that worktree, and the ratio column compares the two."""
    pytest.importorskip("matplotlib", reason="the plot needs matplotlib (graphdesc[bench])")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    out = tmp_path / "fold"
    cmd = [sys.executable, SCRIPT, "--systems", "cu", "--precisions", "float64", "--paths", "graph", "--sizes", "2",
           "--against", "HEAD", "--repeats", "1", "--budget", "0", "--out", str(out), "--cache", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((tmp_path / "fold.json").read_text())["rows"]
    assert [r["path"] for r in rows] == ["graph", f"graph@{head}"]
    assert rows[1]["package"].startswith(os.path.join(ROOT, "benchmarks", ".cache", f"tree-{head}"))
    assert rows[0]["package"] == os.path.join(ROOT, "graphdesc")
    assert rows[1]["de_per_atom_vs_graph"] < 1e-12 and rows[1]["df_max_vs_graph"] < 1e-12
    assert f"graph@{head} / graph time" in (tmp_path / "fold.md").read_text()
    bad = subprocess.run([sys.executable, SCRIPT, "--against", "no-such-rev", "--sizes", "2", "--paths", "graph",
                          "--out", str(tmp_path / "bad"), "--cache", str(tmp_path)], capture_output=True, text=True)
    assert bad.returncode != 0 and "no-such-rev" in bad.stderr and "not a commit" in bad.stderr


def test_check_code_refuses_another_checkout(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        from _timing import check_code
    finally:
        sys.path.pop(0)
    check_code(str(tmp_path / "tree" / "graphdesc"), str(tmp_path / "tree"), "x")
    with pytest.raises(SystemExit, match="imported graphdesc from"):
        check_code(str(tmp_path / "treeish" / "graphdesc"), str(tmp_path / "tree"), "x")


def test_compiled_stage_benchmark_quick_run(tmp_path):
    """bench_compiled_stage on 32 atoms: the compiled block stages give eager's forces, and the table is written."""
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "bench_compiled_stage.py"), "--cells", "2",
           "--rounds", "1", "--cache", str(tmp_path), "--out", str(tmp_path / "compiled.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (point,) = json.loads((tmp_path / "compiled.json").read_text())["points"]
    assert [v["variant"] for v in point["variants"]] == ["eager", "compiled, static shapes",
                                                          "compiled, dynamic shapes"]
    assert all(v["df_max_vs_eager"] < 1e-12 and v["ms_per_atom"] > 0 for v in point["variants"])
    assert (tmp_path / "compiled.md").read_text().count("| cu | float64 | 32 |") == 3


def test_bad_arguments_name_the_flag():
    proc = subprocess.run([sys.executable, SCRIPT, "--paths", "graph,fast"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--paths" in proc.stderr and "fast" in proc.stderr


def test_profile_splits_the_call_into_op_groups(tmp_path):
    """The profile table's shares add up to the whole call, and matmuls are found by name."""
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "profile_dpa1.py"), "--cells", "2",
           "--cache", str(tmp_path), "--out", str(tmp_path / "profile.json")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout.split("| op group |")[1].split("\n\n")[0]  # the op-group table, not the per-call one
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| ") and "%" in line]
    share = {name.strip(): float(cell.split("%")[0]) for name, cell in rows}
    assert 98 <= sum(share.values()) <= 102, share  # rounded to whole percents
    assert share["matmul (mm, bmm)"] > 20 and share["elementwise"] > 5, share
    assert (tmp_path / "profile.md").read_text() in proc.stdout  # the table written is the table printed
    # the products' FLOPs the profiler counted: more than the forward's (a third of bench_dpa1's count of the
    # energy+force call, one forward and two backward products per forward one) and less than that count: the
    # force needs no weight gradients, and fcc Cu's uniform degree leaves the blocks no padding rows
    import pickle

    from graphdesc.graph import build_graph

    bench = _bench()
    result = json.loads((tmp_path / "profile.json").read_text())
    (column,) = result["columns"]
    with open(bench.make_model("cu", "float64", str(tmp_path)), "rb") as f:
        config, _ = pickle.load(f)["graphdesc"]
    positions, cell = bench.system_positions("cu", 2)
    graph = build_graph(positions, bench.RCUT, cell=cell, pbc=True)
    counted = bench.model_flops(config, np.bincount(graph.dst, minlength=len(positions)).tolist()) / 1e9
    assert counted / 3 < column["matmul_gflop"] < counted, (column["matmul_gflop"], counted)
    assert 0 < result["gemm_gflops"] and "| GFLOP/s in the call |" in proc.stdout


def test_profile_rejects_bad_cells():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "profile_dpa1.py"), "--cells", "2,x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--cells" in proc.stderr and "2,x" in proc.stderr


def test_ghost_benchmark_quick_run(tmp_path):
    """bench_ghosts on 32 atoms: its three variants run, periodic and ghost energies agree (it exits 1 if not),
    the ghosts-as-atoms variant gives another energy, and the table and JSON are written."""
    out = tmp_path / "ghosts"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_ghosts.py"), "--cells", "2",
                          "--repeats", "1", "--paths", "eager", "--cache", str(tmp_path / "cache"), "--out", str(out)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads((tmp_path / "ghosts.json").read_text())["rows"]
    assert len(rows) == 1 and rows[0]["atoms"] == 32 and rows[0]["ghosts"] > 32
    assert rows[0]["energy_diff_ghosts"] < 1e-12 < rows[0]["energy_diff_edgeless"]
    assert "| eager | 32 |" in (tmp_path / "ghosts.md").read_text()


def test_ddp_training_benchmark_quick_run(tmp_path):
    """bench_train_ddp with tiny runs: the three configurations run (1 process on every core, on one core,
    2 processes) and the table and JSON are written with their step times."""
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_train_ddp.py"), "--steps", "4",
                          "--repeats", "1", "--batch-sizes", "2", "--frames", "12", "--into", str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    table = json.loads((tmp_path / "train_ddp.json").read_text())["table"]
    assert [(r["nproc"], r["batch"]) for r in table] == [(1, 2), (1, 2), (2, 2)]
    assert all(r["step_ms"] > 0 for r in table) and table[0]["speedup_vs_1proc_all_cores"] == 1.0
    assert "| 2 (64) | 2 x" in (tmp_path / "train_ddp.md").read_text()


def test_deepmd_training_comparison_quick_run(tmp_path):
    """bench_train_deepmd for 4 steps: graphdesc and DeePMD-kit's own trainer both train the one input.json and
    their learning curves are tabulated side by side."""
    pytest.importorskip("deepmd", reason="deepmd-kit is in graphdesc[bench]")
    pytest.importorskip("matplotlib", reason="matplotlib is in graphdesc[bench]")
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_train_deepmd.py"), "--steps", "4",
                          "--seeds", "1", "--disp", "2", "--into", str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads((tmp_path / "train_deepmd.json").read_text())
    assert [row["step"] for row in result["table"]] == [2, 4]
    for code in ("graphdesc", "deepmd"):
        assert all(np.isfinite(result["runs"][code][0][c]).all() for c in ("energy", "force", "virial"))
    assert (tmp_path / "train_deepmd.png").stat().st_size > 0


def test_shared_cpu_benchmark_quick_run(tmp_path):
    """bench_shared_cpu on 32 atoms, graph eager, no competitor and one light one: a competitor process really
    runs beside the timed call (and is gone afterwards), and the slowdown table is written from the JSON."""
    out = tmp_path / "shared.json"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_shared_cpu.py"), "--cells", "2",
                          "--paths", "graph@1", "--levels", "none,light", "--rounds", "1", "--repeats", "1",
                          "--budget", "0", "--cache", str(tmp_path / "cache"), "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {(r["path"], r["level"]) for r in result["rows"]} == {("graph@1", "none"), ("graph@1", "light")}
    table = (tmp_path / "shared.md").read_text()
    assert "| graph@1 |" in table and "light slowdown" in table
    cpu = result["meta"]["competitor_cpu_s"]
    assert cpu["none"] == 0 and cpu["light"] > 0.5, cpu  # the competitor computed beside the timed call
    left = []  # competitors still alive after the benchmark ended (whole command lines, from /proc)
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"torch.tanh(a @ a)" in cmdline.read_bytes():
                left.append(cmdline.parent.name)
        except OSError:  # a process that ended meanwhile
            pass
    assert left == [], f"competitor processes left running: {left}"


def test_shared_cpu_rejects_unknown_levels():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_shared_cpu.py"), "--levels",
                           "none,extreme"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--levels" in proc.stderr and "extreme" in proc.stderr


def test_jit_memory_benchmark_quick_run(tmp_path):
    """bench_jit_memory on 32 atoms: every variant compiles, the chunked pair path plans less scratch than one
    (P, attn) array and far less than the whole one, and its forces equal the blocks'."""
    pytest.importorskip("jax", reason="bench_jit_memory measures jax's jitted programs")
    out = tmp_path / "jm.json"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_jit_memory.py"), "--cells", "2",
                          "--rounds", "1", "--cache", str(tmp_path / "cache"), "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    from graphdesc.safe_io import load_json

    (point,) = load_json(out)["points"]
    plan = {v["variant"]: v for v in point["variants"]}
    assert plan["pairs, chunks"]["temp_mib"] < point["pair_rows_mib"] < plan["pairs, whole"]["temp_mib"]
    assert plan["pairs, chunks"]["df_max_vs_blocks"] < 1e-10
    assert (tmp_path / "jm.md").read_text().count("| cu | 32 |") == 4


def test_train_memory_benchmark_quick_run(tmp_path):
    """bench_train_memory on 4 frames: both layouts train a step in a child process and the table is written."""
    out = tmp_path / "tm.json"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_train_memory.py"), "--frames", "4",
                          "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    from graphdesc.safe_io import load_json

    rows = load_json(out)["rows"]
    assert [r["attention"] for r in rows] == ["blocks", "pairs"] and all(r["peak_mib"] > 0 for r in rows)
    assert (tmp_path / "tm.md").exists()


def test_allocator_benchmark_quick_run(tmp_path):
    """bench_allocator on 32 atoms, one round: each policy's child really runs under it (glibc's defaults fault
    more pages per call than graphdesc's policy, which keeps freed memory), and the table is written."""
    out = tmp_path / "allocator.json"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_allocator.py"), "--cells", "2",
                          "--paths", "graph", "--rounds", "1", "--repeats", "2", "--budget", "0",
                          "--cache", str(tmp_path / "cache"), "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    assert row["atoms"] == 32 and row["graphdesc_ms"] > 0 and row["glibc_ms"] > 0
    assert row["glibc_faults"] > row["graphdesc_faults"], row
    assert "| graph | 32 |" in (tmp_path / "allocator.md").read_text()


@pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                    reason="MKL's CPU check is answered on x86-64 Linux only")
def test_mkl_benchmark_quick_run(tmp_path):
    """bench_mkl on 32 atoms, one round: each setting's children run the kernels they are named for (the products'
    and the energy+force children say so), and both tables are written."""
    out = tmp_path / "mkl.json"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_mkl.py"), "--cells", "2",
                          "--paths", "graph", "--rounds", "1", "--repeats", "2", "--budget", "0",
                          "--cache", str(tmp_path / "cache"), "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    said = [result["kernels"]["intel"][0]["mkl"], row["runs"]["intel"][0]["mkl"],
            result["kernels"]["mkl"][0]["mkl"], row["runs"]["mkl"][0]["mkl"]]
    assert [s.startswith("MKL's Intel kernels") for s in said] == [True, True, False, False], said
    assert row["atoms"] == 32 and row["intel_ms"] > 0 and row["mkl_ms"] > 0
    assert all(k["intel"] > 0 and k["mkl"] > 0 for k in result["products"].values())
    md = (tmp_path / "mkl.md").read_text()
    assert "| graph | 32 |" in md and "| mm 2048^3 |" in md


def test_attention_node_benchmark_quick_run(tmp_path):
    """bench_attention_node on 32 atoms: the node and the formula give the same forces, and the table is written."""
    out = tmp_path / "node.json"
    run = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_attention_node.py"), "--cells", "2",
                          "--precisions", "float64", "--rounds", "2", "--cache", str(tmp_path / "cache"),
                          "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    (point,) = json.loads(out.read_text())["points"]
    assert point["atoms"] == 32 and point["df_max"] < 1e-12 and point["node_ms"] > 0
    assert "| float64 | 32 |" in (tmp_path / "node.md").read_text()
