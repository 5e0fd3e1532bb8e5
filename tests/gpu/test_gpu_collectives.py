"""NCCL through CuPy on a real GPU: ``gpucal probe collectives`` with one rank (a one-GPU machine can check
the NCCL path: every op runs, is verified and timed; NCCL moves nothing between GPUs then) and, where the
machine has two GPUs, two ranks under mpiexec."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

QUICK = ("--hidden", "1024", "--budget", "0.05", "--json")


def _gpucal(*args, ranks=None):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    cmd = [sys.executable, "-m", "gpucal", *args]
    if ranks is not None:
        beside = Path(sys.executable).parent / "mpiexec"
        mpiexec = str(beside) if beside.exists() else shutil.which("mpiexec")
        if mpiexec is None:
            pytest.skip("no mpiexec")
        cmd = [mpiexec, "-n", str(ranks), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _check(data, nranks):
    assert data["waived"] is None and data["nccl_version"]
    ops = {e["op"]: e for e in data["entries"] if not e["graphs"]}
    assert set(ops) == {"all-reduce", "all-gather", "reduce-scatter", "broadcast", "send-recv"}
    for e in ops.values():
        assert e["verified"] and e["nranks"] == nranks and e["alpha_s"]["source"] == "measured"
        assert e["beta_Bps"]["value"] > 1e8
    assert all(r["status"] in ("passed", "waived") for r in data["results"])


def test_collectives_on_one_rank(cupy_backend, mpi_module):
    proc = _gpucal("probe", "collectives", "--graphs", *QUICK)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    _check(json.loads(proc.stdout), 1)


def test_collectives_on_two_gpus(cupy_backend, mpi_module):
    if cupy_backend.device_count() < 2:
        pytest.skip("one GPU: NCCL between GPUs needs two")
    proc = _gpucal("probe", "collectives", *QUICK, ranks=2)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    _check(json.loads(proc.stdout), 2)
