"""graphdesc's OpenMP wait policy (graphdesc.threads): set before torch loads, never over the user's choice."""


import pytest
from helpers import run_python

from graphdesc.threads import USER_KNOBS as KNOBS


def _run(code: str, **env) -> str:
    return run_python(code, drop=KNOBS, **env)


SHOW = "import os, graphdesc.threads as t; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'), "\
       "t.policy(), sep='|')"


def test_importing_graphdesc_first_sets_the_policy_for_torch_and_children():
    """graphdesc sets GOMP_SPINCOUNT before torch loads; torch then loads with it, and a child process inherits it."""
    pytest.importorskip("torch")
    out = _run("import graphdesc, torch, os, subprocess, sys\n"
               "print(os.environ['GOMP_SPINCOUNT'])\n"
               "print(subprocess.run([sys.executable, '-c', 'import os; print(os.environ[\"GOMP_SPINCOUNT\"])'],"
               " capture_output=True, text=True).stdout.strip())")
    assert out.splitlines() == ["1000", "1000"]
    assert _run(SHOW) == "1000|None|GOMP_SPINCOUNT=1000 (graphdesc's)"


@pytest.mark.parametrize("name,value", [("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "300000")])
def test_a_users_choice_is_kept(name, value):
    """Either variable set by the user, to anything: graphdesc sets nothing and says the choice is the user's."""
    spin, wait, said = _run(SHOW, **{name: value}).split("|")
    assert (spin, wait) == ((value, "None") if name == "GOMP_SPINCOUNT" else ("None", value))
    assert said == f"{name}={value} (set by the user)"


def test_torch_loaded_first_keeps_libgomps_default():
    """Once torch (and with it libgomp) is loaded, setting the variable would change nothing: graphdesc leaves it."""
    pytest.importorskip("torch")
    assert _run("import torch\n" + SHOW) == "None|None|libgomp's default (threads spin 300,000 times before they sleep)"
