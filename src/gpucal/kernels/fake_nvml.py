"""The part of ``pynvml`` the topology reader uses, answering for a ``VirtualMachine`` (``kernels/virtual.py``)."""

from __future__ import annotations

from types import SimpleNamespace

from gpucal.kernels.virtual_machine import CORES_PER_SOCKET, TOPOLOGY_LEVELS, VirtualDevice, VirtualMachine

__all__ = ["FakeNvml", "FakeNvmlError"]


class FakeNvmlError(Exception):
    """What the fake NVML raises where real NVML would (a call the device does not support)."""


class FakeNvml:
    """The part of ``pynvml`` the topology reader uses, answering for a ``VirtualMachine``."""

    NVMLError = FakeNvmlError
    NVML_TOPOLOGY_INTERNAL, NVML_TOPOLOGY_SINGLE, NVML_TOPOLOGY_MULTIPLE = (TOPOLOGY_LEVELS[k] for k in (
        "internal", "single", "multiple"))
    NVML_TOPOLOGY_HOSTBRIDGE, NVML_TOPOLOGY_NODE, NVML_TOPOLOGY_SYSTEM = (TOPOLOGY_LEVELS[k] for k in (
        "hostbridge", "node", "system"))
    NVML_P2P_STATUS_OK, NVML_P2P_STATUS_GPU_NOT_SUPPORTED, NVML_P2P_STATUS_NOT_SUPPORTED = 0, 2, 5
    NVML_NVLINK_MAX_LINKS = 18
    NVML_NVLINK_DEVICE_TYPE_GPU, NVML_NVLINK_DEVICE_TYPE_SWITCH = 0, 2
    NVML_FEATURE_ENABLED = 1

    def __init__(self, machine: VirtualMachine):
        self.m = machine

    def _dev(self, h) -> VirtualDevice:
        if not isinstance(h, int) or not 0 <= h < self.m.count:
            raise FakeNvmlError("invalid argument")
        return self.m.devices[h]

    def nvmlSystemGetDriverVersion(self):
        return "virtual"

    def nvmlDeviceGetCount(self):
        return self.m.count

    def nvmlDeviceGetHandleByIndex(self, i):
        self._dev(i)
        return i

    def nvmlDeviceGetName(self, h):
        return self._dev(h).name

    def nvmlDeviceGetUUID(self, h):
        return self._dev(h).uuid

    def nvmlDeviceGetPciInfo(self, h):
        return SimpleNamespace(busId=self._dev(h).pci_bus_id)

    def nvmlDeviceGetTopologyCommonAncestor(self, a, b):
        self._dev(a), self._dev(b)
        return self.m.topology_level(a, b)

    def nvmlDeviceGetP2PStatus(self, a, b, index):
        self._dev(a), self._dev(b)
        if not isinstance(index, int):  # real NVML rejects the binding's tuple constant the same way
            raise FakeNvmlError("invalid argument")
        peer = self.m.peer(a, b)
        if peer.kind == "none":
            return self.NVML_P2P_STATUS_GPU_NOT_SUPPORTED
        if index == 2:  # NVLink
            return self.NVML_P2P_STATUS_OK if peer.kind == "nvlink" else self.NVML_P2P_STATUS_NOT_SUPPORTED
        if index == 3:  # atomics: over NVLink only
            return self.NVML_P2P_STATUS_OK if peer.kind == "nvlink" else self.NVML_P2P_STATUS_NOT_SUPPORTED
        return self.NVML_P2P_STATUS_OK

    def _links(self, h) -> int:
        others = [j for j in range(self.m.count) if j != h]
        peers = [self.m.peer(h, j) for j in others]
        return max((p.nvlink_links for p in peers if p.kind == "nvlink"), default=0)

    def nvmlDeviceGetNvLinkState(self, h, link):
        self._dev(h)
        if link >= self._links(h):
            raise FakeNvmlError("not supported")
        return self.NVML_FEATURE_ENABLED

    def _switched(self) -> bool:
        return self.m.count > 2

    def nvmlDeviceGetNvLinkRemoteDeviceType(self, h, link):
        self.nvmlDeviceGetNvLinkState(h, link)
        return self.NVML_NVLINK_DEVICE_TYPE_SWITCH if self._switched() else self.NVML_NVLINK_DEVICE_TYPE_GPU

    def nvmlDeviceGetNvLinkRemotePciInfo(self, h, link):
        self.nvmlDeviceGetNvLinkState(h, link)
        if self._switched():
            return SimpleNamespace(busId=f"00000000:{0xC0 + link % 4:02X}:00.0")  # one of 4 NVSwitches
        return SimpleNamespace(busId=self.m.devices[1 - h].pci_bus_id)

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h):
        return self._dev(h).pcie_generation

    def nvmlDeviceGetCurrPcieLinkWidth(self, h):
        return self._dev(h).pcie_width

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h):
        return self._dev(h).pcie_generation_max

    def nvmlDeviceGetMaxPcieLinkWidth(self, h):
        return self._dev(h).pcie_width_max

    def nvmlDeviceGetNumaNodeId(self, h):
        return self._dev(h).numa_node

    def nvmlDeviceGetCpuAffinity(self, h, size):
        first = self._dev(h).numa_node * CORES_PER_SOCKET
        words = [0] * size
        for cpu in range(first, first + CORES_PER_SOCKET):
            words[cpu // 64] |= 1 << (cpu % 64)
        return words
