"""MKL's Intel kernels on AMD CPUs (graphdesc.mkl): loaded before torch, asked by MKL, the same products."""

import platform
import sys

import numpy as np
import pytest
from helpers import run_python

from graphdesc.mkl import KNOB, library_path, preload

pytestmark = pytest.mark.skipif(sys.platform != "linux" or platform.machine() != "x86_64",
                                reason="MKL's CPU check is answered on x86-64 Linux only")

# a float64 product of an attention's shape and a large one; then what MKL asked and what graphdesc says
PRODUCT = """
{imports}
import graphdesc.mkl as m, numpy as np
torch.manual_seed(0)
a, v = torch.randn(52, 78, 78, dtype=torch.float64), torch.randn(52, 78, 128, dtype=torch.float64)
np.save({out!r}, (a @ v).numpy())
print(m.queries(), m.policy(), sep="|")
"""


def _product(tmp_path, name: str, imports: str = "import graphdesc, torch", **env):
    out = str(tmp_path / f"{name}.npy")
    queries, said = run_python(PRODUCT.format(imports=imports, out=out), drop=(KNOB,), **env).split("|")
    return np.load(out), queries, said


def _mkl():
    torch = pytest.importorskip("torch")
    if not torch.backends.mkl.is_available():
        pytest.skip("this torch build has no MKL")


def test_loaded_before_torch_mkl_asks_it_and_the_products_agree(tmp_path):
    """With ``GRAPHDESC_MKL_INTEL=1`` (any x86-64 CPU), importing graphdesc before torch puts the library in the
    global scope, MKL asks it, and ``policy()`` says so; with ``=0`` nothing is loaded. The products agree to
    1e-13 relative (other kernels sum in another order; a wrong kernel would be off by O(1))."""
    _mkl()
    intel, asked, said = _product(tmp_path, "intel", **{KNOB: "1"})
    own, not_loaded, own_said = _product(tmp_path, "own", **{KNOB: "0"})
    assert int(asked) > 0 and said.startswith("MKL's Intel kernels"), (asked, said)
    assert not_loaded == "None" and own_said == f"MKL's own choice ({KNOB}=0)", (not_loaded, own_said)
    scale = np.abs(own).max()
    assert np.abs(intel - own).max() <= 1e-13 * scale
    assert library_path().exists()


def test_after_torch_it_is_too_late_and_said(tmp_path):
    """Imported after torch, graphdesc loads nothing (MKL's question is bound already), says why, and warns
    (where it would have loaded the library; not with the variable at 0)."""
    _mkl()
    _, queries, said = _product(tmp_path, "late", imports="import torch, graphdesc", **{KNOB: "1"})
    assert queries == "None" and said == "MKL's own choice (torch was imported before graphdesc)", (queries, said)
    warn = "import torch, warnings; warnings.simplefilter('always'); import graphdesc"
    assert "graphdesc was imported after torch" in run_python(warn + "; print()", stderr=True, **{KNOB: "1"})
    assert "graphdesc was imported after torch" not in run_python(warn + "; print()", stderr=True, **{KNOB: "0"})


def test_the_default_follows_the_cpu_vendor(tmp_path):
    """Without the variable: loaded on an AMD CPU only (an Intel CPU gets Intel's kernels from MKL already)."""
    _mkl()
    _, queries, said = _product(tmp_path, "default")
    with open("/proc/cpuinfo") as f:
        amd = "AuthenticAMD" in f.read()
    if amd:
        assert int(queries) > 0, said
    else:
        assert queries == "None" and said.endswith("(not an AMD CPU: MKL picks its kernels by the instruction set "
                                                   "already)"), said


def test_preloaded_it_serves_programs_that_import_torch_first(tmp_path, monkeypatch):
    """``preload()`` names the library for ``LD_PRELOAD`` (what ``lmp_command()`` uses): a process that loads torch
    first, and never graphdesc's policy, then runs MKL's Intel kernels; with the variable at 0 it names none."""
    _mkl()
    monkeypatch.setenv(KNOB, "1")
    path = preload()
    assert path == str(library_path())
    code = PRODUCT.format(imports="import torch", out=str(tmp_path / "pre.npy"))
    queries, _ = run_python(code, drop=(KNOB,), LD_PRELOAD=path, **{KNOB: "0"}).split("|")
    assert int(queries) > 0
    monkeypatch.setenv(KNOB, "0")
    assert preload() == ""
