"""Shared test helpers. Tests split by what they need: ``unit/`` (nothing but the package), ``cli/`` (the
installed ``gpucal`` command, run as a subprocess, exactly as users run it), ``sim/`` (kernels on the Numba
CUDA simulator), ``compile/`` (kernels compiled for real GPUs, in a process without the simulator) and
``gpu/`` (marked ``gpu``: a real NVIDIA GPU; skipped with the reason where there is none).

The simulator flag is set here, before anything imports numba, unless the environment already sets it:
run ``NUMBA_ENABLE_CUDASIM=0 python -m pytest -m gpu`` on a GPU machine to test the real backends.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
SIMULATOR = os.environ["NUMBA_ENABLE_CUDASIM"] not in ("", "0")


def run_gpucal(*args: str, cwd=None, env_extra=None) -> subprocess.CompletedProcess:
    """``python -m gpucal ARGS`` in a fresh process; output captured as text."""
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "gpucal", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


@pytest.fixture
def gpucal():
    return run_gpucal


@pytest.fixture(scope="session")
def simulator():
    """The simulator backend (skips where the simulator flag is off, e.g. in a GPU run)."""
    if not SIMULATOR:
        pytest.skip("NUMBA_ENABLE_CUDASIM=0: simulator tests are off in this run")
    from gpucal.kernels.backend import select

    return select("simulator")
