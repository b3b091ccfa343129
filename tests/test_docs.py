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
