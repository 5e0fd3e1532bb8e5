"""Every kernel's declared work (bytes read, bytes written, FLOP), pinned against arithmetic written here
from what each kernel does, for every kernel and dtype; and the rates the probes derive from it, on a
virtual machine whose clock prices each launch by the arrays it touches (not by the declaration), so a
wrong declaration shows up as a wrong figure.

Sizes of an element, written out: fp16 and bf16 2 bytes, fp32 4, fp64 8.
"""

from __future__ import annotations

import pytest

from gpucal.kernels.backend import select
from gpucal.kernels.reference import GEMM_MODES, gemm_work, gemv_work, stream_work
from gpucal.probes import flops, membw

BYTES = {"fp16": 2, "bf16": 2, "fp32": 4, "fp64": 8}
IN_OUT = {"fp64": ("fp64", "fp64"), "fp32": ("fp32", "fp32"), "tf32": ("fp32", "fp32"),
          "fp16_fp32acc": ("fp16", "fp16"), "bf16_fp32acc": ("bf16", "bf16"), "fp16_fp16acc": ("fp16", "fp16")}


def expected_stream(kind: str, n: int, partial_words: int) -> tuple[int, int, int]:
    """(read, written, FLOP) of one call over n bytes per buffer of 4-byte words."""
    return {"copy": (n, n, 0),                      # every word read once, written once
            "read": (n, 4 * partial_words, 0),      # every word read, one 4-byte partial per block written
            "write": (0, n, 0),                     # every word written
            "triad": (2 * n, n, 2 * (n // 4))}[kind]  # a = b + s*c: b and c read, a written; a mul and an add


def expected_gemv(m: int, k: int, batch: int, dtype: str) -> tuple[int, int, int]:
    s = BYTES[dtype]
    return (m * k * s + batch * k * s, batch * m * s, 2 * m * k * batch)  # W and X read, Y written; m·k FMA per row


def expected_gemm(m: int, n: int, k: int, dtype_in: str, dtype_out: str) -> tuple[int, int, int]:
    return ((m * k + k * n) * BYTES[dtype_in], m * n * BYTES[dtype_out], 2 * m * n * k)


def as_tuple(work) -> tuple[int, int, int]:
    return (work.bytes_read, work.bytes_written, work.flop)


@pytest.mark.parametrize("kind", ["copy", "read", "write", "triad"])
@pytest.mark.parametrize("n", [16, 4096, 1 << 20])
def test_stream_work(kind, n):
    partial_words = 3
    assert as_tuple(stream_work(kind, n, 4 * partial_words)) == expected_stream(kind, n, partial_words)


@pytest.mark.parametrize("dtype", ["fp16", "bf16", "fp32"])
@pytest.mark.parametrize("m, k, batch", [(37, 72, 1), (16384, 8192, 1), (1024, 8192, 16), (5, 3, 7)])
def test_gemv_work(dtype, m, k, batch):
    assert as_tuple(gemv_work(m, k, batch, dtype)) == expected_gemv(m, k, batch, dtype)


@pytest.mark.parametrize("mode", list(GEMM_MODES))
@pytest.mark.parametrize("m, n, k", [(8192, 8192, 8192), (1, 8192, 8192), (19, 23, 29)])
def test_gemm_work(mode, m, n, k):
    dtype_in, dtype_out = IN_OUT[mode]
    assert as_tuple(gemm_work(m, n, k, mode)) == expected_gemm(m, n, k, dtype_in, dtype_out)
    # the Numba GEMM stores fp32 whatever the mode: its written bytes follow
    assert as_tuple(gemm_work(m, n, k, mode, "fp32")) == expected_gemm(m, n, k, dtype_in, "fp32")


def test_every_gemm_mode_is_pinned():
    assert set(IN_OUT) == set(GEMM_MODES)


# --- the probes' cases: the work they report and the rates derived from it ---

MACHINE = "virtual:h100-sxm:1"


@pytest.fixture(scope="module")
def virtual():
    return select(MACHINE)


def test_membw_cases_declare_what_their_kernels_move_and_report_the_machines_bandwidth(virtual):
    bw = virtual.machine.devices[0].memory_Bps
    n, (m, k) = 64 << 10, (96, 80)
    results = membw.run(virtual, membw.MembwConfig(stream_sizes=(n,), gemv_shape=(m, k), batches=(1, 3, 16)))
    assert {r.status for r in results} == {"passed"}
    seen = set()
    for r in results:
        if "batch" in r.params:
            want = expected_gemv(m, k, r.params["batch"], r.params["dtype"])
            seen.add(("gemv", r.params["dtype"]))
        else:
            kind = r.case.split("-")[0]
            want = expected_stream(kind, n, virtual.stream_partials(n // 4))  # the partials the kernel writes
            seen.add((kind, None))
        assert as_tuple(r.work) == want, r.case
        assert r.metrics["dram_Bps"] == pytest.approx((want[0] + want[1]) / r.timing.median_s, rel=1e-12)
        # the virtual clock prices each launch by the bytes it touches: the machine's bandwidth comes back
        assert r.metrics["dram_Bps"] == pytest.approx(bw, rel=1e-9), r.case
    assert seen == {("copy", None), ("read", None), ("write", None), ("triad", None),
                    ("gemv", "fp16"), ("gemv", "bf16"), ("gemv", "fp32")}
    copy = next(r for r in results if r.case.startswith("copy"))
    assert copy.metrics["copy_Bps"] == pytest.approx(n / copy.timing.median_s, rel=1e-12)


def test_flops_cases_declare_what_their_gemms_do_and_report_the_machines_rates(virtual):
    rates = virtual.machine.devices[0].flops
    results = flops.run(virtual, flops.FlopsConfig(sizes=(2048,), decode_batches=(2,), decode_k=256))
    assert results and {r.status for r in results} == {"passed"}
    assert {r.params["mode"] for r in results} == set(virtual.gemm_modes())
    for r in results:
        p = r.params
        dtype_in, dtype_out = IN_OUT[p["mode"]]
        want = expected_gemm(p["m"], p["n"], p["k"], dtype_in, dtype_out)
        assert as_tuple(r.work) == want, r.case
        assert r.metrics["flops"] == pytest.approx(want[2] / r.timing.median_s, rel=1e-12)
        if p["m"] == 2048:  # the square size is compute-bound on this machine: its FLOP/s comes back
            rate = rates["fp64_tensor"] if p["mode"] == "fp64" else rates[p["mode"]]  # cuBLAS runs DGEMM on tensor cores
            assert r.metrics["flops"] == pytest.approx(rate, rel=1e-9), r.case
