"""NUMA evidence (``kernels/numa.py``): a device's CPU-side node from a fake sysfs tree, a buffer's node from a
fake ``move_pages`` (and the real one on this machine), the topology reading sysfs before NVML, and the
``numa-remote`` anomaly firing only on that evidence."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import re
from types import SimpleNamespace

import numpy as np
import pytest
from gpucal import profiles
from gpucal.calibrate.health import anomalies
from gpucal.kernels import numa
from gpucal.kernels.numa import (
    MAX_SAMPLED_PAGES,
    SYS_MOVE_PAGES,
    buffer_numa_node,
    device_numa_node,
    page_nodes,
    placement,
    sample_pages,
    sysfs_bus_id,
)
from gpucal.kernels.virtual import FakeNvml, FakeNvmlError, VirtualBackend
from gpucal.probes.base import Result
from gpucal.profiles.model import Profile
from gpucal.probes.topology import read_topology

PAGE = 4096
MiB = 1 << 20


def fake_sysfs(root, nodes: dict) -> str:
    """A sysfs tree under ``root`` with ``bus/pci/devices/<bus id>/numa_node`` holding each text."""
    for bus, text in nodes.items():
        folder = root / "bus" / "pci" / "devices" / bus
        folder.mkdir(parents=True)
        (folder / "numa_node").write_text(text)
    return str(root)


# --- device_numa_node: sysfs ---------------------------------------------------------------------------


@pytest.mark.parametrize("bus, want", [
    ("00000000:1A:00.0", "0000:1a:00.0"),  # NVML's form
    ("0000:1a:00.0", "0000:1a:00.0"),  # sysfs's own
    ("1A:00.0", "0000:1a:00.0"),  # no domain
    (b"00000001:3B:1F.7", "0001:3b:1f.7"),
    (" 0000:5E:00.1\n", "0000:5e:00.1"),
    ("GPU-1234", None),
    ("0000:1a:00.8", None),  # functions are 0-7
    ("../../../etc/passwd", None),
    ("", None),
    (None, None),
])
def test_bus_ids_are_normalised_to_sysfs_names(bus, want):
    assert sysfs_bus_id(bus) == want


def test_device_numa_node_from_sysfs(tmp_path):
    root = fake_sysfs(tmp_path, {"0000:1a:00.0": "1\n", "0000:3b:00.0": "-1\n", "0000:5e:00.0": "junk\n",
                                 "0000:86:00.0": "", "0001:af:00.0": "3"})
    assert device_numa_node("00000000:1A:00.0", root) == 1
    assert device_numa_node("0000:1a:00.0", root) == 1
    assert device_numa_node("00000001:AF:00.0", root) == 3
    assert device_numa_node("00000000:3B:00.0", root) is None  # -1: the firmware gives no node
    assert device_numa_node("00000000:5E:00.0", root) is None  # junk
    assert device_numa_node("00000000:86:00.0", root) is None  # empty
    assert device_numa_node("00000000:D8:00.0", root) is None  # no such device
    assert device_numa_node("not a bus id", root) is None
    assert device_numa_node(None, root) is None
    assert device_numa_node("00000000:1A:00.0", tmp_path / "nowhere") is None


def test_device_numa_node_on_this_machine_never_raises():
    for bus in sorted(os.listdir("/sys/bus/pci/devices"))[:4] if os.path.isdir("/sys/bus/pci/devices") else []:
        got = device_numa_node(bus)
        assert got is None or (isinstance(got, int) and got >= 0)


# --- sample_pages ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("address, nbytes", [
    (0x10000, 1), (0x10000, PAGE), (0x10001, PAGE), (0x10FFF, 2), (0x10000, 3 * PAGE),
    (0x7F0000001234, 5 * PAGE + 7), (0x7F0000000000, 256 * MiB), (0x7F0000000010, 256 * MiB), (0x20000, 17 * PAGE),
])
def test_sampled_pages_are_aligned_inside_the_buffer_and_bounded(address, nbytes):
    pages = sample_pages(address, nbytes, PAGE)
    first, last = address // PAGE * PAGE, (address + nbytes - 1) // PAGE * PAGE
    spanned = (last - first) // PAGE + 1
    assert len(pages) == min(spanned, MAX_SAMPLED_PAGES)
    assert pages[0] == first and pages[-1] == last  # spread from the first page to the last
    assert pages == sorted(set(pages))  # distinct, ascending
    for p in pages:
        assert p % PAGE == 0
        assert p < address + nbytes and p + PAGE > address  # holds bytes of the buffer


def test_a_huge_buffer_costs_one_call_of_bounded_pages():
    calls = []

    def fake(pages):
        calls.append(list(pages))
        return [0] * len(pages)
    assert buffer_numa_node(0x7F0000000000, 64 << 30, move_pages=fake) == 0
    assert len(calls) == 1 and len(calls[0]) == MAX_SAMPLED_PAGES
    gaps = {b - a for a, b in zip(calls[0], calls[0][1:])}
    assert min(gaps) > (64 << 30) // MAX_SAMPLED_PAGES // 2  # spread over the buffer, not its first pages


def test_an_empty_buffer_asks_nothing():
    def fake(pages):
        raise AssertionError("called")
    assert sample_pages(0x10000, 0, PAGE) == []
    assert page_nodes(0x10000, 0, move_pages=fake) == []
    assert buffer_numa_node(0x10000, 0, move_pages=fake) is None


# --- page_nodes / buffer_numa_node with a fake move_pages --------------------------------------------------


def by_page(node_of):
    """A fake move_pages answering ``node_of(i)`` for the i-th page asked, with the pages it was asked."""
    asked = []

    def fake(pages):
        asked.extend(pages)
        return [node_of(i) for i in range(len(pages))]
    fake.asked = asked
    return fake


def test_all_pages_on_one_node():
    fake = by_page(lambda i: 1)
    got = placement(0x7F0000000000, 64 * PAGE, move_pages=fake, page_bytes=PAGE)
    assert got.node == 1 and got.nodes_seen == (1,) and not got.split
    assert got.pages_sampled == got.pages_known == 16
    assert page_nodes(0x7F0000000000, 3 * PAGE, move_pages=by_page(lambda i: 1), page_bytes=PAGE) == [1, 1, 1]
    assert buffer_numa_node(0x7F0000000000, 64 * PAGE, move_pages=by_page(lambda i: 1)) == 1


def test_mixed_nodes_give_the_node_of_most_pages_and_say_so():
    got = placement(0x7F0000000000, 64 * PAGE, move_pages=by_page(lambda i: 0 if i < 4 else 2), page_bytes=PAGE)
    assert got.node == 2 and got.nodes_seen == (0, 2) and got.split
    assert page_nodes(0x7F0000000000, 4 * PAGE, move_pages=by_page(lambda i: [3, 1, 3, 0][i]),
                      page_bytes=PAGE) == [3, 1, 3, 0]
    assert placement(0x7F0000000000, 4 * PAGE, move_pages=by_page(lambda i: [3, 1, 3, 0][i]),
                     page_bytes=PAGE).node == 3
    tie = placement(0x7F0000000000, 4 * PAGE, move_pages=by_page(lambda i: [1, 0, 1, 0][i]), page_bytes=PAGE)
    assert tie.node == 0 and tie.nodes_seen == (0, 1)  # a tie: the lowest node
    assert got.how == "move_pages (injected): 16 of 16 sampled pages placed, over nodes 0, 2 (the node of most)"


def test_pages_not_present_are_unknown_not_evidence():
    enoent = -errno.ENOENT
    assert page_nodes(0x7F0000000000, 4 * PAGE, move_pages=by_page(lambda i: [enoent, 1, -errno.EFAULT, 1][i]),
                      page_bytes=PAGE) == [None, 1, None, 1]
    got = placement(0x7F0000000000, 4 * PAGE, move_pages=by_page(lambda i: [enoent, 1, enoent, 1][i]),
                    page_bytes=PAGE)
    assert got.node == 1 and got.pages_known == 2 and got.pages_sampled == 4
    none = placement(0x7F0000000000, 4 * PAGE, move_pages=by_page(lambda i: enoent), page_bytes=PAGE)
    assert none.node is None and none.nodes_seen == () and none.pages_known == 0


@pytest.mark.parametrize("err", [errno.ENOSYS, errno.EPERM, errno.EFAULT])
def test_a_failing_call_is_none_never_an_exception(err):
    def fake(pages):
        raise OSError(err, os.strerror(err))
    assert buffer_numa_node(0x7F0000000000, MiB, move_pages=fake) is None
    assert set(page_nodes(0x7F0000000000, MiB, move_pages=fake, page_bytes=PAGE)) == {None}
    got = placement(0x7F0000000000, MiB, move_pages=fake)
    assert got.node is None and errno.errorcode[err] in got.method


def test_a_short_answer_is_not_trusted():
    assert buffer_numa_node(0x7F0000000000, MiB, move_pages=lambda pages: [0]) is None


def test_the_raw_call_reports_errno_as_oserror(monkeypatch):
    def failing(addrs, status, count):
        ctypes.set_errno(errno.ENOSYS)
        return -1
    monkeypatch.setattr(numa, "_binding", lambda: (failing, "move_pages (test)"))
    with pytest.raises(OSError) as info:
        numa.kernel_move_pages([0x10000])
    assert info.value.errno == errno.ENOSYS
    got = placement(0x10000, PAGE)
    assert got.node is None and "ENOSYS" in got.method


def test_the_raw_call_reads_each_status(monkeypatch):
    def answering(addrs, status, count):
        for i in range(count):
            status[i] = 2 if addrs[i] % (2 * PAGE) == 0 else -errno.ENOENT
        return 0
    monkeypatch.setattr(numa, "_binding", lambda: (answering, "move_pages (test)"))
    assert page_nodes(0x7F0000000000, 4 * PAGE, page_bytes=PAGE) == [2, None, 2, None]


def test_an_unknown_machine_without_libnuma_is_none(monkeypatch):
    monkeypatch.setattr(numa.ctypes.util, "find_library", lambda name: None)
    monkeypatch.setattr(numa.platform, "machine", lambda: "riscv64")
    numa._binding.cache_clear()
    try:
        a = np.ones(MiB, np.uint8)
        got = placement(a.ctypes.data, a.nbytes)
        assert got.node is None and "riscv64" in got.method
    finally:
        numa._binding.cache_clear()


# --- the real kernel on this machine -----------------------------------------------------------------------


def online_nodes() -> set[int] | None:
    try:
        names = os.listdir("/sys/devices/system/node")
    except OSError:
        return None
    return {int(m.group(1)) for n in names if (m := re.fullmatch(r"node(\d+)", n))} or None


def check_real(got):
    assert got.node is None or (isinstance(got.node, int) and got.node >= 0)
    if got.node is not None:
        assert got.pages_known >= 1
        nodes = online_nodes()
        if nodes is not None:
            assert set(got.nodes_seen) <= nodes  # a node this machine has


def test_the_real_call_on_a_touched_numpy_buffer():
    a = np.ones(8 * MiB, np.uint8)
    got = placement(a.ctypes.data, a.nbytes)
    check_real(got)
    assert buffer_numa_node(a.ctypes.data, a.nbytes) == got.node


@pytest.mark.skipif(platform.machine() not in SYS_MOVE_PAGES, reason="no move_pages syscall number for this machine")
def test_the_real_syscall_without_libnuma_agrees(monkeypatch):
    a = np.ones(4 * MiB, np.uint8)
    with_lib = placement(a.ctypes.data, a.nbytes)
    monkeypatch.setattr(numa.ctypes.util, "find_library", lambda name: None)
    numa._binding.cache_clear()
    try:
        bare = placement(a.ctypes.data, a.nbytes)
    finally:
        numa._binding.cache_clear()
    assert "syscall" in bare.method
    check_real(bare)
    if with_lib.node is not None and bare.node is not None:
        assert bare.node == with_lib.node


# --- the topology: sysfs first, NVML where sysfs cannot say ------------------------------------------------


class RealLooking(VirtualBackend):
    """A virtual machine read as a real one would be (sysfs consulted), its NVML the fake one."""

    simulated = False


def test_topology_takes_the_node_from_sysfs_before_nvml(tmp_path):
    backend = RealLooking(VirtualBackend.from_spec("virtual:rtx4090:4").machine)  # FakeNvml: nodes 0, 0, 1, 1
    buses = [sysfs_bus_id(d.pci_bus_id) for d in backend.devices()]
    root = fake_sysfs(tmp_path, {buses[0]: "1\n", buses[1]: "-1\n", buses[2]: "0\n"})  # dev3: no entry
    t = read_topology(backend, sysfs_root=root)
    assert [(d.numa_node, d.numa_source) for d in t.devices] == [(1, "sysfs"), (0, "nvml"), (0, "sysfs"),
                                                                  (1, "nvml")]
    assert t.to_dict()["devices"][0]["numa_source"] == "sysfs"


def _topology_without_numa(tmp_path):
    """The topology of a real-looking machine whose sysfs (an empty tree) and NVML both cannot say a node."""
    class NoNuma(FakeNvml):
        def nvmlDeviceGetNumaNodeId(self, h):
            raise FakeNvmlError("not supported")

    class NoNumaBackend(RealLooking):
        def nvml(self):
            return NoNuma(self.machine)

    return read_topology(NoNumaBackend(VirtualBackend.from_spec("virtual:rtx4090:2").machine), sysfs_root=str(tmp_path))


def test_topology_node_unknown_when_neither_says(tmp_path):
    t = _topology_without_numa(tmp_path)
    assert [(d.numa_node, d.numa_source) for d in t.devices] == [(None, None), (None, None)]


def test_a_virtual_machine_never_reads_the_hosts_sysfs(tmp_path):
    backend = VirtualBackend.from_spec("virtual:rtx4090:2")
    root = fake_sysfs(tmp_path, {sysfs_bus_id(d.pci_bus_id): "7\n" for d in backend.devices()})
    t = read_topology(backend, sysfs_root=root)
    assert [(d.numa_node, d.numa_source) for d in t.devices] == [(0, "nvml"), (0, "nvml")]


# --- the numa-remote anomaly ---------------------------------------------------------------------------------


def host_result(path: str, device: int, host_node, memory: str = "pinned", source: str = "measured") -> Result:
    src, dst = (device, device) if path in ("h2d", "d2h") else (0, 1)
    return Result("host-link", f"{path}-ce-{memory}-dev{device}-1048576B", "passed", "cupy", source, "GPU",
                  params={"path": path, "engine": "ce", "memory": memory, "src": src, "dst": dst, "bytes": MiB,
                          "series": f"{path}-ce-{memory}-dev{device}", "host_numa_node": host_node})


def numa_anomalies(topology, results) -> list[dict]:
    cal = SimpleNamespace(all_results=lambda: results, results={"host-link": results}, topology=topology,
                          verdicts=[], fits=[], simulator_check=None)
    sheet = profiles.datasheet_for("NVIDIA H100 80GB HBM3").profile  # a full profile of the topology's devices
    profile = Profile.model_validate({**sheet.to_json(), "links": [], "devices": [
        {**sheet.devices[0].to_json(), "index": d.index} for d in topology.devices]})
    return [a for a in anomalies(cal, profile) if a["kind"] == "numa-remote"]


@pytest.fixture
def sysfs_topology(tmp_path):
    """dev0 on node 0 by sysfs (NVML would say 1 there: it must not be asked); dev1 on node 1 by NVML alone."""
    class WrongNvml(FakeNvml):
        def nvmlDeviceGetNumaNodeId(self, h):
            return 1

    class Backend(RealLooking):
        def nvml(self):
            return WrongNvml(self.machine)

    backend = Backend(VirtualBackend.from_spec("virtual:rtx4090:2").machine)
    root = fake_sysfs(tmp_path, {sysfs_bus_id(backend.devices()[0].pci_bus_id): "0\n"})
    return read_topology(backend, sysfs_root=root)


def test_the_kernel_saying_node_1_and_sysfs_node_0_is_numa_remote(sysfs_topology):
    found = numa_anomalies(sysfs_topology, [host_result("h2d", 0, 1), host_result("d2h", 0, 1)])
    assert [a["device"] for a in found] == [0]
    text = found[0]["text"]
    assert "NUMA node 1" in text and "node 0" in text
    assert "move_pages" in text and "sysfs" in text  # where both came from
    said = host_result("h2d", 0, 1)
    said.params["host_numa_how"] = "libnuma move_pages: 16 of 16 sampled pages placed"
    (found,) = numa_anomalies(sysfs_topology, [said])
    assert "(libnuma move_pages: 16 of 16 sampled pages placed)" in found["text"]  # the buffer's own record


def test_an_unknown_buffer_node_is_no_anomaly(sysfs_topology):
    assert numa_anomalies(sysfs_topology, [host_result("h2d", 0, None), host_result("d2h", 1, None)]) == []


def test_a_local_buffer_is_no_anomaly(sysfs_topology):
    assert numa_anomalies(sysfs_topology, [host_result("h2d", 0, 0), host_result("d2h", 1, 1)]) == []


def test_pageable_memory_is_not_judged(sysfs_topology):
    assert numa_anomalies(sysfs_topology, [host_result("h2d", 0, 1, memory="pageable")]) == []


def test_the_device_of_a_d2h_is_its_source_and_nvml_is_named_as_the_fallback(sysfs_topology):
    found = numa_anomalies(sysfs_topology, [host_result("d2h", 1, 0)])
    assert [a["device"] for a in found] == [1]
    assert "NUMA node 0" in found[0]["text"] and "node 1" in found[0]["text"] and "NVML" in found[0]["text"]


def test_an_unknown_device_node_is_no_anomaly(tmp_path):
    t = _topology_without_numa(tmp_path)
    assert numa_anomalies(t, [host_result("h2d", 0, 1), host_result("h2d", 1, 0)]) == []


def test_a_virtual_remote_placement_says_it_is_simulated():
    backend = VirtualBackend.from_spec("virtual:rtx4090:4+numa=remote")
    t = read_topology(backend)
    results = [host_result("h2d", d, backend.alloc("pinned", 16, d).numa_node, source="simulated") for d in range(4)]
    found = numa_anomalies(t, results)
    assert [a["device"] for a in found] == [0, 1, 2, 3]
    assert "virtual machine" in found[0]["text"] and "move_pages" not in found[0]["text"]
