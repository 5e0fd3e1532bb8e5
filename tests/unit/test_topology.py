"""The topology reader on virtual machines: NVLink and NVSwitch, NUMA and CPU affinity, common ancestors,
P2P status, downtrained links, missing NVML, and devices matched by PCI bus id."""

from __future__ import annotations

import json
from itertools import permutations

import pytest
from rich.console import Console

from gpucal.commands.info import topology_table
from gpucal.kernels.virtual import FakeNvml, FakeNvmlError, VirtualBackend
from gpucal.probes.topology import (ANCESTORS, P2P_CAPS, GpuTopo, PairTopo, Topology, cpu_list, pcie_under_load,
                                    read_topology)


def topo(spec: str) -> Topology:
    return read_topology(VirtualBackend.from_spec(spec))


@pytest.fixture(scope="module")
def h100_8() -> Topology:
    return topo("virtual:h100-sxm:8")


# --- cpu_list -----------------------------------------------------------------------------------------


def test_cpu_list_simple_masks():
    assert cpu_list([0xF]) == "0-3"
    assert cpu_list([0b1011]) == "0-1,3"
    assert cpu_list([0b1]) == "0"
    assert cpu_list([0b101]) == "0,2"


def test_cpu_list_across_words():
    assert cpu_list([1 << 63, 1]) == "63-64"
    assert cpu_list([0, 0xFFFFFFFF]) == "64-95"
    assert cpu_list([0xFFFFFFFF, 0xFFFFFFFF]) == "0-31,64-95"
    assert cpu_list([(1 << 64) - 1, (1 << 64) - 1]) == "0-127"


def test_cpu_list_empty():
    assert cpu_list([]) is None
    assert cpu_list([0, 0]) is None
    assert cpu_list(None) is None


# --- 8 x H100 SXM -------------------------------------------------------------------------------------


def test_h100_8_is_available_and_simulated(h100_8):
    assert h100_8.available
    assert h100_8.source == "simulated"
    assert len(h100_8.devices) == 8
    assert len(h100_8.pairs) == 8 * 7


def test_h100_8_every_pair_is_nvswitch_nvlink(h100_8):
    for a, b in permutations(range(8), 2):
        pair = h100_8.pair(a, b)
        assert pair is not None, (a, b)
        assert pair.nvlink_via == "nvswitch"
        assert pair.nvlinks == 18
        assert pair.p2p == {"read": "ok", "write": "ok", "nvlink": "ok", "atomics": "ok"}
        assert pair.p2p_ok and pair.nvlink_ok
    assert h100_8.pair(0, 0) is None


def test_h100_8_devices(h100_8):
    for d in h100_8.devices:
        assert d.nvlinks_active == 18
        assert (d.pcie_generation, d.pcie_width) == (5, 16)
        assert d.pcie_downtrained is False
    assert [d.numa_node for d in h100_8.devices] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [d.cpu_affinity for d in h100_8.devices] == ["0-31"] * 4 + ["32-63"] * 4


def test_h100_8_common_ancestors(h100_8):
    assert h100_8.pair(0, 4).common_ancestor == "across-sockets"
    assert h100_8.pair(7, 3).common_ancestor == "across-sockets"
    assert h100_8.pair(0, 1).common_ancestor == "host-bridge"
    assert h100_8.pair(5, 6).common_ancestor == "host-bridge"


def test_h100_2_nvlink_is_direct():
    t = topo("virtual:h100-sxm:2")
    for a, b in ((0, 1), (1, 0)):
        pair = t.pair(a, b)
        assert pair.nvlink_via == "direct"
        assert pair.nvlinks == 18
        assert pair.p2p["nvlink"] == "ok"
    assert [d.numa_node for d in t.devices] == [0, 0]


# --- RTX 4090 -----------------------------------------------------------------------------------------


def test_rtx4090_2_has_no_nvlink_and_no_p2p():
    t = topo("virtual:rtx4090:2")
    assert t.available
    pair = t.pair(0, 1)
    assert pair.nvlinks == 0 and pair.nvlink_via is None
    assert pair.p2p["read"] == "GPU not supported"
    assert pair.p2p["write"] == "GPU not supported"
    assert not pair.p2p_ok and not pair.nvlink_ok
    assert pair.common_ancestor == "host-bridge"
    assert all(d.nvlinks_active == 0 for d in t.devices)


def test_rtx4090_4_p2p_on_switches_and_sockets():
    t = topo("virtual:rtx4090:4+p2p=on")
    assert t.pair(0, 1).common_ancestor == "pcie-switch"
    assert t.pair(2, 3).common_ancestor == "pcie-switch"
    assert t.pair(0, 2).common_ancestor == "across-sockets"
    assert t.pair(1, 3).common_ancestor == "across-sockets"
    pair = t.pair(0, 1)
    assert pair.p2p_ok
    assert pair.p2p["nvlink"] == "not supported" and pair.p2p["atomics"] == "not supported"
    assert pair.nvlinks == 0 and not pair.nvlink_ok


def test_downtrained_device():
    backend = VirtualBackend.from_spec("virtual:rtx4090:2+downtrain=1:3:8")
    t = read_topology(backend)
    d0, d1 = t.device(0), t.device(1)
    assert d1.pcie_downtrained is True
    assert (d1.pcie_generation, d1.pcie_width, d1.pcie_generation_max, d1.pcie_width_max) == (3, 8, 4, 16)
    assert d0.pcie_downtrained is False
    assert pcie_under_load(backend, 1) == (3, 8)
    assert pcie_under_load(backend, 0) == (4, 16)


def test_pcie_downtrained_unknown_when_a_fact_is_missing():
    d = GpuTopo(0, 0, "x", "00000000:18:00.0", 0, "0-3", None, 4, 16, 16)
    assert d.pcie_downtrained is None


def test_to_dict_is_json_and_has_downtrained():
    t = topo("virtual:rtx4090:2+downtrain=1:3:8")
    out = t.to_dict()
    json.dumps(out)
    assert [d["pcie_downtrained"] for d in out["devices"]] == [False, True]
    assert out["available"] is True and out["source"] == "simulated"
    assert out["pairs"][0]["p2p"]["read"] == "GPU not supported"
    assert json.loads(json.dumps(topo("virtual:h100-sxm:8").to_dict()))["pairs"][0]["nvlink_via"] == "nvswitch"


# --- no NVML ------------------------------------------------------------------------------------------


class NoNvmlBackend(VirtualBackend):
    nvml_reason = "NVML not available (test: no driver)"

    def nvml(self):
        return None


def test_no_nvml_gives_unavailable_with_reason():
    backend = NoNvmlBackend(VirtualBackend.from_spec("virtual:rtx4090:2").machine)
    t = read_topology(backend)
    assert t.available is False
    assert t.reason == "NVML not available (test: no driver)"
    assert t.devices == () and t.pairs == ()
    assert t.pair(0, 1) is None and t.device(0) is None
    json.dumps(t.to_dict())
    assert pcie_under_load(backend, 0) == (None, None)


# --- devices matched by PCI bus id --------------------------------------------------------------------


class ReversedNvml(FakeNvml):
    """NVML that lists the devices in the reverse of the runtime's order."""

    def nvmlDeviceGetHandleByIndex(self, i):
        self._dev(i)
        return self.m.count - 1 - i


class ReversedBackend(VirtualBackend):
    def nvml(self):
        return ReversedNvml(self.machine)


def test_devices_matched_by_bus_id_not_nvml_order():
    backend = ReversedBackend(VirtualBackend.from_spec("virtual:h100-sxm:8").machine)
    t = read_topology(backend)
    infos = backend.devices()
    assert [d.index for d in t.devices] == [i.index for i in infos]
    for d, info in zip(t.devices, infos, strict=True):
        assert d.pci_bus_id == info.pci_bus_id
        assert d.nvml_index == 7 - info.index
    assert [d.numa_node for d in t.devices] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert t.pair(0, 4).common_ancestor == "across-sockets"
    assert t.pair(0, 1).common_ancestor == "host-bridge"


def test_reversed_order_with_direct_nvlinks():
    backend = ReversedBackend(VirtualBackend.from_spec("virtual:h100-sxm:2").machine)
    t = read_topology(backend)
    assert [d.nvml_index for d in t.devices] == [1, 0]
    assert t.pair(0, 1).nvlink_via == "direct" and t.pair(0, 1).nvlinks == 18


def test_bus_id_match_ignores_case_domain_width_and_bytes():
    class OddBusIds(FakeNvml):
        def nvmlDeviceGetPciInfo(self, h):
            bus = self._dev(h).pci_bus_id  # 00000000:18:00.0
            return type("Pci", (), {"busId": ("0000" + bus[8:]).lower().encode()})()

    class OddBackend(VirtualBackend):
        def nvml(self):
            return OddBusIds(self.machine)

    t = read_topology(OddBackend(VirtualBackend.from_spec("virtual:rtx4090:4").machine))
    assert t.available and len(t.devices) == 4


def test_no_device_matches():
    class Elsewhere(FakeNvml):
        def nvmlDeviceGetPciInfo(self, h):
            return type("Pci", (), {"busId": f"00000001:{self._dev(h).index:02X}:00.0"})()

    class ElsewhereBackend(VirtualBackend):
        def nvml(self):
            return Elsewhere(self.machine)

    t = read_topology(ElsewhereBackend(VirtualBackend.from_spec("virtual:rtx4090:2").machine))
    assert t.available is False
    assert "PCI bus id" in t.reason


# --- P2P status asked with plain ints -----------------------------------------------------------------


def test_fake_nvml_refuses_a_tuple_index():
    nv = VirtualBackend.from_spec("virtual:h100-sxm:2").nvml()
    with pytest.raises(FakeNvmlError):
        nv.nvmlDeviceGetP2PStatus(0, 1, (0,))
    assert nv.nvmlDeviceGetP2PStatus(0, 1, 0) == nv.NVML_P2P_STATUS_OK


def test_p2p_status_asked_with_plain_ints():
    asked = []

    class Recording(FakeNvml):
        def nvmlDeviceGetP2PStatus(self, a, b, index):
            asked.append(index)
            return super().nvmlDeviceGetP2PStatus(a, b, index)

    class RecordingBackend(VirtualBackend):
        def nvml(self):
            return Recording(self.machine)

    t = read_topology(RecordingBackend(VirtualBackend.from_spec("virtual:h100-sxm:2").machine))
    assert all(type(i) is int for i in asked)
    assert sorted(set(asked)) == sorted(P2P_CAPS.values())
    assert all(v == "ok" for v in t.pair(0, 1).p2p.values())


def test_failing_calls_leave_facts_none():
    class Partial(FakeNvml):
        def nvmlDeviceGetNumaNodeId(self, h):
            raise FakeNvmlError("not supported")

        def nvmlDeviceGetTopologyCommonAncestor(self, a, b):
            raise FakeNvmlError("not supported")

        def nvmlDeviceGetCpuAffinity(self, h, size):
            raise FakeNvmlError("not supported")

    class PartialBackend(VirtualBackend):
        def nvml(self):
            return Partial(self.machine)

    t = read_topology(PartialBackend(VirtualBackend.from_spec("virtual:rtx4090:2").machine))
    assert t.available
    assert all(d.cpu_affinity is None for d in t.devices)
    assert t.pair(0, 1).common_ancestor is None
    assert t.pair(0, 1).p2p["read"] == "GPU not supported"


def test_ancestor_words_cover_nvml_levels():
    assert set(ANCESTORS) == {0, 10, 20, 30, 40, 50}
    assert PairTopo(0, 1, None, 0, None, {"read": "ok", "write": None}).p2p_ok is False
    assert PairTopo(0, 1, None, 2, "direct", {}).nvlink_ok is True


def test_info_renders_the_topology_of_a_machine():

    backend = VirtualBackend.from_spec("virtual:h100-sxm:4")
    console = Console(width=200, record=True)
    console.print(topology_table(read_topology(backend).to_dict()))
    text = console.export_text()
    assert "0 -> 3" in text and "18 (nvswitch)" in text and "across-sockets" in text and "nvlink ok" in text
