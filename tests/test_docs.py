"""The README as a front page, the manual in docs/ (a strict MkDocs build), and docstrings for the API reference."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TEST_COMMAND = 'python -m pip install -q -e ".[all]" && python -m pytest -q'

#: Modules whose ``__all__`` the API reference documents.
PUBLIC = ["graphdesc", "graphdesc.graph", "graphdesc.descriptor", "graphdesc.model", "graphdesc.torch",
          "graphdesc.jax", "graphdesc.train", "graphdesc.train.deepmd_data", "graphdesc.train.deepmd_input",
          "graphdesc.train.distributed", "graphdesc.train.doctor", "graphdesc.export", "graphdesc.ase",
          "graphdesc.lammps", "graphdesc.safe_io"]


def test_readme_is_a_front_page():
    """At most 200 lines, the two quick-start commands, and CI runs the test one verbatim."""
    assert len(README.splitlines()) <= 200
    assert 'python -m pip install -e ".[all]" && graphdesc demo' in README
    assert TEST_COMMAND in README
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text()
    for page in re.findall(r"\]\((docs/[^)#]+)", README):
        assert (ROOT / page).exists(), f"the README links to {page}, which does not exist"


def test_readme_headline_rows_are_the_results_file():
    """The README's benchmark rows are rows of benchmarks/results/dpa1_cpu.md, so they cannot drift from it."""
    results = set((ROOT / "benchmarks" / "results" / "dpa1_cpu.md").read_text().splitlines())
    rows = [line for line in README.splitlines() if re.match(r"\| (cu|diamond) \|", line)]
    assert len(rows) >= 5
    assert [r for r in rows if r not in results] == []


def test_readme_python_tour_runs(tmp_path, monkeypatch):
    """The README's Python example runs as written (5 training steps instead of 600)."""
    pytest.importorskip("torch")
    pytest.importorskip("ase")
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    assert "TrainConfig(steps=600)" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("TrainConfig(steps=600)", "TrainConfig(steps=5)"), "README.md", "exec"), {})
    assert (tmp_path / "runs" / "x" / "best.npz").exists()


@pytest.mark.parametrize("module", PUBLIC)
def test_public_api_has_docstrings(module):
    """Every public function and class (a module's ``__all__``) has its own docstring for the API reference."""
    mod = importlib.import_module(module)
    assert (mod.__doc__ or "").strip(), f"{module} has no module docstring"
    missing = []
    for name in mod.__all__:
        obj = getattr(mod, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            own = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
            if len((own or "").strip()) < 20:
                missing.append(name)
    assert missing == [], f"{module}: no docstring for {missing}"


#: Parameter names that carry arrays (or containers of arrays): a callable taking one states shapes and dtypes.
ARRAY_ARGS = {"data", "segment_ids", "mask", "logits", "dst", "edge_mask", "edge_index", "edge_vec", "n_node",
              "positions", "cell", "graph", "graphs", "halos", "atype", "values", "owner", "vec", "nei_type",
              "coord_ext", "atype_ext", "nlist", "mapping", "atom_e", "g", "indices", "batch", "batches", "pred",
              "sample", "samples", "energy", "forces", "virial"}
#: Parameter names that carry physical quantities: a callable taking one states their units.
PHYSICAL_ARGS = {"positions", "cell", "cutoff", "rcut", "rcut_smth", "min_distance", "edge_vec", "vec", "graph",
                 "graphs", "halos", "coord_ext", "atom_e", "energy", "forces", "virial", "batch", "pred", "samples"}
SHAPE = re.compile(r"\(\s*[A-Za-z0-9_]+\s*,\s*\)|\(\s*[A-Za-z0-9_*+·]+(\s*,\s*[A-Za-z0-9_*+· ]+)+\)|\bscalar\b")
DTYPE = re.compile(r"float64|float32|int64|int32|\bint\b|\bbool\b|dtype|integer|floating")
UNIT = re.compile(r"Å|\beV\b|eV/Å|eV/Å\^?3")


def _public_callables():
    seen = {}
    for module in PUBLIC:
        mod = importlib.import_module(module)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and id(obj) not in seen:
                seen[id(obj)] = (f"{module}.{name}", obj)
    return list(seen.values())


def test_public_docstrings_state_shapes_dtypes_units():
    """A public callable that takes arrays states their shapes (``(N, 3)``, ``(E,)``, or "scalar") and dtypes; one
    that takes physical quantities states their units (Å, eV). Parameters are recognised by name (ARRAY_ARGS,
    PHYSICAL_ARGS), the names the package uses throughout; docs/conventions.md states the rule."""
    missing = []
    for qualname, obj in _public_callables():
        try:
            params = set(inspect.signature(obj).parameters)
        except ValueError:  # an exception class: no arrays
            continue
        doc = inspect.getdoc(obj) or ""
        needs = []
        if params & ARRAY_ARGS and not SHAPE.search(doc):
            needs.append("shapes")
        if params & ARRAY_ARGS and not DTYPE.search(doc):
            needs.append("dtypes")
        if params & PHYSICAL_ARGS and not UNIT.search(doc):
            needs.append("units")
        if needs:
            missing.append(f"{qualname}: {', '.join(needs)}")
    assert missing == [], "docstrings lacking:\n" + "\n".join(missing)


def test_docstring_rule_can_fail():
    """The shape/dtype/unit rule rejects a docstring that says nothing about them."""
    doc = "Compute the energy of a graph."
    assert not SHAPE.search(doc) and not DTYPE.search(doc) and not UNIT.search(doc)
    doc = "positions: (N, 3) float64 in Å."
    assert SHAPE.search(doc) and DTYPE.search(doc) and UNIT.search(doc)


#: A measured number: a time, a size, a ratio, a share, an energy, an error in scientific notation.
MEASURED = re.compile(r"(?<![\w.])\d+(?:\.\d+)?\s?(?:ms|µs|s|min|MiB|GiB|KiB|x|%|meV|eV)(?![\w])(?!\s*\d)"
                      r"|(?<![\w.])\d\.\d+e-\d+")
#: What names the command behind a number: a benchmark or test command, or an included results file.
COMMAND = re.compile(r"benchmarks/\w+\.py|graphdesc (?:train|demo|eval|export|doctor|lammps)|pytest|\.ci/run"
                     r"|--8<-- \"benchmarks/results/")
#: Pages whose tables a named command generates: the README's headline rows (checked against dpa1_cpu.md above) and
#: docs/errors.md (``pytest tests/test_bad_inputs.py --write-errors-doc``; test_bad_inputs checks it is current).
GENERATED_PAGES = {"README.md", "errors.md"}
#: Result files and the benchmark scripts whose ``markdown(result)`` renders them.
RENDERED = {"dpa1_cpu": "bench_dpa1", "pt2_cpu": "bench_dpa1", "dpa1_uneven": "bench_dpa1",
            "segment_pairs": "bench_segment_pairs", "graph_build": "bench_graph_build", "dpa1_parity": "dpa1_parity",
            "profile_dpa1": "profile_dpa1", "train_step": "bench_train_step", "train_step_layouts": "bench_train_step",
            "lammps_cpu": "bench_lammps", "ghosts_cpu": "bench_ghosts", "shared_cpu": "bench_shared_cpu",
            "shared_cpu_policies": "bench_shared_cpu", "shared_cpu_default": "bench_shared_cpu",
            "shared_cpu_train": "bench_shared_cpu", "train_step_vs_789c41b": "bench_train_step",
            "dpa1_cpu_now": "bench_dpa1", "shared_cpu_recheck": "bench_shared_cpu",
            "profile_dpa1_before": "profile_dpa1", "dpa1_fold": "bench_dpa1",
            "compiled_stage": "bench_compiled_stage", "jit_memory": "bench_jit_memory",
            "train_memory": "bench_train_memory", "train_memory_compiled": "bench_train_memory",
            "fold_traced": "bench_fold", "dpa1_native": "bench_dpa1", "train_step_native": "bench_train_step",
            "dpa1_embed": "bench_dpa1", "train_step_embed": "bench_train_step",
            "train_step_embed_eager": "bench_train_step", "pt2_embed": "bench_dpa1",
            "profile_dpa1_embed": "profile_dpa1", "allocator": "bench_allocator", "dpa1_node": "bench_dpa1",
            "profile_dpa1_node": "profile_dpa1",
            "profile_dpa1_1269b57": "profile_dpa1", "attention_node": "bench_attention_node",
            "allocator_pt2": "bench_allocator", "lammps_blas": "bench_lammps", "mkl": "bench_mkl",
            "dpa1_mkl": "bench_dpa1", "shared_cpu_mkl": "bench_shared_cpu", "profile_dpa1_mkl": "profile_dpa1",
            "train_step_mkl": "bench_train_step", "mkl_pt2": "bench_mkl", "mkl_lammps": "bench_mkl", "profile_dpa1_rate": "profile_dpa1", "profile_dpa1_rate_fp32": "profile_dpa1",
            "dpa1_mkl_diamond": "bench_dpa1"}


def _blocks(text: str):
    """``(section heading, block)`` for each blank-line separated block of a Markdown page."""
    heading = ""
    for block in re.split(r"\n\s*\n", text):
        for line in block.splitlines():
            if line.startswith("#") and not line.startswith("#!") and " " in line:
                heading = line
        yield heading, block


@pytest.mark.parametrize("page", sorted(p.name for p in (ROOT / "docs").glob("*.md")) + ["README.md"])
def test_measured_numbers_name_their_command(page):
    """Every block of the manual (and the README) that quotes a measured number names the command behind it, or
    follows one that does in the same section; and no measured table is pasted: tables of measurements are
    included from benchmarks/results/ (the README's headline rows are checked against dpa1_cpu.md above)."""
    path = ROOT / ("README.md" if page == "README.md" else f"docs/{page}")
    named, orphans, pasted = set(), [], []
    for heading, block in _blocks(path.read_text()):
        if COMMAND.search(block):
            named.add(heading)
        plain = re.sub(r"`[^`\n]*`", "", block)  # numbers in code spans are messages, options, code
        numbers = MEASURED.findall(plain)
        if numbers and heading not in named:
            orphans.append(f"{heading!r}: {numbers[:3]} in {block[:80]!r}")
        rows = [line for line in plain.splitlines() if line.lstrip().startswith("|")]
        if page not in GENERATED_PAGES and any(MEASURED.search(line) for line in rows):
            pasted.append(rows[0][:80])
    assert orphans == [], "measured numbers with no command before them:\n" + "\n".join(orphans)
    assert pasted == [], "pasted tables of measurements (include the results file instead): " + str(pasted)


def test_number_audit_can_fail():
    """The audit flags a number with no command, and a pasted table of measurements."""
    assert MEASURED.findall("took 3.1 ms/atom, 2.5x faster, 4.4e-16 error") == ["3.1 ms", "2.5x", "4.4e-16"]
    assert not MEASURED.findall("rcut 6 Å, 3 layers, schema 2, sel 120, 4 x 32-atom frames")
    assert COMMAND.search("`python benchmarks/bench_dpa1.py --quick`") and not COMMAND.search("we measured it")
    page = "## Speed\n\nIt runs at 2.5 ms/atom.\n\n| atoms | ms/atom |\n|---|---|\n| 32 | 2.49 ms |\n"
    assert [MEASURED.findall(b) for _, b in _blocks(page)] == [[], ["2.5 ms"], ["2.49 ms"]]


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_result_tables_are_rendered_from_their_json(name, monkeypatch):
    """Each committed results table is exactly what its benchmark's ``markdown()`` makes of the committed JSON,
    so the tables the manual includes cannot drift from the data (``--report JSON`` re-renders one)."""
    pytest.importorskip("torch")
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    module = importlib.import_module(RENDERED[name])
    from graphdesc.safe_io import load_json

    results = ROOT / "benchmarks" / "results"
    assert module.markdown(load_json(results / f"{name}.json")) == (results / f"{name}.md").read_text()


def test_included_line_ranges_are_whole_tables():
    """A ``--8<-- "file:start:end"`` range starts at a caption or a table header and ends on a table row, so a
    re-rendered results file whose lines moved fails here instead of showing half a table."""
    for page in (ROOT / "docs").glob("*.md"):
        for path, start, end in re.findall(r'--8<-- "([^":]+):(\d+):(\d+)"', page.read_text()):
            lines = (ROOT / path).read_text().splitlines()
            first, last = lines[int(start) - 1], lines[int(end) - 1]
            after = lines[int(end)] if int(end) < len(lines) else ""
            assert int(start) == 1 or (first.startswith("|") and lines[int(start)].startswith("|---")), \
                f"{page.name}: {path}:{start} does not start a table: {first[:60]!r}"
            assert last.startswith("|") and not after.startswith("|"), \
                f"{page.name}: {path}:{end} does not end a table: {last[:60]!r}"


def _mkdocs(cwd: Path, site: Path):
    pytest.importorskip("mkdocs", reason="the docs extra (pip install -e '.[docs]') builds the manual")
    pytest.importorskip("mkdocstrings", reason="the docs extra (pip install -e '.[docs]') builds the manual")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_docs_build_strict(tmp_path):
    """``mkdocs build --strict`` passes: no warning, no broken link or anchor, every API page rendered,
    benchmark tables and plots taken from benchmarks/results/."""
    done = _mkdocs(ROOT, tmp_path / "site")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    site = tmp_path / "site"
    assert "segment_softmax" in (site / "api" / "core.html").read_text()
    assert "read_systems" in (site / "api" / "train.html").read_text()
    bench = (site / "benchmarks.html").read_text()
    ddp_row = (ROOT / "benchmarks" / "results" / "train_ddp.md").read_text().splitlines()[2].split("|")[3].strip()
    assert ddp_row in bench and (site / "results" / "dpa1_cpu.png").exists()


@pytest.mark.parametrize("bad,message", [("[a page](no-such-page.md)", "no-such-page.md"),
                                         ("[an anchor](training.md#no-such-section)", "no-such-section"),
                                         (":func:`no_such_function`", "names nothing in the package")])
def test_docs_build_fails_on_a_broken_link(tmp_path, bad, message):
    """The strict build is a check that can fail: a broken page link or anchor, or a docstring
    cross-reference (a Sphinx role, checked by docs/griffe_roles.py) to nothing, stops it."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    (tmp_path / "benchmarks").symlink_to(ROOT / "benchmarks")
    shutil.copytree(ROOT / "graphdesc", tmp_path / "graphdesc", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    if bad.startswith(":func:"):
        module = tmp_path / "graphdesc" / "pairs.py"
        module.write_text(module.read_text().replace('"""', f'"""See {bad}. ', 1))
    else:
        page = tmp_path / "docs" / "quickstart.md"
        page.write_text(page.read_text() + f"\nSee {bad}.\n")
    done = _mkdocs(tmp_path, tmp_path / "site")
    assert done.returncode != 0 and message in done.stdout + done.stderr


def test_demo_yardsticks_in_the_manual_are_measured():
    """The energy yardsticks quoted in docs/training.md are what benchmarks/demo_baseline.py prints."""
    pytest.importorskip("torch")
    pytest.importorskip("ase")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "demo_baseline.py")], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    values = [float(v) for v in re.findall(r"([\d.]+) meV/atom", done.stdout)]
    assert len(values) == 4
    page = (ROOT / "docs" / "training.md").read_text()
    for v in values[:3]:
        assert f"**{v:.1f}" in page, f"{v:.1f} meV/atom is not the number docs/training.md quotes"
    assert f"{values[3]:.2f} meV/atom" in page
