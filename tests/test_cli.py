"""The command line: the README's main job must run and check itself."""

import json
import subprocess
import sys

import pytest

from graphdesc.cli import main


def test_demo_runs_and_agrees(tmp_path, capsys):
    out = tmp_path / "demo.json"
    assert main(["demo", "--cells", "2", "--backend", "numpy", "--backend", "torch", "--repeats", "1",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "OK: graph == dense" in text
    rows = json.loads(out.read_text())
    assert [r["backend"] for r in rows] == ["numpy", "torch"]
    assert all(r["max_abs_err"] <= 1e-12 and r["pairs"] > r["edges"] > 0 for r in rows)
    assert all(r["descriptor_dim"] == 100 * 16 + 8 for r in rows)


def test_help_and_bad_arguments():
    res = subprocess.run([sys.executable, "-m", "graphdesc", "demo", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--cells" in res.stdout
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--backend", "cupy"])
    assert exc.value.code == 2
