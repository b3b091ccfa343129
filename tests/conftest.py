"""Shared fixtures: every test that takes ``backend`` runs on numpy, torch and jax."""

import os

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_ENABLE_X64", "1")

import graphdesc  # noqa: E402,F401  (before torch, as the command line does: its CPU policies bind when torch loads)
from helpers import BACKENDS, Backend  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--write-errors-doc", action="store_true",
                     help="regenerate docs/errors.md from tests/test_bad_inputs.py's cases")


@pytest.fixture(params=BACKENDS)
def backend(request) -> Backend:
    return Backend(request.param)


@pytest.fixture(scope="session")
def model64(tmp_path_factory):
    """A 2-type float64 model, one fitting net per type, random statistics: ``(model, checkpoint path)``."""
    pytest.importorskip("torch")
    from test_model import energy_config, make_model_params

    from graphdesc.torch import EnergyModel

    config = energy_config(mixed_types=False)
    model = EnergyModel(config, make_model_params(config, 11)).eval()
    path = model.save(tmp_path_factory.mktemp("ckpt") / "model.npz")
    return model, path


@pytest.fixture(scope="session")
def typed_models(tmp_path_factory):
    """``model64``'s config and weights with a type_map (Cu, Al), and its float64 and float32 packages:
    ``(model, {dtype: path})``. Compiled once per run, for the LAMMPS tests and the float32 ghost test."""
    pytest.importorskip("torch")
    import dataclasses

    from test_model import energy_config, make_model_params

    from graphdesc.export import export_package
    from graphdesc.torch import EnergyModel

    config = energy_config(mixed_types=False)
    config = dataclasses.replace(config, descriptor=dataclasses.replace(config.descriptor, type_map=("Cu", "Al")))
    model = EnergyModel(config, make_model_params(config, 11)).eval()
    folder = tmp_path_factory.mktemp("typed_models")
    packages = {dtype: export_package(model, folder / f"model-{dtype}.pt2", dtype=dtype)
                for dtype in ("float64", "float32")}
    return model, packages


@pytest.fixture(scope="session")
def package64(model64, tmp_path_factory):
    """``model64`` compiled through the CLI (``graphdesc export MODEL -o OUT.pt2``), loaded; compiled once per run."""
    from graphdesc.cli import main
    from graphdesc.export import load_package

    out = tmp_path_factory.mktemp("pt2") / "model.pt2"
    assert main(["export", str(model64[1]), "-o", str(out)]) == 0
    return load_package(out)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The README's demo training, shorter (48 frames, 150 steps), and its best model exported through the CLI:
    ``(folder, printed output)``, the folder holding ``history.json``, ``best.npz``, ``model.pt2``, the data.
    Trained and compiled once per run, for the training test and the LAMMPS NVE run."""
    pytest.importorskip("torch")
    import contextlib
    import io

    from graphdesc.cli import main

    out, printed = tmp_path_factory.mktemp("demo") / "run", io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["train", "--demo", "--demo-frames", "48", "--steps", "150", "--lr", "3e-3", "--stop-lr", "1e-4",
                     "-o", str(out), "--no-progress"]) == 0
        assert main(["export", str(out / "best.npz"), "-o", str(out / "model.pt2")]) == 0
    return out, printed.getvalue()
