"""Every Numba kernel on the CUDA simulator, at tiny and odd sizes, against its NumPy reference; and the
probes' verify-then-time path, failures included. (The simulator is slow: sizes stay tiny.)"""

from __future__ import annotations

import numpy as np
import pytest

from gpucal.kernels.dtypes import to_float64
from gpucal.kernels.reference import GEMM_MODES, gemm_reference, gemm_tolerance, gemv_reference, check_close
from gpucal.probes import flops, membw


@pytest.mark.parametrize("dtype", ["fp16", "fp32"])
@pytest.mark.parametrize("m,k,batch", [(1, 1, 1), (5, 3, 2), (37, 72, 3), (9, 130, 16)])
def test_gemv_matches_reference(simulator, dtype, m, k, batch):
    w = simulator.random_uniform((m, k), dtype, 1)
    x = simulator.random_uniform((batch, k), dtype, 2)
    y = simulator.to_device(np.full((batch, m), np.nan, dtype=np.float16 if dtype == "fp16" else np.float32))
    simulator.gemv_launcher(w, x, y, batch, dtype)()
    ref, absp = gemv_reference(simulator.to_host(w), simulator.to_host(x), dtype)
    mode = GEMM_MODES["fp16_fp32acc" if dtype == "fp16" else "fp32"]
    check = check_close(to_float64(simulator.to_host(y), dtype), ref, gemm_tolerance(mode, k, absp, ref), "t")
    assert check.ok, check


@pytest.mark.parametrize("dtype_in", ["fp16", "fp32"])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (7, 5, 3), (17, 33, 9), (32, 32, 32)])
def test_tiled_gemm_matches_reference(simulator, dtype_in, m, n, k):
    a = simulator.random_uniform((m, k), dtype_in, 3)
    b = simulator.random_uniform((k, n), dtype_in, 4)
    c = simulator.to_device(np.full((m, n), np.nan, dtype=np.float32))
    mode = "fp16_fp32acc" if dtype_in == "fp16" else "fp32"
    simulator.gemm_launcher(a, b, c, mode)()
    ref, absp = gemm_reference(simulator.to_host(a), simulator.to_host(b), dtype_in)
    gm = GEMM_MODES[mode]
    check_mode = type(gm)(gm.name, gm.dtype_in, "fp32", gm.acc)
    check = check_close(simulator.to_host(c).astype(np.float64), ref, gemm_tolerance(check_mode, k, absp, ref), "t")
    assert check.ok, check


def test_membw_probe_verifies_every_stream_kernel_and_gemv(simulator):
    results = membw.run(simulator, membw.MembwConfig(stream_sizes=(4096 + 16,), batches=(1, 3)))
    assert [r.case for r in results] == ["copy-4112B", "read-4112B", "write-4112B", "triad-4112B", "gemv-fp16-b1",
                                         "gemv-fp16-b3", "gemv-fp32-b1", "gemv-fp32-b3"]
    from gpucal.probes.timing import POLICY_SIMULATOR

    n, (m, k) = 4112, membw.SIM_GEMV_SHAPE
    partial_words = simulator.stream_partials(n // 4)
    declared = {"copy-4112B": (n, n, 0), "read-4112B": (n, 4 * partial_words, 0), "write-4112B": (0, n, 0),
                "triad-4112B": (2 * n, n, 2 * (n // 4))}
    for dtype, size in (("fp16", 2), ("fp32", 4)):
        for batch in (1, 3):  # W and X read once, Y written once, an FMA per weight and row of X
            declared[f"gemv-{dtype}-b{batch}"] = ((m * k + batch * k) * size, batch * m * size, 2 * m * k * batch)
    for r in results:
        assert r.status == "passed", r.reason
        assert r.source == "simulated" and r.check.ok and r.timing.clock == "host"
        assert r.timing.n == POLICY_SIMULATOR.max_samples  # the simulator's policy, not the GPU's
        assert (r.work.bytes_read, r.work.bytes_written, r.work.flop) == declared[r.case]
        assert r.metrics["dram_Bps"] == pytest.approx(sum(declared[r.case][:2]) / r.timing.median_s, rel=1e-12)
        assert r.metrics["efficiency_frac"] is None  # no peak on the simulator
    copy = results[0]
    assert copy.metrics["dram_Bps"] == pytest.approx(2 * copy.metrics["copy_Bps"])


def test_bf16_gemv_is_waived_on_numba_with_the_reason(simulator):
    (r,) = membw.run(simulator, membw.MembwConfig(kernels=("gemv",), dtypes=("bf16",)))
    assert r.status == "waived" and "bf16" in r.reason and r.timing is None


def test_flops_probe_checks_and_labels(simulator):
    results = flops.run(simulator, flops.FlopsConfig(sizes=(11,), decode_batches=(2,), decode_k=13))
    assert [r.case for r in results] == ["gemm-fp32-11x11x11", "gemm-fp32-2x13x13", "gemm-fp16_fp32acc-11x11x11",
                                         "gemm-fp16_fp32acc-2x13x13"]
    assert all(r.status == "passed" for r in results)
    for r in results:  # the Numba GEMM reads fp32 or fp16 operands and stores fp32, whatever the mode
        p, size_in = r.params, 4 if r.params["mode"] == "fp32" else 2
        want = ((p["m"] * p["k"] + p["k"] * p["n"]) * size_in, p["m"] * p["n"] * 4, 2 * p["m"] * p["n"] * p["k"])
        assert (r.work.bytes_read, r.work.bytes_written, r.work.flop) == want, r.case
        assert r.metrics["flops"] == pytest.approx(want[2] / r.timing.median_s, rel=1e-12)
    assert "tiled" in results[0].library
    waived = flops.run(simulator, flops.FlopsConfig(modes=("tf32",)))
    assert waived[0].status == "waived" and "tf32" in waived[0].reason


def test_a_wrong_kernel_fails_verification_and_is_never_timed(simulator, monkeypatch):
    real = simulator.stream_launcher

    def broken(kind, arrays):
        launch = real(kind, arrays)

        def run():
            launch()
            if kind == "copy":  # one word off, after the kernel
                dst = arrays["dst"]
                host = dst.copy_to_host()
                host[5] ^= 1
                dst.copy_to_device(host)
        return run

    monkeypatch.setattr(simulator, "stream_launcher", broken)
    (r,) = membw.run(simulator, membw.MembwConfig(kernels=("copy",), stream_sizes=(1024,)))
    assert r.status == "failed" and r.timing is None and r.metrics == {}
    assert r.check.index == (5,) and r.check.got != r.check.expected and "index (5,)" in r.reason
