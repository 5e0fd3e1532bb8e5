"""What NVML says of how the devices are wired: per device its PCIe link (current and maximum generation and
width), NUMA node and CPU affinity; per pair of devices the common ancestor of their PCIe paths, the NVLinks
between them, and NVML's P2P status (read, write, NVLink, atomics).

A device's NUMA node is its CPU side's, from the kernel's PCI record in sysfs (``kernels/numa.py``:
``device_numa_node``) and ``numa_source: "sysfs"``; only where sysfs cannot say, NVML's
``nvmlDeviceGetNumaNodeId`` (``numa_source: "nvml"``: not supported on most x86 boards, and on Grace
Hopper the node of the GPU's own memory). A virtual machine's devices have no sysfs entry (their bus ids
may name real devices of this host), so theirs come from its ``FakeNvml``.

It reads through the backend's ``nvml()``: ``pynvml`` on a real machine, ``FakeNvml`` on a virtual one,
so the same code is tested without a driver. Where NVML is not available the topology says so
(``available=False`` and the reason) and holds nothing else. Devices are matched to the CUDA runtime's
indices by PCI bus id (the runtime orders them fastest first, NVML by bus id).

Each fact is read on its own and left ``None`` where its call fails. NVML's current PCIe generation
drops while a link is idle (power saving): ``pcie_under_load`` reads it again right after traffic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from gpucal.kernels.base import Backend
from gpucal.kernels.numa import device_numa_node

__all__ = ["Topology", "GpuTopo", "PairTopo", "read_topology", "ANCESTORS", "P2P_CAPS", "cpu_list",
           "pcie_under_load"]

# NVML_TOPOLOGY_* level -> what it means
ANCESTORS = {0: "same-board", 10: "pcie-switch", 20: "pcie-switches", 30: "host-bridge", 40: "numa-node",
             50: "across-sockets"}
# the P2P capabilities asked, with their index (pass plain ints: the binding's READ constant is a tuple)
P2P_CAPS = {"read": 0, "write": 1, "nvlink": 2, "atomics": 3}
P2P_STATUS = {0: "ok", 1: "chipset not supported", 2: "GPU not supported", 3: "IOH topology not supported",
              4: "disabled by regkey", 5: "not supported", 6: "unknown"}
CPU_WORDS = 16  # 64-bit words of CPU mask asked for: 1024 CPUs


@dataclass(frozen=True)
class GpuTopo:
    index: int  # the CUDA runtime's index
    nvml_index: int
    name: str | None
    pci_bus_id: str | None
    numa_node: int | None
    cpu_affinity: str | None  # e.g. "0-31,64-95"
    pcie_generation: int | None
    pcie_generation_max: int | None
    pcie_width: int | None
    pcie_width_max: int | None
    nvlinks_active: int = 0
    numa_source: str | None = None  # where numa_node came from: "sysfs" or "nvml" (None with numa_node)

    @property
    def pcie_downtrained(self) -> bool | None:
        """The link runs below its maximum generation or width (``None`` where NVML cannot say)."""
        facts = (self.pcie_generation, self.pcie_generation_max, self.pcie_width, self.pcie_width_max)
        if None in facts:
            return None
        return self.pcie_generation < self.pcie_generation_max or self.pcie_width < self.pcie_width_max


@dataclass(frozen=True)
class PairTopo:
    src: int
    dst: int
    common_ancestor: str | None  # ANCESTORS' words
    nvlinks: int  # active NVLinks from src that reach dst (directly or through NVSwitches)
    nvlink_via: str | None  # "direct", "nvswitch" or None
    p2p: dict = field(default_factory=dict)  # read, write, nvlink, atomics -> "ok" / why not / None

    @property
    def p2p_ok(self) -> bool:
        return self.p2p.get("read") == "ok" and self.p2p.get("write") == "ok"

    @property
    def nvlink_ok(self) -> bool:
        return self.p2p.get("nvlink") == "ok" or self.nvlinks > 0


@dataclass(frozen=True)
class Topology:
    available: bool
    reason: str
    source: str  # nvml or simulated
    devices: tuple[GpuTopo, ...] = ()
    pairs: tuple[PairTopo, ...] = ()

    def pair(self, src: int, dst: int) -> PairTopo | None:
        return next((p for p in self.pairs if p.src == src and p.dst == dst), None)

    def device(self, index: int) -> GpuTopo | None:
        return next((d for d in self.devices if d.index == index), None)

    def to_dict(self) -> dict:
        out = asdict(self)
        for d, topo in zip(out["devices"], self.devices):
            d["pcie_downtrained"] = topo.pcie_downtrained
        return out


def cpu_list(words) -> str | None:
    """64-bit CPU mask words as a list of ranges ("0-31,64-95")."""
    cpus = [w * 64 + b for w, word in enumerate(words or ()) for b in range(64) if int(word) >> b & 1]
    if not cpus:
        return None
    ranges, start = [], cpus[0]
    for prev, cur in zip(cpus, cpus[1:] + [None]):
        if cur != prev + 1:
            ranges.append(f"{start}-{prev}" if prev != start else str(start))
            start = cur
    return ",".join(ranges)


def _key(bus_id) -> str | None:
    if bus_id is None:
        return None
    bus_id = bus_id.decode() if isinstance(bus_id, bytes) else bus_id
    domain, _, rest = bus_id.lower().partition(":")
    return f"{int(domain, 16):x}:{rest}" if rest else bus_id.lower()


def _call(nv, fn: str, *args):
    try:
        value = getattr(nv, fn)(*args)
    except (getattr(nv, "NVMLError", Exception), AttributeError, TypeError, ValueError):
        return None
    return value.decode() if isinstance(value, bytes) else value


def _nvlinks(nv, h, max_links: int) -> list[tuple[str | None, bool]]:
    """(remote bus id, remote is an NVSwitch) for each active NVLink of ``h``."""
    out = []
    for link in range(max_links):
        state = _call(nv, "nvmlDeviceGetNvLinkState", h, link)
        if state is None:
            continue
        if state != getattr(nv, "NVML_FEATURE_ENABLED", 1):
            continue
        pci = _call(nv, "nvmlDeviceGetNvLinkRemotePciInfo", h, link)
        kind = _call(nv, "nvmlDeviceGetNvLinkRemoteDeviceType", h, link)
        out.append((_key(getattr(pci, "busId", None)), kind == getattr(nv, "NVML_NVLINK_DEVICE_TYPE_SWITCH", 2)))
    return out


def read_topology(backend: Backend, sysfs_root: str = "/sys") -> Topology:
    """The topology of ``backend``'s devices (see the module docstring); the NUMA nodes of a real machine's
    devices are read under ``sysfs_root`` first."""
    nv = backend.nvml()
    if nv is None:
        return Topology(False, backend.nvml_reason, "nvml")
    source = "simulated" if backend.simulated else "nvml"
    sysfs = None if backend.simulated else sysfs_root
    handles = _handles(nv)
    max_links = int(getattr(nv, "NVML_NVLINK_MAX_LINKS", 18))
    devices, hs, links = [], {}, {}
    for info in backend.devices():
        found = handles.get(_key(info.pci_bus_id))
        if found is None:
            continue
        nvml_index, h = found
        hs[info.index] = h
        links[info.index] = _nvlinks(nv, h, max_links)
        numa_node, numa_source = _numa(nv, h, info.pci_bus_id, sysfs)
        devices.append(GpuTopo(
            index=info.index, nvml_index=nvml_index, name=_call(nv, "nvmlDeviceGetName", h), pci_bus_id=info.pci_bus_id,
            numa_node=numa_node, numa_source=numa_source,
            cpu_affinity=cpu_list(_call(nv, "nvmlDeviceGetCpuAffinity", h, CPU_WORDS)),
            pcie_generation=_call(nv, "nvmlDeviceGetCurrPcieLinkGeneration", h),
            pcie_generation_max=_call(nv, "nvmlDeviceGetMaxPcieLinkGeneration", h),
            pcie_width=_call(nv, "nvmlDeviceGetCurrPcieLinkWidth", h),
            pcie_width_max=_call(nv, "nvmlDeviceGetMaxPcieLinkWidth", h),
            nvlinks_active=len(links[info.index])))
    if not devices:
        return Topology(False, "NVML sees none of the runtime's devices (matched by PCI bus id)", source)
    pairs = []
    bus = {d.index: _key(d.pci_bus_id) for d in devices}
    for a in hs:
        for b in hs:
            if a == b:
                continue
            direct = sum(1 for remote, _ in links[a] if remote == bus[b])
            switched = sum(1 for _, is_switch in links[a] if is_switch)
            level = _call(nv, "nvmlDeviceGetTopologyCommonAncestor", hs[a], hs[b])
            p2p = {}
            for cap, index in P2P_CAPS.items():
                status = _call(nv, "nvmlDeviceGetP2PStatus", hs[a], hs[b], index)
                p2p[cap] = None if status is None else P2P_STATUS.get(status, f"status {status}")
            via = "direct" if direct else ("nvswitch" if switched and p2p.get("nvlink") == "ok" else None)
            pairs.append(PairTopo(a, b, ANCESTORS.get(level) if level is not None else None,
                                  direct or (switched if via == "nvswitch" else 0), via, p2p))
    return Topology(True, "NVML available" if source == "nvml" else "simulated NVML of the virtual machine", source,
                    tuple(devices), tuple(pairs))


def _handles(nv) -> dict:
    """PCI bus id (normalised) -> (NVML index, handle) of every device NVML sees."""
    out = {}
    for i in range(_call(nv, "nvmlDeviceGetCount") or 0):
        h = _call(nv, "nvmlDeviceGetHandleByIndex", i)
        if h is not None:
            out[_key(getattr(_call(nv, "nvmlDeviceGetPciInfo", h), "busId", None))] = (i, h)
    return out


def _numa(nv, h, bus_id: str | None, sysfs_root: str | None) -> tuple[int | None, str | None]:
    """(the device's CPU-side NUMA node, where it came from): sysfs under ``sysfs_root``, else NVML."""
    if sysfs_root is not None:
        node = device_numa_node(bus_id, sysfs_root)
        if node is not None:
            return node, "sysfs"
    node = _call(nv, "nvmlDeviceGetNumaNodeId", h)
    if isinstance(node, int) and not isinstance(node, bool) and node >= 0:
        return node, "nvml"
    return None, None


def pcie_under_load(backend: Backend, device: int) -> tuple[int | None, int | None]:
    """The current PCIe generation and width of ``device`` as NVML reads them now (call right after traffic)."""
    nv = backend.nvml()
    if nv is None:
        return None, None
    found = _handles(nv).get(_key(backend.devices()[device].pci_bus_id))
    if found is None:
        return None, None
    h = found[1]
    return _call(nv, "nvmlDeviceGetCurrPcieLinkGeneration", h), _call(nv, "nvmlDeviceGetCurrPcieLinkWidth", h)
