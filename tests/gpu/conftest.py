"""GPU tests: marked ``gpu``, skipped with the backend's own reason where no GPU is present."""

from __future__ import annotations

import pytest


def _backend(name: str):
    from gpucal.kernels.backend import report, select

    rep = report((name,))[0]
    if not rep.available:
        pytest.skip(f"no GPU through {name}: {rep.detail}")
    return select(name)


@pytest.fixture(scope="session")
def cupy_backend():
    return _backend("cupy")


@pytest.fixture(scope="session")
def numba_backend():
    return _backend("numba")
