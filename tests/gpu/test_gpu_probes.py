"""The real backends on a real GPU: every kernel verified at small and odd sizes, the device facts, the
blocked-start gate. Sizes stay small: the bandwidth figures themselves come from bench/gpu_check.py."""

from __future__ import annotations

import os

import pytest

from gpucal.probes import flops, membw

pytestmark = pytest.mark.gpu

SMALL = membw.MembwConfig(stream_sizes=(1 << 20, 16 * 1000), gemv_shape=(1000, 4096), batches=(1, 3, 16),
                          budget_s=0.2)


def _all_passed(results):
    bad = [(r.case, r.status, r.reason) for r in results if r.status != "passed"]
    assert not bad, bad
    assert all(r.source == "measured" and r.timing.n >= 3 and r.timing.median_s > 0 for r in results)


def test_device_facts(cupy_backend):
    d = cupy_backend.device()
    assert d.name and d.compute_capability and d.sm_count > 0 and d.memory_bytes > 1 << 30 and d.l2_bytes > 0
    assert d.theoretical_memory_Bps and d.theoretical_memory_Bps > 1e11
    assert d.uuid and d.uuid.startswith("GPU-")


def test_cupy_membw_small(cupy_backend):
    results = membw.run(cupy_backend, SMALL)
    _all_passed(results)
    assert {r.params.get("dtype") for r in results if r.case.startswith("gemv")} == {"fp16", "bf16", "fp32"}


def test_cupy_flops_every_mode(cupy_backend):
    results = flops.run(cupy_backend, flops.FlopsConfig(sizes=(257,), decode_batches=(3,), decode_k=512, budget_s=0.2))
    _all_passed(results)
    assert {r.params["mode"] for r in results} == {"fp64", "fp32", "tf32", "fp16_fp32acc", "bf16_fp32acc",
                                                   "fp16_fp16acc"}
    assert all("cuBLAS" in r.library for r in results)


def test_blocked_start_holds_copies_until_released_and_reports_a_timeout(cupy_backend):
    import time

    import cupy

    from gpucal.errors import GpucalError
    from gpucal.kernels.cupy_backend import BlockedStart

    gate = BlockedStart(cupy_backend)
    src = cupy.arange(1 << 20, dtype=cupy.uint32)
    dst = cupy.zeros_like(src)
    cupy.cuda.get_current_stream().synchronize()
    gate.arm()
    cupy.copyto(dst, src)  # queued behind the spin kernel
    done = cupy.cuda.Event()
    done.record()
    time.sleep(0.05)
    assert not done.done  # held by the gate
    gate.release()
    done.synchronize()
    gate.check()
    assert bool((dst == src).all())
    short = BlockedStart(cupy_backend, timeout_s=0.01)
    short.arm()
    cupy.cuda.get_current_stream().synchronize()
    with pytest.raises(GpucalError, match="timed out"):
        short.check()


@pytest.fixture(scope="module")
def numba_gpu(request):
    """The ``numba`` backend on the GPU, or a skip with the backend's own reason (numba-cuda missing, no
    driver, a test kernel that cannot compile with this NumPy); a failure instead under
    GPUCAL_REQUIRE_NUMBA=1, as bench/device_check.sh sets it: there numba must run, on the NumPy it carries."""
    try:
        return request.getfixturevalue("numba_backend")
    except pytest.skip.Exception as exc:
        if os.environ.get("GPUCAL_REQUIRE_NUMBA") == "1":
            pytest.fail(f"GPUCAL_REQUIRE_NUMBA=1 but the numba backend cannot run here ({exc.msg})")
        raise


def test_numba_membw_small(numba_gpu):
    assert numba_gpu.name == "numba" and not numba_gpu.simulated and numba_gpu.clock == "cuda-events"
    results = membw.run(numba_gpu, membw.MembwConfig(stream_sizes=(1 << 20, 16 * 1000 + 4), gemv_shape=(1000, 4096),
                                                     batches=(1, 5, 16), budget_s=0.2))
    _all_passed(results)
    kinds = [r.case.split("-")[0] for r in results if not r.case.startswith("gemv")]
    assert kinds == ["copy", "read", "write", "triad"] * 2
    assert [(r.params["dtype"], r.params["batch"]) for r in results if r.case.startswith("gemv")] == [
        ("fp16", 1), ("fp16", 5), ("fp16", 16), ("fp32", 1), ("fp32", 5), ("fp32", 16)]
    assert all(r.timing.clock == "cuda-events" and "numba" in r.library for r in results)


def test_numba_flops_small(numba_gpu):
    _all_passed(flops.run(numba_gpu, flops.FlopsConfig(sizes=(100,), decode_batches=(2,), decode_k=256,
                                                        budget_s=0.2)))
