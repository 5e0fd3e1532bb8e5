"""Code that never runs here is at least compiled here: every Numba kernel to PTX for sm_80, sm_89 and
sm_90 (numba-cuda's NVVM, in a process without the simulator flag), and the CuPy kernels' CUDA source
with NVRTC (the nvidia-cuda-nvrtc wheel), each kernel found in the PTX."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CCS = ((8, 0), (8, 9), (9, 0))

NUMBA_SCRIPT = r"""
import json, sys
from numba import cuda
from gpucal.kernels import numba_kernels as nk
done = []
for name, sigs in nk.SIGNATURES.items():
    for sig in sigs:
        for cc in %s:
            ptx, _ = cuda.compile_ptx(getattr(nk, name).py_func, sig, cc=cc)
            assert ".entry" in ptx or ".visible .entry" in ptx
            done.append([name, str(sig), list(cc)])
print(json.dumps(done))
"""


def _without_simulator():
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    return env


def test_every_numba_kernel_compiles_to_ptx():
    proc = subprocess.run([sys.executable, "-c", NUMBA_SCRIPT % (CCS,)], capture_output=True, text=True,
                          env=_without_simulator(), timeout=600)
    if "libnvvm" in proc.stderr.lower() and "not found" in proc.stderr.lower():
        pytest.skip("NVVM is not installed here (pip install 'numba-cuda[cu13]')")
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = json.loads(proc.stdout)
    from gpucal.kernels.numba_kernels import SIGNATURES

    assert len(done) == sum(len(s) for s in SIGNATURES.values()) * len(CCS)
    assert {d[0] for d in done} == {"gemv", "gemv_sim", "gemm_tiled", "stream_copy", "stream_read", "stream_write",
                                    "stream_triad"}


@pytest.mark.parametrize("cc", CCS, ids=lambda cc: f"compute_{cc[0]}{cc[1]}")
def test_cupy_kernel_source_compiles_with_nvrtc(cc):
    pytest.importorskip("cupy", reason="CuPy is not installed (pip install 'gpucal[cuda13]')")
    from cupy.cuda import nvrtc

    from gpucal.kernels.cuda_src import KERNEL_NAMES, SOURCE

    prog = nvrtc.createProgram(SOURCE, "gpucal.cu", [], [])
    try:
        nvrtc.compileProgram(prog, [f"--gpu-architecture=compute_{cc[0]}{cc[1]}", "--std=c++14"])
    except Exception as exc:
        pytest.fail(f"NVRTC: {exc}\n{nvrtc.getProgramLog(prog)}")
    ptx = nvrtc.getPTX(prog).decode()
    missing = [n for n in KERNEL_NAMES if f".entry {n}(" not in ptx]
    assert not missing
    assert ".local" not in ptx  # no register array spilled to local memory by a run-time index
    assert ptx.count("ld.global.cs.v4.u32") >= 15  # 16-byte streaming loads in every GEMV instance
