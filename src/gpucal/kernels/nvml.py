"""What NVML says of the devices: identity, memory, clocks, bus width, PCIe link, throttle reasons.

Through ``nvidia-ml-py`` (import name ``pynvml``). Every call may fail on some driver or device (a
virtual GPU, an old driver): each fact is read on its own and left ``None`` when its call fails. Where
there is no driver at all, ``nvml_status()`` says why in one line and the rest returns nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["NvmlDevice", "ClockState", "nvml_status", "nvml_devices", "read_clocks", "cpu_affinity", "THROTTLE_BENIGN"]

# Throttle reasons that do not slow a measurement down: the GPU is idle, or clocks set by the admin.
THROTTLE_BENIGN = frozenset({"gpu_idle", "applications_clocks_setting"})

_REASONS = {
    "gpu_idle": 0x1, "applications_clocks_setting": 0x2, "sw_power_cap": 0x4, "hw_slowdown": 0x8,
    "sync_boost": 0x10, "sw_thermal_slowdown": 0x20, "hw_thermal_slowdown": 0x40,
    "hw_power_brake_slowdown": 0x80, "display_clock_setting": 0x100,
}


@dataclass(frozen=True)
class NvmlDevice:
    index: int
    pci_bus_id: str | None = None
    name: str | None = None
    uuid: str | None = None
    memory_bytes: int | None = None
    memory_clock_max_hz: float | None = None
    memory_bus_width_bits: int | None = None
    sm_clock_max_hz: float | None = None
    pcie_generation: int | None = None
    pcie_generation_max: int | None = None
    pcie_width: int | None = None
    pcie_width_max: int | None = None
    numa_node: int | None = None


@dataclass(frozen=True)
class ClockState:
    """Clocks and throttle reasons at one moment; ``throttled`` when a reason that slows work is set."""

    sm_clock_hz: float | None
    memory_clock_hz: float | None
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def throttled(self) -> bool:
        return any(r not in THROTTLE_BENIGN for r in self.reasons)


def _nvml():
    import pynvml

    pynvml.nvmlInit()
    return pynvml


def _try(fn, *args):
    import pynvml

    try:
        return fn(*args)
    except (pynvml.NVMLError, AttributeError, TypeError, ValueError):
        return None


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def nvml_status() -> tuple[bool, str, dict]:
    """(available, one-line reason or versions, {driver_version, cuda_driver_version, nvml_version})."""
    try:
        nv = _nvml()
    except ImportError:
        return False, "nvidia-ml-py is not installed", {}
    except Exception as exc:  # pynvml.NVMLError and its many subclasses, e.g. LibraryNotFound
        return False, f"NVML not available ({type(exc).__name__}: {exc})", {}
    cuda = _try(nv.nvmlSystemGetCudaDriverVersion)
    versions = {"driver_version": _text(_try(nv.nvmlSystemGetDriverVersion)),
                "cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else None,
                "nvml_version": _text(_try(nv.nvmlSystemGetNVMLVersion))}
    return True, "NVML available", versions


def _device(nv, i: int) -> NvmlDevice:
    h = nv.nvmlDeviceGetHandleByIndex(i)
    mem = _try(nv.nvmlDeviceGetMemoryInfo, h)
    mem_clock = _try(nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_MEM)
    sm_clock = _try(nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_SM)
    pci = _try(nv.nvmlDeviceGetPciInfo, h)
    return NvmlDevice(
        index=i,
        pci_bus_id=_text(pci.busId) if pci is not None else None,
        name=_text(_try(nv.nvmlDeviceGetName, h)),
        uuid=_text(_try(nv.nvmlDeviceGetUUID, h)),
        memory_bytes=int(mem.total) if mem is not None else None,
        memory_clock_max_hz=mem_clock * 1e6 if mem_clock else None,
        memory_bus_width_bits=_try(nv.nvmlDeviceGetMemoryBusWidth, h),
        sm_clock_max_hz=sm_clock * 1e6 if sm_clock else None,
        pcie_generation=_try(nv.nvmlDeviceGetCurrPcieLinkGeneration, h),
        pcie_generation_max=_try(nv.nvmlDeviceGetMaxPcieLinkGeneration, h),
        pcie_width=_try(nv.nvmlDeviceGetCurrPcieLinkWidth, h),
        pcie_width_max=_try(nv.nvmlDeviceGetMaxPcieLinkWidth, h),
        numa_node=_try(getattr(nv, "nvmlDeviceGetNumaNodeId", None), h),
    )


def nvml_devices() -> list[NvmlDevice]:
    """Every device NVML sees (empty where NVML is not available)."""
    try:
        nv = _nvml()
        return [_device(nv, i) for i in range(nv.nvmlDeviceGetCount())]
    except Exception:  # no driver: nvml_status() says why
        return []


def _bus_key(bus_id: str | None) -> str | None:
    """PCI bus ids compare without the domain's width or case ("00000000:1A:00.0" == "0000:1a:00.0")."""
    if not bus_id:
        return None
    domain, _, rest = bus_id.lower().partition(":")
    return f"{int(domain, 16):x}:{rest}" if rest else bus_id.lower()


def nvml_device_for(pci_bus_id: str | None, uuid: str | None = None) -> NvmlDevice | None:
    """The NVML record of the device with this PCI bus id (or UUID)."""
    for dev in nvml_devices():
        if (pci_bus_id and _bus_key(dev.pci_bus_id) == _bus_key(pci_bus_id)) or (uuid and dev.uuid == uuid):
            return dev
    return None


def read_clocks(pci_bus_id: str | None) -> ClockState | None:
    """SM and memory clocks now, and the throttle reasons set; ``None`` where NVML cannot say."""
    try:
        nv = _nvml()
        h = nv.nvmlDeviceGetHandleByPciBusId(pci_bus_id) if pci_bus_id else nv.nvmlDeviceGetHandleByIndex(0)
    except Exception:
        return None
    sm = _try(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM)
    mem = _try(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_MEM)
    get_reasons = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
        getattr(nv, "nvmlDeviceGetCurrentClocksThrottleReasons", None)
    mask = _try(get_reasons, h) if get_reasons else None
    reasons = tuple(name for name, bit in _REASONS.items() if mask and mask & bit)
    return ClockState(sm * 1e6 if sm else None, mem * 1e6 if mem else None, reasons)


def cpu_affinity(pci_bus_id: str | None) -> set[int] | None:
    """The CPUs NVML calls local to the device (its NUMA node's), or ``None`` where it cannot say."""
    try:
        nv = _nvml()
        h = nv.nvmlDeviceGetHandleByPciBusId(pci_bus_id)
        words = nv.nvmlDeviceGetCpuAffinity(h, 16)
    except Exception:
        return None
    cpus = {w * 64 + b for w, word in enumerate(words) for b in range(64) if int(word) >> b & 1}
    return cpus or None
