"""Does a probe's largest case fit the machine? Checked before anything is allocated.

Each probe declares, per config, what its cases hold at once (``needs(backend, config)`` in its module: a
``Need`` per case, built from ``kernels/reference.py``'s ``Footprint``): bytes on one device and on the host,
and the config fields that set them. ``unfit`` compares them with the device's memory (``DeviceInfo.memory_bytes``;
on a virtual machine, the profile's) and the host's (``host_memory_bytes``). On the simulator and on a virtual
machine every device array is a NumPy array on this host, so there the device's bytes count against the host too.
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass

from gpucal.kernels.base import Backend
from gpucal.kernels.reference import Footprint
from gpucal.units import format_bytes

__all__ = ["Need", "host_memory_bytes", "host_unfit", "unfit", "MPI_HOST_PER_BYTE"]

# a message probe over MPI (net, collectives) holds on each rank its send and receive buffers, the expected bytes
# and the compare's: 4 bytes of host memory per byte of its largest message, at the least
MPI_HOST_PER_BYTE = 4


@dataclass(frozen=True)
class Need:
    """What one case holds at its peak. ``fields``: the config fields its size comes from; ``devices``: how
    many devices hold ``footprint.device_bytes`` each at the same time (two for a copy between devices)."""

    case: str
    fields: tuple[str, ...]
    footprint: Footprint
    devices: int = 1


def _cgroup_limit_bytes() -> int | None:
    """The memory limit of this process's cgroup (v2 ``memory.max``, v1 ``memory.limit_in_bytes``), if any."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="ascii") as f:
                text = f.read(64).strip()
        except OSError:
            continue
        if text.isascii() and text.isdigit():
            return int(text)
    return None


def _address_space_left_bytes() -> int | None:
    """What this process may still map under its ``RLIMIT_AS`` (``ulimit -v``), if it has one: the limit less
    the address space it holds now (``/proc/self/statm``)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            held = int(f.read(64).split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        held = 0
    return max(0, soft - held)


def host_memory_bytes() -> int | None:
    """This host's physical memory (``SC_PHYS_PAGES × SC_PAGE_SIZE``), or less where this process may use less:
    its cgroup's limit, or what its address-space limit (``ulimit -v``) leaves; ``None`` where none can be read.
    The total, not what is free now: the check refuses what can never fit, and gives the same answer from one
    run to the next."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        total = None
    found = [v for v in (total, _cgroup_limit_bytes(), _address_space_left_bytes()) if v and v > 0]
    return min(found) if found else None


def unfit(backend: Backend, needs: list[Need], host_bytes: int | None = None) -> tuple[Need, str] | None:
    """The first case of ``needs`` that does not fit, with why (a phrase naming the need and the limit), or
    ``None`` when every one fits. ``host_bytes``: the host's memory (default ``host_memory_bytes()``)."""
    host = host_memory_bytes() if host_bytes is None else host_bytes
    device = backend.device()
    on_host = backend.simulated  # the simulator's and a virtual machine's device arrays are host arrays
    for need in needs:
        fp = need.footprint
        if device.memory_bytes and fp.device_bytes > device.memory_bytes:
            return need, (f"{need.case} would hold {format_bytes(fp.device_bytes)} of device memory, more than the "
                          f"{format_bytes(device.memory_bytes)} of device {device.index} ({device.name})")
        total = fp.host_bytes + (fp.device_bytes * need.devices if on_host else 0)
        if host and total > host:
            where = " (a simulated device's memory is this host's)" if on_host else ""
            return need, (f"{need.case} would hold {format_bytes(total)} of host memory{where}, more than the "
                          f"{format_bytes(host)} this process may use")
    return None


def host_unfit(case: str, nbytes: int, host_bytes: int | None = None) -> str | None:
    """Why ``nbytes`` of host memory for ``case`` cannot fit this host, or ``None`` when it can (the MPI
    probes' check: their device is not known before the world starts)."""
    host = host_memory_bytes() if host_bytes is None else host_bytes
    if host and nbytes > host:
        return (f"{case} would hold {format_bytes(nbytes)} of host memory, more than the {format_bytes(host)} this "
                "process may use")
    return None
