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


def _nvrtc_ptx(source: str, cc) -> str:
    pytest.importorskip("cupy", reason="CuPy is not installed (pip install 'gpucal[cuda13]')")
    from cupy.cuda import nvrtc

    prog = nvrtc.createProgram(source, "gpucal.cu", [], [])
    try:
        nvrtc.compileProgram(prog, [f"--gpu-architecture=compute_{cc[0]}{cc[1]}", "--std=c++14"])
    except Exception as exc:
        pytest.fail(f"NVRTC: {exc}\n{nvrtc.getProgramLog(prog)}")
    return nvrtc.getPTX(prog).decode()


def _entries(ptx: str) -> dict[str, str]:
    """Each kernel's PTX body, by name."""
    parts = ptx.split(".entry ")[1:]
    return {part.split("(", 1)[0].strip(): part for part in parts}


@pytest.mark.parametrize("cc", CCS, ids=lambda cc: f"compute_{cc[0]}{cc[1]}")
def test_cupy_kernel_source_compiles_with_nvrtc(cc):
    from gpucal.kernels.cuda_src import GEMV_BATCHES, GEMV_DTYPES, GEMV_SHAPES, KERNEL_NAMES, SOURCE, gemv_kernel_name

    ptx = _nvrtc_ptx(SOURCE, cc)
    missing = [n for n in KERNEL_NAMES if f".entry {n}(" not in ptx]
    assert not missing
    assert ".local" not in ptx  # no register array spilled to local memory by a run-time index
    entries = _entries(ptx)
    for dtype in GEMV_DTYPES:
        for batch in GEMV_BATCHES:
            body = entries[gemv_kernel_name(dtype, batch)]
            assert "ld.global.cs.v4.u32" in body  # W streamed in 16-byte evict-first loads
            assert "bar.sync" in body  # X staged in shared memory, one tile for the whole block
            engine = GEMV_SHAPES[dtype][0]
            assert ("mma.sync.aligned.m16n8k16" in body) == (engine == "mma")  # fp16/bf16 on the tensor cores
            if engine == "fma":
                assert "shfl.sync.bfly" in body  # the warp's shuffle reduction


@pytest.mark.parametrize("cc", CCS, ids=lambda cc: f"compute_{cc[0]}{cc[1]}")
def test_decode_kernel_source_compiles_with_nvrtc(cc):
    from gpucal.kernels.decode_src import DECODE_KERNEL_NAMES, DECODE_SOURCE

    ptx = _nvrtc_ptx(DECODE_SOURCE, cc)
    missing = [n for n in DECODE_KERNEL_NAMES if f".entry {n}(" not in ptx]
    assert not missing
    assert set(_entries(ptx)) == set(DECODE_KERNEL_NAMES)  # every extern "C" kernel is named
    assert ".local" not in ptx
    for name, body in _entries(ptx).items():
        if name.startswith("decode_attention_") and "combine" not in name:
            assert "mma.sync.aligned.m16n8k16" in body and "ld.global.cs.v4.u32" in body  # q·K, 16-byte K/V loads
            assert "bar.sync" in body and "shfl.sync.bfly" in body  # block softmax, row sums


def test_each_decode_kernel_has_a_small_module_of_its_own():
    from gpucal.kernels.decode_src import DECODE_KERNEL_NAMES, decode_module_source

    for name in DECODE_KERNEL_NAMES:
        assert f" {name}(" in decode_module_source(name), name
    for name in ("decode_attention_bf16_d128_g8", "rotary_fp16", "tick"):  # what the backend compiles at first use
        ptx = _nvrtc_ptx(decode_module_source(name), (9, 0))
        assert f".entry {name}(" in ptx and ".local" not in ptx
        assert ptx.count(".entry ") <= 5  # the kernel and its dtype's small ones, not all of them


def test_cupy_backend_overrides_every_decode_and_allreduce_method():
    pytest.importorskip("cupy", reason="CuPy is not installed (pip install 'gpucal[cuda13]')")
    from gpucal.kernels.base import Backend
    from gpucal.kernels.cupy_backend import CupyBackend

    names = ("decode_reason", "attention_splits", "attention_launcher", "add_rmsnorm_launcher", "rotary_launcher",
             "silu_mul_launcher", "tick_launcher", "graph_reason", "graph_launcher", "host_roundtrip_s",
             "allreduce_reason", "allreduce_launcher", "allreduce_graph_launcher", "random_uniform", "gemm_launcher")
    inherited = [n for n in names if getattr(CupyBackend, n) is getattr(Backend, n)]
    assert not inherited
    assert CupyBackend.decode_dtypes == ("fp16", "bf16")
    # every Backend method that only raises NotImplementedError is overridden
    import inspect

    for name, member in inspect.getmembers(Backend, inspect.isfunction):
        source = inspect.getsource(member)
        if source.rstrip().endswith("raise NotImplementedError"):
            assert getattr(CupyBackend, name) is not member, f"CupyBackend does not implement {name}"
