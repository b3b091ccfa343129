"""Shared fixtures: every test that takes ``backend`` runs on numpy, torch and jax."""

import os

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_ENABLE_X64", "1")

from helpers import BACKENDS, Backend  # noqa: E402


@pytest.fixture(params=BACKENDS)
def backend(request) -> Backend:
    return Backend(request.param)
