"""The copy probes on a real GPU through CuPy: every path and engine at odd and tiny sizes, byte for byte, and the
blocked start across streams. Between devices only where the machine has two."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu

SIZES = (4, 7, 4096, 1 << 20, (4 << 20) * 2 + 3)  # the last spans three staging chunks, odd on purpose


def _config(**kw):
    from gpucal.probes.links import LinkConfig

    return LinkConfig(sizes=SIZES, budget_s=0.05, **kw)


def _all_passed(results):
    bad = [(r.case, r.status, r.reason) for r in results if r.status != "passed"]
    assert results and not bad, bad


def test_host_link_every_engine_and_memory(cupy_backend):
    from gpucal.probes.links import run_host_link

    results = run_host_link(cupy_backend, _config(devices=(0,)))
    _all_passed(results)
    kinds = {(r.params["path"], r.params["engine"], r.params["memory"]) for r in results}
    assert kinds >= {("h2d", "ce", "pinned"), ("h2d", "ce", "pageable"), ("h2d", "sm", "pinned"),
                     ("d2h", "ce", "pinned"), ("d2h", "ce", "pageable"), ("d2h", "sm", "pinned")}
    big = [r for r in results if r.params["bytes"] == SIZES[-1] and r.params["direction"] == "one-way"]
    assert all(r.metrics["link_Bps"] > 1e9 for r in big)  # a PCIe or C2C link, not a cache
    load = next(r.params["pcie_under_load"] for r in results if "pcie_under_load" in r.params)
    assert set(load) == {"generation", "width"}


def test_d2d_and_latency(cupy_backend):
    from gpucal.probes.latency import run_latency
    from gpucal.probes.links import LinkConfig, run_d2d

    _all_passed(run_d2d(cupy_backend, _config(devices=(0,))))
    results = run_latency(cupy_backend, LinkConfig(devices=(0,), latency_sizes=(4, 65536), budget_s=0.05, pairs=()))
    _all_passed(results)
    oneshot = [r.timing.median_s for r in results if r.params["latency"] == "oneshot"]
    assert all(1e-7 < t < 1e-2 for t in oneshot)


def test_blocked_start_times_two_directions_together(cupy_backend):
    import numpy as np

    b = cupy_backend
    n = 64 << 20
    h_src, d_dst = b.alloc("pinned", n, 0), b.alloc("device", n, 0)
    d_src, h_dst = b.alloc("device", n, 0), b.alloc("pinned", n, 0)
    data = np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8)
    b.write(h_src, data)
    b.write(d_src, data)
    ops = [b.copy_op("h2d", "ce", h_src, d_dst, n), b.copy_op("d2h", "ce", d_src, h_dst, n)]
    t_h2d, t_d2h = b.time_ops(ops, 2)
    assert t_h2d > 0 and t_d2h > 0
    assert np.array_equal(b.read(d_dst, n), data) and np.array_equal(b.read(h_dst, n), data)


def test_between_two_devices(cupy_backend):
    from gpucal.probes.links import run_peer

    if cupy_backend.device_count() < 2:
        pytest.skip("one device: no pair to copy between")
    results = run_peer(cupy_backend, _config(pairs=((0, 1),)))
    _all_passed([r for r in results if r.status != "waived"])
    assert {r.params["path"] for r in results if r.status == "passed"} >= {"driver-staged", "host-staged"}
