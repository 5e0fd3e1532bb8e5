"""GPU tests: marked ``gpu``, skipped with the backend's own reason where no GPU is present."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def cupy_backend():
    from gpucal.kernels.backend import report, select

    rep = report(("cupy",))[0]
    if not rep.available:
        pytest.skip(f"no GPU through CuPy: {rep.detail}")
    return select("cupy")


@pytest.fixture(scope="session")
def numba_backend():
    from gpucal.kernels.backend import report, select

    rep = report(("numba",))[0]
    if not rep.available:
        pytest.skip(f"no GPU through numba-cuda: {rep.detail}")
    return select("numba")
