"""Shared test helpers. Tests split by what they need: ``unit/`` (nothing but the package), ``cli/`` (the
installed ``gpucal`` command, run as a subprocess, exactly as users run it), ``sim/`` (kernels on the Numba
CUDA simulator), ``compile/`` (kernels compiled for real GPUs, in a process without the simulator), ``emu/``
(the CUDA C kernels run on a CPU emulator with g++; skipped with the reason where the compiler cannot build it,
unless GPUCAL_REQUIRE_EMU=1, as CI sets it) and
``gpu/`` (marked ``gpu``: a real NVIDIA GPU; skipped with the reason where there is none) and ``mpi/``
(gpucal under ``mpiexec``, ranks on this machine: the ``run_mpi`` fixture; where mpi4py or mpiexec is
missing those tests are skipped with the reason, unless GPUCAL_REQUIRE_MPI=1, as CI sets it: then they
fail).

The simulator flag is set here, before anything imports numba, unless the environment already sets it:
run ``NUMBA_ENABLE_CUDASIM=0 python -m pytest -m gpu`` on a GPU machine to test the real backends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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


# --- tests/mpi: gpucal launched by mpiexec (the mpich wheel), ranks on this machine over loopback ---

def _mpiexec() -> tuple[str | None, str | None]:
    try:
        import mpi4py  # noqa: F401
    except ImportError as exc:
        return None, f"mpi4py is not installed ({exc}): pip install '.[mpi]'"
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    return (found, None) if found else (None, "no mpiexec (the mpich wheel brings one)")


MPIEXEC, WHY = _mpiexec()


@pytest.fixture(scope="session")
def mpiexec() -> str:
    if MPIEXEC is None:
        if os.environ.get("GPUCAL_REQUIRE_MPI") == "1":
            pytest.fail(f"GPUCAL_REQUIRE_MPI=1 but {WHY}")
        pytest.skip(WHY)
    return MPIEXEC


@pytest.fixture
def run_mpi(mpiexec, tmp_path):
    """``run_mpi(n, *gpucal_args, timeout=180, cwd=tmp_path)`` -> CompletedProcess (text)."""

    def run(n: int, *args: str, timeout: float = 180, cwd=None, env=None) -> subprocess.CompletedProcess:
        full_env = dict(os.environ)
        full_env.update(env or {})
        return subprocess.run([mpiexec, "-n", str(n), sys.executable, "-m", "gpucal", *args], capture_output=True,
                              text=True, timeout=timeout, cwd=cwd or tmp_path, env=full_env)

    return run


# --- tests/gpu: the real backends, skipped with the backend's own reason where no GPU is present ---

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


# --- MPI for the GPU tests: mpi4py with an MPI library it can load ---

@pytest.fixture(scope="session")
def mpi_module():
    """mpi4py's ``MPI`` module with an MPI library loaded, or a skip with the reason: mpi4py missing, or
    mpi4py present with no MPI library to load (``from mpi4py import MPI`` raises RuntimeError then, which
    ``pytest.importorskip`` does not catch). Fails instead under GPUCAL_REQUIRE_MPI=1, as ``mpiexec`` does."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        why = f"mpi4py is not installed ({exc}): pip install '.[mpi]'"
    except RuntimeError as exc:
        said = " ".join(str(exc).split())  # mpi4py lists every library it tried, a line each
        why = (f"mpi4py cannot load an MPI library ({said[:400]}): pip install mpich, or point MPI4PY_LIBMPI "
               "at a libmpi.so.N")
    else:
        return MPI
    if os.environ.get("GPUCAL_REQUIRE_MPI") == "1":
        pytest.fail(f"GPUCAL_REQUIRE_MPI=1 but {why}")
    pytest.skip(why)
