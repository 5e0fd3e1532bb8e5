"""The copy probes, fits and verdicts end to end on virtual machines (NumPy moves the bytes; the clock is
the profile's): every probe runs, the fits give back the machine's α and β, and each verdict comes out for
the machine built to produce it."""

from __future__ import annotations

import importlib

import pytest

from gpucal.calibrate.links import find, oneshot_alpha, series_fits
from gpucal.calibrate.verdict import pair_verdict, pcie_load_of
from gpucal.errors import InputError
from gpucal.kernels.backend import Backend, select
from gpucal.kernels.links import CopyOp
from gpucal.probes import copies, flops, latency, links, membw
from gpucal.probes.registry import all_probes
from gpucal.probes.topology import read_topology

SMALL = links.LinkConfig(sizes=links.sweep_sizes(4, 1 << 20)[::3], budget_s=0.2)
# Sweep for the fits: powers of 2 from 4 B to 16 MiB, as a probe would run on this machine.
FIT = links.LinkConfig(sizes=links.sweep_sizes(4, 16 << 20), engines=("ce",), memory=("pinned",))


def test_every_probe_runs_on_a_virtual_machine():
    backend = select("virtual:h100-sxm:2+noise=0.02")
    assert set(all_probes()) >= {"membw", "flops", "host-link", "d2d", "peer", "latency"}
    results = membw.run(backend, membw.MembwConfig(batches=(1, 4))) + flops.run(backend, flops.FlopsConfig(
        decode_batches=(1,)))
    results += links.run_host_link(backend, SMALL) + links.run_d2d(backend, SMALL) + links.run_peer(backend, SMALL)
    results += latency.run_latency(backend, links.LinkConfig(latency_sizes=(4, 4096), budget_s=0.1))
    assert results and all(r.status == "passed" for r in results), [r.reason for r in results if r.status != "passed"]
    assert all(r.source == "simulated" for r in results)
    probes = {r.probe for r in results}
    assert probes == {"membw", "flops", "host-link", "d2d", "peer", "latency"}
    paths = {(r.params["path"], r.params["engine"]) for r in results if "path" in r.params}
    assert paths >= {("h2d", "ce"), ("h2d", "sm"), ("d2h", "ce"), ("d2h", "sm"), ("d2d", "ce"), ("d2d", "sm"),
                     ("p2p", "ce"), ("p2p", "sm-read"), ("p2p", "sm-write"), ("driver-staged", "ce"),
                     ("host-staged", "staged")}
    memories = {r.params.get("memory") for r in results if r.probe == "host-link"}
    assert memories == {"pinned", "pageable"}
    assert {r.params["latency"] for r in results if r.probe == "latency"} == {"oneshot", "b2b", "enqueue"}


def test_bidirectional_cases_report_each_direction_and_the_sum():
    backend = select("virtual:h100-sxm:2")
    results = links.run_peer(backend, SMALL)
    bi = [r for r in results if r.params.get("direction") == "bi"]
    assert {r.params["path"] for r in bi} == {"p2p", "host-staged"}
    for r in bi:
        m, n = r.metrics, r.params["bytes"]
        assert m["sum_Bps"] == pytest.approx(m["fwd_Bps"] + m["rev_Bps"])
        assert m["union_Bps"] == pytest.approx(2 * n / r.timing.median_s)
        assert "per direction" not in r.byte_convention and "sum_Bps" in r.byte_convention


def test_every_copied_byte_is_checked_and_a_corrupt_copy_gives_no_number():
    backend = select("virtual:rtx4090:2+p2p=corrupt")
    results = links.run_peer(backend, SMALL)
    p2p = [r for r in results if r.params.get("path") == "p2p"]
    assert p2p and all(r.status == "failed" and r.timing is None and not r.metrics for r in p2p)
    assert all("bytes differ" in r.reason for r in p2p)
    staged = [r for r in results if r.params.get("path") in ("driver-staged", "host-staged")]
    assert staged and all(r.status == "passed" and r.check.checked == r.params["bytes"] for r in staged)


@pytest.mark.parametrize("spec", ["virtual:rtx4090:2+noise=0.05+seed=1", "virtual:h100-sxm:2+noise=0.05+seed=2"])
def test_fits_recover_alpha_and_beta_within_2_percent_under_5_percent_noise(spec):
    backend = select(spec)
    machine = backend.machine
    results = links.run_host_link(backend, FIT) + links.run_peer(backend, FIT)
    fits = series_fits(results)
    expected = {
        ("h2d", 0, 0): machine.devices[0].h2d,
        ("d2h", 0, 0): machine.devices[0].d2h,
        ("driver-staged", 0, 1): machine.staged(0, 1, driver=True),
    }
    if machine.peer(0, 1).kind != "none":
        expected[("p2p", 0, 1)] = machine.peer(0, 1).model
    for (path, src, dst), model in expected.items():
        (fit,) = find(fits, path, src, dst, engine="ce")
        assert fit.verified and fit.fit is not None
        assert fit.fit.beta_Bps == pytest.approx(model.beta_Bps, rel=0.02), path
        # blocked-start copies back to back: the device-side (pipelined) latency
        assert fit.fit.alpha_s == pytest.approx(model.alpha_pipelined_s, rel=0.02), path
        assert fit.fit.r2 > 0.99


def test_the_one_shot_latency_recovers_the_profiles_alpha():
    backend = select("virtual:rtx4090:2+noise=0.05+seed=3")
    cfg = links.LinkConfig(devices=(0,), pairs=(), budget_s=0.5)
    results = latency.run_latency(backend, cfg)
    model = backend.machine.devices[0].h2d
    alpha = oneshot_alpha(results, "h2d-ce-pinned-dev0", model.beta_Bps)
    assert alpha == pytest.approx(model.alpha_s, rel=0.02)
    enqueue = [r for r in results if r.params["latency"] == "enqueue"]
    assert all(r.timing.median_s < model.alpha_s for r in enqueue)


@pytest.mark.parametrize("spec, verdict, flags", [
    ("virtual:rtx4090:2", "host-staged", ()),                  # the RTX 4090: no P2P on stock drivers
    ("virtual:h100-sxm:8", "nvlink", ()),
    ("virtual:rtx4090:2+p2p=corrupt", "p2p-corrupt", ()),      # P2P reported and enabled, the bytes differ
    ("virtual:rtx4090:2+p2p=slow", "p2p-slower-than-staged", ()),  # resizable BAR off
    ("virtual:rtx4090:2+p2p=on", "p2p-pcie", ()),
    ("virtual:rtx4090:2+downtrain=1:3:8", "host-staged", ("downtrained",)),
])
def test_each_verdict_comes_out_for_the_machine_built_to_produce_it(spec, verdict, flags):
    backend = select(spec)
    cfg = links.LinkConfig(sizes=links.sweep_sizes(4, 4 << 20)[::2], engines=("ce", "staged"), memory=("pinned",),
                           pairs=((0, 1),), budget_s=0.2)
    results = links.run_host_link(backend, links.LinkConfig(**{**cfg.__dict__, "devices": (0, 1)})) + \
        links.run_peer(backend, cfg)
    fits = series_fits(results)
    topology = read_topology(backend)
    for src, dst in ((0, 1), (1, 0)):
        v = pair_verdict(src, dst, backend.can_access_peer(src, dst), topology, fits, pcie_load_of(results))
        assert (v.verdict, v.flags) == (verdict, flags), v.reasons


def test_single_device_has_no_pairs_and_bad_pairs_are_refused():
    backend = select("virtual:rtx4090:1")
    assert backend.device_count() == 1
    assert "one device" in links.applicable_pairs(backend)
    with pytest.raises(InputError, match="--pairs"):
        links.run_peer(select("virtual:rtx4090:2"), links.LinkConfig(pairs=((0, 2),)))
    with pytest.raises(InputError, match="--devices"):
        links.run_d2d(backend, links.LinkConfig(devices=(3,)))


def test_the_numba_simulator_says_it_has_no_copy_probes():
    assert "no copy probes" in Backend().links_reason()


def test_a_warm_up_slowdown_stays_out_of_the_numbers():
    backend = select("virtual:rtx4090:2+warmup=3")
    r = links.run_host_link(backend, links.LinkConfig(sizes=(1 << 20,), devices=(0,), memory=("pinned",),
                                                      engines=("ce",), bidirectional_sizes=()))[0]
    model = backend.machine.devices[0].h2d
    assert r.timing.median_s == pytest.approx(model.pipelined_s(1 << 20), rel=1e-9)
    assert r.metrics["link_Bps"] == pytest.approx((1 << 20) / model.pipelined_s(1 << 20), rel=1e-9)


LINK_METHODS = ("alloc", "write", "read", "can_access_peer", "set_peer_access", "copy_op", "run_op", "time_ops",
                "time_back_to_back", "time_oneshot", "time_enqueue", "links_reason")


@pytest.mark.parametrize("module, cls", [("gpucal.kernels.virtual", "VirtualBackend"),
                                         ("gpucal.kernels.cupy_backend", "CupyBackend")])
def test_backends_with_copy_probes_implement_every_link_method(module, cls):

    klass = getattr(importlib.import_module(module), cls)  # CuPy imports without a GPU
    missing = [m for m in LINK_METHODS if getattr(klass, m) is getattr(Backend, m)]
    assert not missing


class _TimedCopiesWriteNothing:
    """A virtual machine whose clocks price copies without moving a byte: a probe that does not poison the
    destination before the timed window would still find the verification copy's bytes there."""

    def __init__(self, backend):
        self._backend = backend

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def _priced(self, how, op, k, seconds):
        return self._backend._clock.sample(self._backend._key(op, how), k * seconds)

    def time_ops(self, ops, k):
        return [self._priced("ops", op, k, self._backend._copy_s(op)) for op in ops]

    def time_oneshot(self, op, k):
        return self._priced("oneshot", op, k, self._backend._copy_s(op, oneshot=True))

    def time_back_to_back(self, op, k):
        return self._priced("b2b", op, k, self._backend._copy_s(op))

    def time_enqueue(self, op, k):
        return self._priced("enqueue", op, k, 1e-6)


def test_a_timed_copy_that_writes_nothing_fails_after_timing():
    backend = _TimedCopiesWriteNothing(select("virtual:rtx4090:2"))
    cfg = links.LinkConfig(sizes=(4096, 1 << 20), devices=(0,), memory=("pinned",), engines=("ce",),
                           pairs=((0, 1),), latency_sizes=(64,), budget_s=0.1)
    results = links.run_host_link(backend, cfg) + latency.run_latency(backend, cfg)
    assert {r.probe for r in results} == {"host-link", "latency"}
    for r in results:
        assert r.status == "failed" and r.timing is None and not r.metrics, r.case
        assert "after timing" in r.reason and f"{r.params['bytes']} of {r.params['bytes']} bytes differ" in r.reason


def test_pageable_memory_has_no_bidirectional_case_and_gated_copies_stay_gated():
    backend = select("virtual:rtx4090:1")
    results = links.run_host_link(backend, links.LinkConfig(sizes=(1 << 20,), budget_s=0.1))
    bi = [r for r in results if r.params.get("direction") == "bi"]
    assert [r.params["memory"] for r in bi] == ["pinned"]
    assert bi[0].params["clock"] == links.CLOCKS["ops"]
    # asked directly, a pageable pair is waived with the reason, never timed as if concurrent
    src = copies.Source(backend, backend.alloc("pageable", 64, 0), 1)
    dev = copies.Source(backend, backend.alloc("device", 64, 0), 2)
    ops = [backend.copy_op("h2d", "ce", src.buf, backend.alloc("device", 64, 0), 64),
           backend.copy_op("d2h", "ce", dev.buf, backend.alloc("pageable", 64, 0), 64)]
    r = links.copy_case(backend, "host-link", ops, [src, dev], copies.copy_policy(backend, links.LinkConfig()))
    assert r.status == "waived" and "cannot start together" in r.reason and r.timing is None


def test_k_never_exceeds_what_the_gate_holds():
    class Limited(_TimedCopiesWriteNothing):
        seen: list = []

        def max_gated_k(self, ops):
            return 3

        def time_ops(self, ops, k):
            self.seen.append(k)
            return self._backend.time_ops(ops, k)

    backend = Limited(select("virtual:rtx4090:1"))
    r = links.run_host_link(backend, links.LinkConfig(sizes=(4,), devices=(0,), memory=("pinned",), engines=("ce",),
                                                      bidirectional_sizes=(), budget_s=0.1))[0]
    assert r.status == "passed" and r.timing.k == 3 and max(Limited.seen) == 3


def test_a_copy_the_gate_cannot_hold_is_waived_not_timed_ungated():
    class Full(_TimedCopiesWriteNothing):
        def max_gated_k(self, ops):
            return 0

    backend = Full(select("virtual:rtx4090:1"))
    results = links.run_host_link(backend, links.LinkConfig(sizes=(1 << 20,), devices=(0,), memory=("pinned",),
                                                            engines=("ce",), bidirectional_sizes=()))
    assert [r.params["path"] for r in results] == ["h2d", "d2h"]
    assert all(r.status == "waived" and r.timing is None and "blocked start" in r.reason for r in results)


def test_the_cupy_gate_limit_counts_the_commands_each_copy_queues():
    from gpucal.kernels.cupy_links import MAX_GATED_COMMANDS, CupyLinks

    def op(commands):
        return CopyOp("host-staged", "staged", None, None, 1, 0, {"commands": commands})

    limit = CupyLinks.max_gated_k
    assert limit(None, [op(3)]) == MAX_GATED_COMMANDS // 3
    assert limit(None, [op(3), op(192)]) == MAX_GATED_COMMANDS // 192  # the op queuing the most decides
    assert limit(None, [op(MAX_GATED_COMMANDS + 1)]) == 0
    assert limit(None, [CopyOp("h2d", "ce", None, None, 1, 0, {})]) == MAX_GATED_COMMANDS  # one command a copy
