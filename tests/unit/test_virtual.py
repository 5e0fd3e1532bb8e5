"""The virtual backend: spec parsing, the machine built from a profile, the virtual clock and its faults,
and copies that really move bytes along every path and engine."""

from __future__ import annotations

import numpy as np
import pytest
from gpucal.kernels.links import ENGINES, STAGING_CHUNK_BYTES
from gpucal.standards import pcie_Bps
from gpucal.kernels.virtual import VirtualBackend
from gpucal.kernels.virtual_machine import (
    ALPHA_S,
    NVLINK_EFFICIENCY,
    Faults,
    VirtualMachine,
    parse_spec,
)

from gpucal.errors import GpucalError, InputError
from gpucal.profiles import load_builtin

MiB = 1 << 20


def machine(name: str, count: int | None = None, faults: Faults | None = None) -> VirtualMachine:
    return VirtualMachine(load_builtin("profile", name).profile, name, count, faults or Faults())


def rand_bytes(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


# --- parse_spec ---------------------------------------------------------------------------------------


def test_parse_spec_profile_only():
    profile, count, faults = parse_spec("virtual:rtx4090")
    assert (profile, count, faults) == ("rtx4090", None, Faults())


def test_parse_spec_with_count():
    assert parse_spec("virtual:rtx4090:8")[:2] == ("rtx4090", 8)


def test_parse_spec_with_options():
    profile, count, faults = parse_spec("virtual:h100-sxm:8+noise=0.05+seed=3")
    assert (profile, count) == ("h100-sxm", 8)
    assert faults.noise_frac == 0.05 and faults.seed == 3
    assert faults.outlier_frac == 0.0 and faults.warmup_runs == 0 and faults.p2p is None


def test_parse_spec_p2p_corrupt():
    assert parse_spec("virtual:rtx4090+p2p=corrupt")[2].p2p == "corrupt"


@pytest.mark.parametrize("mode", ["on", "off", "corrupt", "slow"])
def test_parse_spec_every_p2p_mode(mode):
    assert parse_spec(f"virtual:rtx4090:2+p2p={mode}")[2].p2p == mode


def test_parse_spec_downtrain_twice():
    faults = parse_spec("virtual:rtx4090:4+downtrain=1:3:8+downtrain=2:4:4")[2]
    assert faults.downtrain == ((1, 3, 8), (2, 4, 4))


@pytest.mark.parametrize("mode", ["local", "remote"])
def test_parse_spec_numa(mode):
    assert parse_spec(f"virtual:h100-sxm:8+numa={mode}")[2].numa == mode
    assert parse_spec("virtual:h100-sxm:8")[2].numa == "local"


def test_parse_spec_outliers_and_warmup():
    faults = parse_spec("virtual:l40s+outliers=0.1+warmup=3")[2]
    assert faults.outlier_frac == 0.1 and faults.warmup_runs == 3


@pytest.mark.parametrize("spec", [
    "virtual:",
    "virtual",
    "virtual::8",
    "virtual:rtx4090:0",
    "virtual:rtx4090+foo=1",
    "virtual:rtx4090+p2p=bogus",
    "virtual:rtx4090+noise=1.5",
    "virtual:rtx4090+noise=-0.1",
    "virtual:rtx4090+outliers=1",
    "virtual:rtx4090+seed=-1",
    "virtual:rtx4090+warmup=x",
    "virtual:rtx4090+downtrain=1:9:16",
    "virtual:rtx4090+downtrain=1:4:3",
    "virtual:rtx4090+downtrain=-1:4:8",
    "virtual:rtx4090+downtrain=x",
    "virtual:rtx4090+downtrain=1:4",
    "virtual:rtx4090+numa=far",
    "virtual:rtx4090+numa=",
])
def test_parse_spec_refuses_bad_specs(spec):
    with pytest.raises(InputError) as info:
        parse_spec(spec)
    message = str(info.value)
    assert message.startswith("--backend")
    assert "\n" not in message
    assert spec in message


def test_parse_spec_bad_option_names_the_expected_values():
    with pytest.raises(InputError, match="on, off, corrupt or slow"):
        parse_spec("virtual:rtx4090+p2p=bogus")
    with pytest.raises(InputError, match="DEV:GEN:WIDTH"):
        parse_spec("virtual:rtx4090+downtrain=x")
    with pytest.raises(InputError, match=r"\[0, 1\)"):
        parse_spec("virtual:rtx4090+noise=1.5")
    with pytest.raises(InputError, match="at least 1"):
        parse_spec("virtual:rtx4090:0")
    with pytest.raises(InputError, match="local or remote"):
        parse_spec("virtual:rtx4090+numa=far")


def test_parse_spec_unknown_option_says_unknown():
    with pytest.raises(InputError, match="unknown option 'foo'"):
        parse_spec("virtual:rtx4090+foo=1")


def test_parse_spec_unknown_option_lists_every_option():
    with pytest.raises(InputError) as info:
        parse_spec("virtual:rtx4090+foo=1")
    for name in ("noise", "outliers", "warmup", "seed", "p2p", "downtrain", "numa"):
        assert name in str(info.value)


# --- pcie_Bps -----------------------------------------------------------------------------------------


def test_pcie_rates():
    assert pcie_Bps(4, 16) == pytest.approx(16e9 * 128 / 130 * 16 / 8, rel=1e-12)
    assert pcie_Bps(3, 16) == pytest.approx(15.75e9, rel=1e-3)
    assert pcie_Bps(5, 16) == pytest.approx(63.0e9, rel=1e-3)
    assert pcie_Bps(1, 1) == pytest.approx(2.5e9 * 0.8 / 8, rel=1e-12)
    assert pcie_Bps(4, 8) == pytest.approx(pcie_Bps(4, 16) / 2, rel=1e-12)


# --- VirtualMachine -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rtx4090", "h100-sxm", "l40s", "a100-sxm-80gb"])
def test_default_count_of_a_one_card_profile_is_two(name):
    m = machine(name)
    assert m.count == 2 and len(m.devices) == 2
    assert m.devices[0].name == load_builtin("profile", name).data["devices"][0]["name"]


def test_explicit_count_and_numa_split():
    m = machine("rtx4090", 8)
    assert m.count == 8 and m.sockets == 2
    assert [d.numa_node for d in m.devices] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert machine("rtx4090", 2).sockets == 1


def test_rtx4090_has_no_peer_path():
    m = machine("rtx4090")
    peer = m.peer(0, 1)
    assert peer.kind == "none" and peer.model is None and not peer.corrupt


def test_l40s_peer_support_unknown_means_none():
    assert machine("l40s").peer(0, 1).kind == "none"


def _with_nvlink_bandwidth(name: str, bandwidth_Bps: float, count: int = 2) -> VirtualMachine:
    profile = load_builtin("profile", name).data
    entry = dict(profile["devices"][0])
    entry["peer_link"] = dict(entry["peer_link"], bandwidth_Bps={"value": bandwidth_Bps, "source": "estimate"})
    return VirtualMachine(dict(profile, devices=[entry]), f"{name}-edited", count)


def test_h100_peer_is_nvlink_and_follows_the_profiles_bandwidth():
    peer = machine("h100-sxm", 8).peer(0, 5)
    assert peer.kind == "nvlink" and not peer.corrupt
    assert peer.nvlink_links == 18  # 450 GB/s at 25 GB/s per link and direction (the datasheet's 18 links)
    assert 0.5 * 450e9 < peer.model.beta_Bps < 450e9  # a copy reaches most of the link, never all of it
    half = _with_nvlink_bandwidth("h100-sxm", 225e9).peer(0, 1)
    assert half.nvlink_links == 9 and half.model.beta_Bps == pytest.approx(peer.model.beta_Bps / 2, rel=1e-12)
    assert half.model.alpha_s == peer.model.alpha_s


def test_a100_peer_is_nvlink_with_12_links():
    peer = machine("a100-sxm-80gb").peer(1, 0)
    assert peer.kind == "nvlink" and peer.nvlink_links == 12
    two_thirds = _with_nvlink_bandwidth("a100-sxm-80gb", 200e9).peer(1, 0)
    assert two_thirds.nvlink_links == 8
    assert two_thirds.model.beta_Bps == pytest.approx(peer.model.beta_Bps * 2 / 3, rel=1e-12)


def test_p2p_on_gives_pcie_peer():
    m = machine("rtx4090", faults=Faults(p2p="on"))
    peer = m.peer(0, 1)
    assert peer.kind == "pcie" and peer.nvlink_links == 0 and not peer.corrupt
    assert peer.model.beta_Bps == pytest.approx(m.devices[0].d2h.beta_Bps, rel=1e-12)


def test_p2p_off_disables_nvlink():
    assert machine("h100-sxm", faults=Faults(p2p="off")).peer(0, 1).kind == "none"


@pytest.mark.parametrize("name", ["rtx4090", "h100-sxm"])
def test_p2p_slow_is_below_staged(name):
    m = machine(name, faults=Faults(p2p="slow"))
    peer = m.peer(0, 1)
    assert peer.kind == "pcie"
    assert peer.model.beta_Bps < m.staged(0, 1, driver=False).beta_Bps
    assert peer.model.beta_Bps < m.staged(0, 1, driver=True).beta_Bps


def test_p2p_corrupt_marks_the_peer():
    assert machine("rtx4090", faults=Faults(p2p="corrupt")).peer(0, 1).corrupt
    assert machine("h100-sxm", faults=Faults(p2p="corrupt")).peer(0, 1).corrupt


def test_host_link_beta_from_pcie_rate():
    d = machine("rtx4090").devices[0]
    assert (d.pcie_generation, d.pcie_width, d.pcie_generation_max, d.pcie_width_max) == (4, 16, 4, 16)
    assert 0.5 * pcie_Bps(4, 16) < d.h2d.beta_Bps < pcie_Bps(4, 16)  # DMA reaches most of the PCIe rate
    assert d.d2h.beta_Bps == d.h2d.beta_Bps
    h100 = machine("h100-sxm").devices[0]
    assert h100.h2d.beta_Bps == pytest.approx(2 * d.h2d.beta_Bps, rel=1e-12)  # Gen5 x16 moves twice Gen4 x16


def test_downtrained_device_scales_its_host_link():
    m = machine("rtx4090", faults=Faults(downtrain=((1, 3, 8),)))
    d0, d1 = m.devices
    assert (d1.pcie_generation, d1.pcie_width) == (3, 8)
    assert (d1.pcie_generation_max, d1.pcie_width_max) == (4, 16)
    assert (d0.pcie_generation, d0.pcie_width) == (4, 16)
    scale = pcie_Bps(3, 8) / pcie_Bps(4, 16)
    assert d1.h2d.beta_Bps == pytest.approx(d0.h2d.beta_Bps * scale, rel=1e-12)
    assert d1.d2h.beta_Bps == pytest.approx(d0.d2h.beta_Bps * scale, rel=1e-12)
    assert m.staged(0, 1, driver=False).beta_Bps == pytest.approx(d1.h2d.beta_Bps, rel=1e-12)


def test_measured_host_link_is_used_and_scaled_by_downtrain():
    profile = load_builtin("profile", "rtx4090").data
    entry = dict(profile["devices"][0])
    entry["host_link"] = dict(entry["host_link"], h2d={"alpha_s": {"value": 7e-6, "source": "estimate"},
                                                         "beta_Bps": {"value": 20e9, "source": "estimate"}})
    doc = dict(profile, devices=[entry])
    m = VirtualMachine(doc, "custom", 2, Faults(downtrain=((1, 4, 8),)))
    assert m.devices[0].h2d.alpha_s == 7e-6
    assert m.devices[0].h2d.beta_Bps == pytest.approx(20e9)
    assert m.devices[1].h2d.beta_Bps == pytest.approx(10e9)
    assert m.devices[0].d2h.beta_Bps == machine("rtx4090").devices[0].d2h.beta_Bps  # d2h keeps the PCIe default


def test_downtrain_of_a_missing_device_is_refused():
    with pytest.raises(InputError, match="downtrain names device 2"):
        machine("rtx4090", faults=Faults(downtrain=((2, 3, 8),)))
    with pytest.raises(InputError, match=r"^--backend"):
        VirtualBackend.from_spec("virtual:rtx4090:2+downtrain=5:3:8")


# --- VirtualBackend -----------------------------------------------------------------------------------


def test_from_spec_backend_facts():
    b = VirtualBackend.from_spec("virtual:h100-sxm:4")
    assert b.simulated is True
    assert b.clock == "virtual"
    assert b.name == "virtual:h100-sxm:4"
    assert b.device_count() == 4
    devices = b.devices()
    assert [d.index for d in devices] == [0, 1, 2, 3]
    assert {d.name for d in devices} == {load_builtin("profile", "h100-sxm").data["devices"][0]["name"]}
    assert len({d.pci_bus_id for d in devices}) == 4
    assert len({d.uuid for d in devices}) == 4


def test_from_spec_unknown_profile_and_device():
    with pytest.raises(InputError, match="^--backend"):
        VirtualBackend.from_spec("virtual:no-such-card")
    with pytest.raises(InputError, match="^--device"):
        VirtualBackend.from_spec("virtual:rtx4090:2", device=2)


def h2d_op(b: VirtualBackend, nbytes: int = MiB, memory: str = "pinned", device: int = 0):
    src = b.alloc(memory, nbytes, device)
    dst = b.alloc("device", nbytes, device)
    return b.copy_op("h2d", "ce", src, dst, nbytes)


def test_noise_free_timing_is_exact():
    b = VirtualBackend.from_spec("virtual:rtx4090:2")
    op = h2d_op(b)
    dev = b.machine.devices[0]
    alpha, beta = dev.h2d.alpha_s, dev.h2d.beta_Bps
    pipelined = dev.h2d.alpha_pipelined_s
    assert 0 < pipelined < alpha  # copies back to back hide part of the latency of one waited for
    for _ in range(3):
        assert b.time_oneshot(op, 4) == pytest.approx(4 * (alpha + MiB / beta), rel=1e-12)
    assert b.time_ops([op], 4)[0] == pytest.approx(4 * (pipelined + MiB / beta), rel=1e-12)
    assert b.time_back_to_back(op, 2) == pytest.approx(2 * (pipelined + MiB / beta), rel=1e-12)
    issue = b.time_enqueue(op, 1)
    assert b.time_enqueue(op, 5) == pytest.approx(5 * issue, rel=1e-12)
    assert b.time_enqueue(h2d_op(b, 4), 1) == issue  # issuing costs the same whatever the size
    tiny = h2d_op(b, 4)
    assert b.time_back_to_back(tiny, 1) == pytest.approx(max(issue, pipelined + 4 / beta), rel=1e-12)


def test_pageable_is_slower_than_pinned():
    b = VirtualBackend.from_spec("virtual:rtx4090:2")
    assert b.time_oneshot(h2d_op(b, memory="pageable"), 1) > b.time_oneshot(h2d_op(b), 1)


def oneshot_samples(spec: str, n: int, nbytes: int = MiB) -> tuple[np.ndarray, float]:
    b = VirtualBackend.from_spec(spec)
    op = h2d_op(b, nbytes)
    exact = op.state["model"].oneshot_s(nbytes)
    return np.array([b.time_oneshot(op, 1) for _ in range(n)]), exact


def test_noise_is_centred_with_the_asked_spread():
    samples, exact = oneshot_samples("virtual:rtx4090:2+noise=0.05+seed=1", 2000)
    assert abs(np.median(samples) / exact - 1) < 0.01
    assert 0.04 <= samples.std(ddof=1) / samples.mean() <= 0.06
    assert len(np.unique(samples)) > 1000


def test_warmup_samples_are_twice_as_slow():
    b = VirtualBackend.from_spec("virtual:rtx4090:2+warmup=3")
    op = h2d_op(b)
    exact = op.state["model"].oneshot_s(MiB)
    samples = [b.time_oneshot(op, 1) for _ in range(6)]
    assert samples[:3] == pytest.approx([Faults().warmup_factor * exact] * 3, rel=1e-12)
    assert samples[3:] == pytest.approx([exact] * 3, rel=1e-12)
    other = h2d_op(b, 2 * MiB)  # another case warms up on its own
    assert b.time_oneshot(other, 1) == pytest.approx(2 * other.state["model"].oneshot_s(2 * MiB), rel=1e-12)


def test_outliers_are_three_times_slower_at_the_asked_share():
    samples, exact = oneshot_samples("virtual:rtx4090:2+outliers=0.1+seed=2", 2000)
    ratios = samples / exact
    slow = np.isclose(ratios, Faults().outlier_factor, rtol=1e-9)
    assert np.all(slow | np.isclose(ratios, 1.0, rtol=1e-9))
    assert 0.07 <= slow.mean() <= 0.13


def test_same_seed_same_samples():
    a, _ = oneshot_samples("virtual:rtx4090:2+noise=0.05+outliers=0.1+seed=7", 50)
    b, _ = oneshot_samples("virtual:rtx4090:2+noise=0.05+outliers=0.1+seed=7", 50)
    c, _ = oneshot_samples("virtual:rtx4090:2+noise=0.05+outliers=0.1+seed=8", 50)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


# --- copies -------------------------------------------------------------------------------------------


def endpoints(path: str, engine: str) -> list[tuple[str, str, int, int]]:
    """(src kind, dst kind, src device, dst device) for each memory a path and engine can use."""
    if path == "h2d":
        return [(m, "device", 0, 0) for m in (("pinned", "pageable") if engine == "ce" else ("pinned",))]
    if path == "d2h":
        return [("device", m, 0, 0) for m in (("pinned", "pageable") if engine == "ce" else ("pinned",))]
    if path == "d2d":
        return [("device", "device", 1, 1)]
    return [("device", "device", 0, 1)]


CASES = [(path, engine, *ends) for path, engines in ENGINES.items() for engine in engines
         for ends in endpoints(path, engine)]


@pytest.mark.parametrize("path,engine,src_kind,dst_kind,src_dev,dst_dev", CASES)
def test_copy_round_trip(path, engine, src_kind, dst_kind, src_dev, dst_dev):
    b = VirtualBackend.from_spec("virtual:rtx4090:2+p2p=on")
    nbytes = int(2.5 * STAGING_CHUNK_BYTES) if path == "host-staged" else 3 * 4096 + 17
    if path == "p2p":
        b.set_peer_access(0, 1, True)
    data = rand_bytes(nbytes, seed=nbytes)
    src = b.alloc(src_kind, nbytes, src_dev)
    dst = b.alloc(dst_kind, nbytes, dst_dev)
    b.write(src, data)
    op = b.copy_op(path, engine, src, dst, nbytes)
    b.run_op(op)
    assert np.array_equal(b.read(dst, nbytes), data)
    assert b.time_oneshot(op, 1) > 0


def test_all_engines_covered():
    assert {(c[0], c[1]) for c in CASES} == {(p, e) for p, es in ENGINES.items() for e in es}


def test_partial_copy_leaves_the_rest():
    b = VirtualBackend.from_spec("virtual:rtx4090:2")
    src, dst = b.alloc("pinned", 100, 0), b.alloc("device", 100, 0)
    b.write(src, np.full(100, 7, np.uint8))
    b.run_op(b.copy_op("h2d", "ce", src, dst, 60))
    out = b.read(dst, 100)
    assert np.all(out[:60] == 7) and np.all(out[60:] == 0)


def test_pinned_buffer_is_numa_local():
    b = VirtualBackend.from_spec("virtual:rtx4090:4")
    assert b.alloc("pinned", 16, 3).numa_node == 1
    assert b.alloc("pageable", 16, 3).numa_node is None
    with pytest.raises(ValueError):
        b.alloc("managed", 16, 0)


def test_numa_remote_puts_pinned_memory_on_the_other_node():
    b = VirtualBackend.from_spec("virtual:rtx4090:4+numa=remote")  # devices on nodes 0, 0, 1, 1
    assert [b.alloc("pinned", 16, d).numa_node for d in range(4)] == [1, 1, 0, 0]
    assert b.alloc("pageable", 16, 0).numa_node is None
    assert [d.numa_node for d in b.machine.devices] == [0, 0, 1, 1]  # the devices stay where they are
    one_socket = VirtualBackend.from_spec("virtual:rtx4090:2+numa=remote")
    assert [one_socket.alloc("pinned", 16, d).numa_node for d in range(2)] == [1, 1]
    local = VirtualBackend.from_spec("virtual:rtx4090:4+numa=local")
    assert [local.alloc("pinned", 16, d).numa_node for d in range(4)] == [0, 0, 1, 1]


def test_p2p_needs_peer_access():
    b = VirtualBackend.from_spec("virtual:rtx4090:2+p2p=on")
    src, dst = b.alloc("device", 64, 0), b.alloc("device", 64, 1)
    with pytest.raises(GpucalError, match="not enabled"):
        b.copy_op("p2p", "ce", src, dst, 64)
    b.set_peer_access(0, 1, True)
    b.copy_op("p2p", "ce", src, dst, 64)
    b.copy_op("p2p", "ce", dst, src, 64)
    b.set_peer_access(0, 1, False)
    with pytest.raises(GpucalError):
        b.copy_op("p2p", "ce", dst, src, 64)


def test_driver_staged_refuses_while_peer_access_is_enabled():
    b = VirtualBackend.from_spec("virtual:rtx4090:2+p2p=on")
    src, dst = b.alloc("device", 64, 0), b.alloc("device", 64, 1)
    b.copy_op("driver-staged", "ce", src, dst, 64)
    b.set_peer_access(0, 1, True)
    with pytest.raises(GpucalError, match="driver stages"):
        b.copy_op("driver-staged", "ce", src, dst, 64)
    b.copy_op("host-staged", "staged", src, dst, 64)


def test_corrupt_p2p_flips_bytes_but_staging_is_exact():
    b = VirtualBackend.from_spec("virtual:rtx4090:2+p2p=corrupt")
    nbytes = 5 * 4096
    data = rand_bytes(nbytes, seed=3)
    src = b.alloc("device", nbytes, 0)
    b.write(src, data)
    b.set_peer_access(0, 1, True)
    p2p_dst = b.alloc("device", nbytes, 1)
    b.run_op(b.copy_op("p2p", "ce", src, p2p_dst, nbytes))
    got = b.read(p2p_dst, nbytes)
    assert not np.array_equal(got, data)
    assert np.count_nonzero(got != data) == 5
    staged_dst = b.alloc("device", nbytes, 1)
    b.run_op(b.copy_op("host-staged", "staged", src, staged_dst, nbytes))
    assert np.array_equal(b.read(staged_dst, nbytes), data)


def test_check_op_refusals():
    b = VirtualBackend.from_spec("virtual:rtx4090:2+p2p=on")
    pageable, pinned = b.alloc("pageable", 64, 0), b.alloc("pinned", 64, 0)
    d0, d0b, d1 = b.alloc("device", 64, 0), b.alloc("device", 64, 0), b.alloc("device", 64, 1)
    b.set_peer_access(0, 1, True)
    with pytest.raises(ValueError, match="pinned"):
        b.copy_op("h2d", "sm", pageable, d0, 64)
    with pytest.raises(ValueError, match="pinned"):
        b.copy_op("d2h", "sm", d0, pageable, 64)
    with pytest.raises(ValueError, match="d2d"):
        b.copy_op("d2d", "ce", d0, d1, 64)
    with pytest.raises(ValueError, match="between two devices"):
        b.copy_op("p2p", "ce", d0, d0b, 64)
    with pytest.raises(ValueError, match="does not fit"):
        b.copy_op("h2d", "ce", pinned, d0, 65)
    with pytest.raises(ValueError, match="does not fit"):
        b.copy_op("h2d", "ce", pinned, d0, 0)
    with pytest.raises(ValueError, match="host"):
        b.copy_op("h2d", "ce", d0, d0b, 64)
    with pytest.raises(ValueError, match="no engine"):
        b.copy_op("h2d", "sm-read", pinned, d0, 64)
    with pytest.raises(ValueError, match="unknown copy path"):
        b.copy_op("teleport", "ce", d0, d1, 64)


def test_peer_access_refused_without_p2p():
    b = VirtualBackend.from_spec("virtual:rtx4090:2")
    assert not b.can_access_peer(0, 1)
    with pytest.raises(GpucalError, match="not possible"):
        b.set_peer_access(0, 1, True)
    b.set_peer_access(0, 1, False)


def test_can_access_peer():
    b = VirtualBackend.from_spec("virtual:h100-sxm:2")
    assert b.can_access_peer(0, 1) and b.can_access_peer(1, 0)
    assert not b.can_access_peer(0, 0)


def test_nvlink_p2p_is_timed_at_nvlink_rate():
    b = VirtualBackend.from_spec("virtual:h100-sxm:2")
    b.set_peer_access(0, 1, True)
    n = 64 * MiB
    op = b.copy_op("p2p", "ce", b.alloc("device", n, 0), b.alloc("device", n, 1), n)
    assert b.time_oneshot(op, 1) == pytest.approx(ALPHA_S["nvlink"] + n / (NVLINK_EFFICIENCY * 450e9), rel=1e-12)
