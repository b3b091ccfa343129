"""``.pt2`` packages: CLI export, loader, parity with eager (float64 and float32), C++ loader, ASE, CLI eval.

Each package compiles in about a minute on the 2-core CI machine, so the
float64 one (``package64``, through the CLI) is a session fixture in
``conftest.py`` that other modules share, and the float32 one is module-scoped.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import to_numpy
from test_model import energy_config, make_model_params

from graphdesc.cli import main
from graphdesc.graph import batch_graphs, build_graph

torch = pytest.importorskip("torch")
from graphdesc.export import OUTPUTS, include_dir, load_package  # noqa: E402
from graphdesc.torch import EnergyModel  # noqa: E402

TOL64 = 1e-10  # the bound for package vs eager in float64
RCUT = 4.0


@pytest.fixture(scope="module")
def model32_compat():
    """A float32 model with DeePMD-kit's padding-row semantics (as imported DeePMD-kit models have)."""
    config = energy_config(deepmd_compat=True)
    return EnergyModel(config, make_model_params(config, 12)).to(torch.float32).eval()


@pytest.fixture(scope="module")
def package32(model32_compat, tmp_path_factory):
    """``model32_compat`` exported with one-width blocks (``package64``, exported with the default
    ``"auto"`` on CPU, has degree buckets; ``package64_pairs`` the pair path)."""
    from graphdesc.export import export_package

    model = copy.deepcopy(model32_compat)
    model.attention = "blocks"
    path = export_package(model, tmp_path_factory.mktemp("pt2") / "m32.pt2")
    return load_package(path)


@pytest.fixture(scope="module")
def package64_pairs(model64, tmp_path_factory):
    """``model64`` exported with the pair path (``attention="pairs"``), loaded."""
    from graphdesc.export import export_package

    model = copy.deepcopy(model64[0])
    model.attention = "pairs"
    return load_package(export_package(model, tmp_path_factory.mktemp("pt2") / "pairs.pt2"))


def random_frame(n, seed, *, density=1 / 11.8, pbc=True):
    rng = np.random.default_rng(seed)
    side = (n / density) ** (1 / 3)
    cell = np.diag([side, side * 1.05, side * 0.95]) + rng.uniform(-0.3, 0.3, (3, 3)) * (1 - np.eye(3))
    return rng.uniform(0, 1, (n, 3)) @ cell, cell if pbc else None, rng.integers(0, 2, n)


def graph_of(frames, dtype=torch.float64):
    def cell(c):
        return None if c is None else torch.as_tensor(c, dtype=dtype)

    graphs = [build_graph(torch.as_tensor(p, dtype=dtype), RCUT, cell=cell(c), pbc=c is not None) for p, c, _ in frames]
    graph = graphs[0] if len(graphs) == 1 else batch_graphs(graphs)
    return graph, torch.as_tensor(np.concatenate([t for _, _, t in frames]))


SYSTEMS = {
    "single_atom_no_edges": lambda: [(np.zeros((1, 3)), None, np.array([1]))],
    "small_periodic": lambda: [random_frame(9, 1)],
    "ragged_two_frames": lambda: [random_frame(17, 2), random_frame(5, 3, pbc=False)],
    "three_frames_one_empty_of_edges": lambda: [random_frame(30, 4), (np.zeros((1, 3)), None, np.array([0])),
                                                random_frame(12, 5)],
    "5184_atoms": lambda: [random_frame(5184, 6)],
}


def run_package(package, graph, atype):
    return package(atype, graph.edge_index, graph.edge_vec, graph.edge_mask, graph.n_node)


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_package_equals_eager_float64(package64, model64, system):
    graph, atype = graph_of(SYSTEMS[system]())
    if system == "single_atom_no_edges":
        assert graph.num_edges == 0
    got = run_package(package64, graph, atype)
    want = model64[0](graph, atype)
    assert set(got) == set(OUTPUTS)
    for key in OUTPUTS:
        assert got[key].shape == want[key].shape, key
        assert got[key].dtype == torch.float64
        err = (got[key] - want[key]).abs().max().item() if got[key].numel() else 0.0
        assert err <= TOL64, f"{key}: {err:.3g}"


@pytest.mark.parametrize("chunk_elements", [1, 4000, 0])
def test_package_chunks_equal_eager(package64, model64, chunk_elements, monkeypatch):
    """The block program on chunks of centers (1 center per call, a few dozen, all at once) gives eager's numbers:
    the chunks' energies and part gradients land in their own rows, whatever the chunk size."""
    from graphdesc.export.stages import chunk_rows

    graph, atype = graph_of(SYSTEMS["three_frames_one_empty_of_edges"]() + SYSTEMS["ragged_two_frames"]())
    monkeypatch.setattr(package64, "chunk_elements", chunk_elements)
    width = int(torch.bincount(graph.edge_index[1], minlength=len(atype)).max())
    rows = chunk_rows(len(atype), width, model64[0].config.descriptor.attn, chunk_elements)
    assert (chunk_elements == 0) == (rows >= len(atype)), (rows, len(atype))
    got = run_package(package64, graph, atype)
    want = model64[0](graph, atype)
    for key in OUTPUTS:
        err = (got[key] - want[key]).abs().max().item()
        assert err <= 1e-12, f"{key}: {err:.3g} with chunks of {rows} centers"


@pytest.mark.parametrize("chunk_elements", [None, 1, 4000])
@pytest.mark.parametrize("system", list(SYSTEMS))
def test_pair_package_equals_eager(package64_pairs, package64, package32, model64, system, chunk_elements,
                                   monkeypatch):
    """A package of the pair path (ragged parts: edge rows cut at center boundaries, per-center pair
    chunks) gives the eager one-width block path's numbers, one piece or in chunks of 1 or a few centers."""
    assert package64_pairs.metadata["attention"] == "pairs"
    assert package64.metadata["attention"] == "buckets" and package32.metadata["attention"] == "blocks"
    eager = copy.deepcopy(model64[0])
    eager.attention = "blocks"
    if chunk_elements is not None:
        monkeypatch.setattr(package64_pairs, "chunk_elements", chunk_elements)
    graph, atype = graph_of(SYSTEMS[system]())
    got = run_package(package64_pairs, graph, atype)
    want = eager(graph, atype)
    for key in OUTPUTS:
        assert got[key].shape == want[key].shape, key
        err = (got[key] - want[key]).abs().max().item() if got[key].numel() else 0.0
        assert err <= TOL64, f"{key}: {err:.3g}"


@pytest.mark.parametrize("poison", [float("nan"), float("inf"), -1e300])
@pytest.mark.parametrize("which", ["package64", "package64_pairs"])
def test_package_ignores_poisoned_padding(which, poison, monkeypatch, request):
    """Padding edges (edge_mask False) holding nan/inf/huge vectors, spread over centers and chunks, change
    nothing: the three programs mask them in the edge stage, the block gradients' gather and the assembly."""
    package64 = request.getfixturevalue(which)
    graph, atype = graph_of(SYSTEMS["ragged_two_frames"]())
    monkeypatch.setattr(package64, "chunk_elements", 4000)  # several chunks
    want = run_package(package64, graph, atype)
    e, pad = graph.num_edges, 37
    rng = np.random.default_rng(0)
    index = torch.cat([graph.edge_index, torch.as_tensor(rng.integers(0, len(atype), (2, pad)))], dim=1)
    vec = torch.cat([graph.edge_vec, torch.full((pad, 3), poison, dtype=torch.float64)])
    mask = torch.cat([graph.edge_mask, torch.zeros(pad, dtype=torch.bool)])
    order = torch.as_tensor(rng.permutation(e + pad))
    got = package64(atype, index[:, order], vec[order], mask[order], graph.n_node)
    for key in OUTPUTS:
        assert torch.isfinite(got[key]).all(), key
        err = (got[key] - want[key]).abs().max().item()
        assert err <= 1e-12, f"{key}: {err:.3g}"


def test_chunk_size_override_is_checked(package64, monkeypatch):
    monkeypatch.setenv("GRAPHDESC_CHUNK_ELEMENTS", "lots")
    with pytest.raises(ValueError, match="GRAPHDESC_CHUNK_ELEMENTS must be an integer >= 0"):
        load_package(package64.path)
    monkeypatch.setenv("GRAPHDESC_CHUNK_ELEMENTS", "123")
    assert load_package(package64.path).chunk_elements == 123


@pytest.mark.parametrize("system", ["small_periodic", "ragged_two_frames", "5184_atoms"])
def test_package_equals_eager_float32(package32, model32_compat, system):
    """The package agrees with eager to 1e-5 of each output's largest entry, or to twice eager's own float32
    error (against the same model in float64), whichever is larger: their rounding differs (eager counts the
    extra phantoms as one key row, the package as a signed term of each softmax denominator), and the 5184-atom
    virial, a sum over ~400,000 edges, carries a float32 error of 1.0e-5 of its largest entry in either layer."""
    graph, atype = graph_of(SYSTEMS[system](), dtype=torch.float32)
    got = run_package(package32, graph, atype)
    want = model32_compat(graph, atype)
    graph64, _ = graph_of(SYSTEMS[system](), dtype=torch.float64)
    exact = copy.deepcopy(model32_compat).to(torch.float64)(graph64, atype)
    for key in OUTPUTS:
        assert got[key].dtype == torch.float32
        scale = max(want[key].abs().max().item(), 1.0)
        own = (want[key].double() - exact[key]).abs().max().item()
        err = (got[key] - want[key]).abs().max().item()
        assert err <= max(1e-5 * scale, 2 * own), f"{key}: {err:.3g} (scale {scale:.3g}, eager's own {own:.3g})"


def test_package_metadata_and_input_errors(package64, model64):
    assert package64.config == model64[0].config
    assert package64.dtype == torch.float64 and package64.device.type == "cpu"
    assert package64.metadata["outputs"] == ",".join(OUTPUTS)
    graph, atype = graph_of(SYSTEMS["small_periodic"]())
    with pytest.raises(TypeError, match="edge_vec must be torch.float64"):
        package64(atype, graph.edge_index, graph.edge_vec.float(), graph.edge_mask, graph.n_node)
    with pytest.raises(TypeError, match="atype must be int64"):
        package64(atype.int(), graph.edge_index, graph.edge_vec, graph.edge_mask, graph.n_node)
    with pytest.raises(ValueError, match="atype"):
        package64(atype + 5, graph.edge_index, graph.edge_vec, graph.edge_mask, graph.n_node)
    bad = graph.edge_index.clone()
    bad[0, 0] = 10_000
    with pytest.raises(ValueError, match="edge_index"):
        package64(atype, bad, graph.edge_vec, graph.edge_mask, graph.n_node)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        package64(atype.numpy(), graph.edge_index, graph.edge_vec, graph.edge_mask, graph.n_node)


def test_loader_refuses_non_packages(tmp_path):
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="is not a .pt2 package"):
        load_package(junk)
    with pytest.raises(FileNotFoundError):
        load_package(tmp_path / "missing.pt2")


def test_ase_calculator_on_package(package64, model64, tmp_path):
    from ase.build import bulk

    from graphdesc.ase import Calculator

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.numbers[::3] = 13  # Al
    atoms.rattle(0.05, seed=1)
    pt2 = Calculator(package64.path, type_map=["Cu", "Al"])
    eager = Calculator(model64[0], type_map=["Cu", "Al"])
    for prop in ("get_potential_energy", "get_forces", "get_stress", "get_potential_energies"):
        atoms.calc = pt2
        x = getattr(atoms, prop)()
        atoms.calc = eager
        y = getattr(atoms, prop)()
        np.testing.assert_allclose(x, y, rtol=0, atol=TOL64, err_msg=prop)


def test_cli_eval(package64, model64, tmp_path, capsys):
    from ase.build import bulk
    from ase.io import write

    frames = [bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2), bulk("Al", "fcc", a=4.0, cubic=True)]
    frames[0].rattle(0.05, seed=2)
    path = tmp_path / "s.extxyz"
    write(path, frames)
    outputs = []
    for source in (str(package64.path), str(model64[1])):
        out = tmp_path / f"{Path(source).suffix}.json"
        assert main(["eval", source, str(path), "--type-map", "Cu,Al", "--json", str(out)]) == 0
        outputs.append(json.loads(out.read_text()))
    assert "frame 1: 4 atoms" in capsys.readouterr().out
    for a, b in zip(*outputs, strict=True):
        assert abs(a["energy"] - b["energy"]) < TOL64
        np.testing.assert_allclose(a["forces"], b["forces"], rtol=0, atol=TOL64)
        np.testing.assert_allclose(a["stress"], b["stress"], rtol=0, atol=TOL64)
    capsys.readouterr()
    assert main(["eval", str(model64[1]), str(path), "--type-map", "Cu,Ni"]) == 1
    assert "not in the model's type_map" in capsys.readouterr().err


@pytest.fixture(scope="module")
def cpp_example(tmp_path_factory):
    """examples/cpp/graphdesc_md.cpp built with g++ against the torch wheel's libtorch (once per module)."""
    compiler = shutil.which(os.environ.get("CXX", "g++"))
    if compiler is None:
        pytest.skip("no C++ compiler (g++) on this machine: the C++ example cannot be built")
    root = Path(torch.__file__).parent
    exe = tmp_path_factory.mktemp("cpp") / "graphdesc_md"
    src = Path(__file__).parent.parent / "examples" / "cpp" / "graphdesc_md.cpp"
    subprocess.run([compiler, "-std=c++17", "-O1", "-w", str(src), "-o", str(exe), f"-I{include_dir()}",
                    f"-I{root / 'include'}",
                    f"-I{root / 'include/torch/csrc/api/include'}", f"-L{root / 'lib'}", "-ltorch", "-ltorch_cpu",
                    "-lc10", f"-Wl,-rpath,{root / 'lib'}"], check=True)
    return exe


@pytest.mark.parametrize("which,slabs,chunk", [("package64", 1, None), ("package64", 2, None), ("package64", 3, None),
                                               ("package64", 12, None), ("package64", 1, "1"),
                                               ("package64", 3, "9000"), ("package64_pairs", 12, None),
                                               ("package64_pairs", 1, "1"), ("package64_pairs", 3, "9000")])
def test_cpp_example_matches_python(cpp_example, which, model64, slabs, chunk, request):
    """The C++ example cuts a triclinic two-type box into slabs, calls the package once per slab with its ghosts,
    sums energies and virials and sends ghost forces to their owners: equal to one whole-box eager call to 1e-12.
    With 12 slabs of a 2x2x2-cell crystal, four slabs hold no atom (calls with L = 0). ``chunk``:
    GRAPHDESC_CHUNK_ELEMENTS, so that graphdesc::Package runs the block program on one center or a few per call.
    The pair-path package has ragged parts: C++ cuts its edge rows at the chunks' center boundaries."""
    package64 = request.getfixturevalue(which)
    env = dict(os.environ, **({"GRAPHDESC_CHUNK_ELEMENTS": chunk} if chunk else {}))
    text = subprocess.run([str(cpp_example), str(package64.path), "2", "3.61", "7", str(slabs), "0.15"], check=True,
                          capture_output=True, text=True, env=env).stdout
    print(text.splitlines()[0])

    def rows(tag):
        return np.array([[float(v) for v in line.split()[1:]] for line in text.splitlines()
                         if line.startswith(tag + " ")])

    pos, cell, force = rows("pos"), rows("cell"), rows("force")
    energy, virial = float(re.search(r"^energy (\S+)", text, re.M).group(1)), rows("virial").reshape(3, 3)
    slab_rows = re.findall(r"^slab \d+ local (\d+) ghosts (\d+) edges (\d+)", text, re.M)
    assert pos.shape == (32, 3) and force.shape == (32, 3) and len(slab_rows) == slabs
    assert sum(int(r[0]) for r in slab_rows) == 32 and (slabs < 12 or ("0", "0", "0") in slab_rows)
    graph = build_graph(torch.as_tensor(pos), RCUT, cell=torch.as_tensor(cell), pbc=True)
    want = model64[0](graph, torch.arange(32) % 2)
    assert abs(energy - want["energy"].item()) < 1e-12
    np.testing.assert_allclose(force, to_numpy(want["force"]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(virial, to_numpy(want["virial"][0]), rtol=0, atol=1e-12)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc policy applies to glibc only")
def test_cpp_package_sets_the_malloc_policy(cpp_example, package64):
    """graphdesc::Package sets graphdesc's malloc policy in a C++ program (as importing graphdesc does in Python),
    says so, and leaves a user's malloc variable alone."""
    from graphdesc.allocator import POLICY, USER_KNOBS

    clean = {k: v for k, v in os.environ.items() if k not in USER_KNOBS}  # this process exported the policy
    ours = ", ".join(f"{k}={v}" for k, v in POLICY.items()) + " (graphdesc's)"
    for env, said in ((clean, ours), ({**clean, "GLIBC_TUNABLES": ""}, "GLIBC_TUNABLES= (set by the user)"),
                      ({**clean, **{k: str(v) for k, v in POLICY.items()}}, ours)):
        text = subprocess.run([str(cpp_example), str(package64.path), "1", "3.61", "7", "1"], check=True,
                              capture_output=True, text=True, env=env).stdout
        assert f"malloc {said}\n" in text, text.splitlines()[:2]


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="no CUDA device: the CUDA package flow runs only on a GPU machine")
def test_cuda_package_equals_eager(model64, tmp_path):
    from graphdesc.export import export_package

    model = model64[0].to("cuda")
    package = load_package(export_package(model, tmp_path / "cuda.pt2", device="cuda"))
    for system in ("single_atom_no_edges", "ragged_two_frames", "5184_atoms"):
        graph, atype = graph_of(SYSTEMS[system]())
        graph = type(graph)(*(x.cuda() for x in (graph.edge_index, graph.edge_vec, graph.edge_mask, graph.n_node)))
        got, want = run_package(package, graph, atype.cuda()), model(graph, atype.cuda())
        for key in OUTPUTS:
            err = (got[key] - want[key]).abs().max().item() if got[key].numel() else 0.0
            assert err <= TOL64, f"{system} {key}: {err:.3g}"
