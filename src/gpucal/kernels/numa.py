"""Where host memory and devices sit among the NUMA nodes, as the Linux kernel says.

Two facts, each from the source that knows it:

- **A device's CPU-side node** (``device_numa_node``): the kernel's PCI record,
  ``/sys/bus/pci/devices/<domain:bus:dev.fn>/numa_node`` (-1 where the firmware gives none). NVML's
  ``nvmlDeviceGetNumaNodeId`` is not this fact: on most x86 boards it is not supported (``None``), and on
  Grace Hopper it names the node of the GPU's own memory, not the CPU socket the device hangs off.
- **The node of a host buffer's pages** (``placement``, ``buffer_numa_node``): ``move_pages(2)`` with no
  target nodes, which moves nothing and reports each page's node in ``status`` (a negative status is
  -errno: -ENOENT for a page not present, -EFAULT for memory the kernel cannot look into). Called through
  ctypes: libnuma's ``move_pages`` where ``ctypes.util.find_library("numa")`` finds it, otherwise libc's
  ``syscall`` with the number of ``SYS_MOVE_PAGES`` (from the kernel's ``asm/unistd_64.h`` on x86_64 and
  ``asm-generic/unistd.h`` on aarch64). One call answers for many pages (``get_mempolicy`` with
  ``MPOL_F_NODE|MPOL_F_ADDR`` answers for one address per call), so it samples up to
  ``MAX_SAMPLED_PAGES`` pages spread over the buffer: a 256 MiB buffer costs one system call.

Where the kernel cannot say (another machine, no libnuma and no known syscall number, ENOSYS or EPERM in a
sandbox, pages not present) the answer is ``None`` and ``Placement.method`` says why; nothing here raises
for it. The raw call is injectable (``move_pages=`` on each function) so tests fake it without the kernel.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import platform
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Placement", "device_numa_node", "sysfs_bus_id", "sample_pages", "page_nodes", "placement",
           "buffer_numa_node", "kernel_move_pages", "MAX_SAMPLED_PAGES", "SYS_MOVE_PAGES"]

MAX_SAMPLED_PAGES = 16
# __NR_move_pages per machine: x86_64 from asm/unistd_64.h, aarch64 from asm-generic/unistd.h
SYS_MOVE_PAGES = {"x86_64": 279, "aarch64": 239}

# the raw call: page addresses -> one status per page (node >= 0, or -errno); raises OSError when the call fails
MovePages = Callable[[Sequence[int]], Sequence[int]]

_BUS_ID = re.compile(r"^(?:([0-9a-f]{1,8}):)?([0-9a-f]{1,2}):([0-9a-f]{1,2})\.([0-7])$")


@dataclass(frozen=True)
class Placement:
    """The node of a buffer's sampled pages: ``node`` holds all the known ones, or most of them (ties: the
    lowest node) where ``nodes_seen`` names more than one; ``None`` where no sampled page is known."""

    node: int | None
    nodes_seen: tuple[int, ...]  # distinct nodes among the sampled pages, ascending
    pages_sampled: int
    pages_known: int
    method: str  # how the kernel was asked, and why it could not say where it could not

    @property
    def split(self) -> bool:
        return len(self.nodes_seen) > 1

    @property
    def how(self) -> str:
        """How the node was found, in words: the method, the pages it could place, and a split."""
        text = f"{self.method}: {self.pages_known} of {self.pages_sampled} sampled pages placed"
        if self.split:
            text += f", over nodes {', '.join(map(str, self.nodes_seen))} (the node of most)"
        return text


# devices ---------------------------------------------------------------------------------------------
def sysfs_bus_id(pci_bus_id: str | bytes | None) -> str | None:
    """A PCI bus id as sysfs names it: NVML's and CUDA's "00000000:1A:00.0" -> "0000:1a:00.0" (no domain:
    domain 0); ``None`` for anything that is not a bus id."""
    if isinstance(pci_bus_id, bytes):
        pci_bus_id = pci_bus_id.decode(errors="replace")
    if not pci_bus_id:
        return None
    m = _BUS_ID.match(pci_bus_id.strip().lower())
    if m is None:
        return None
    domain, bus, dev, fn = m.groups()
    return f"{int(domain or '0', 16):04x}:{int(bus, 16):02x}:{int(dev, 16):02x}.{fn}"


def device_numa_node(pci_bus_id: str | bytes | None, sysfs_root: str | os.PathLike = "/sys") -> int | None:
    """The CPU-side NUMA node of a PCI device from ``<sysfs_root>/bus/pci/devices/<bus id>/numa_node``;
    ``None`` where the file is missing, says -1 (no node given by the firmware) or holds anything else."""
    bus = sysfs_bus_id(pci_bus_id)
    if bus is None:
        return None
    try:
        value = int((Path(sysfs_root) / "bus" / "pci" / "devices" / bus / "numa_node").read_text().strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return value if value >= 0 else None


# host buffers ----------------------------------------------------------------------------------------
def sample_pages(address: int, nbytes: int, page_bytes: int, max_pages: int = MAX_SAMPLED_PAGES) -> list[int]:
    """The page-aligned start of up to ``max_pages`` distinct pages that hold bytes of the buffer, spread
    evenly from its first page to its last (both included)."""
    if nbytes <= 0 or max_pages <= 0 or page_bytes <= 0:
        return []
    first = address // page_bytes * page_bytes
    last = (address + nbytes - 1) // page_bytes * page_bytes
    n = (last - first) // page_bytes + 1
    if n <= max_pages:
        return [first + i * page_bytes for i in range(n)]
    if max_pages == 1:
        return [first]
    return [first + (i * (n - 1) // (max_pages - 1)) * page_bytes for i in range(max_pages)]


def _page_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4096


def _call_with(fn, pages: Sequence[int]) -> list[int]:
    count = len(pages)
    addrs = (ctypes.c_void_p * count)(*pages)
    status = (ctypes.c_int * count)(*([-errno.ENOENT] * count))
    ctypes.set_errno(0)
    rc = fn(addrs, status, count)
    if rc != 0:
        err = ctypes.get_errno() or errno.EINVAL
        raise OSError(err, os.strerror(err))
    return list(status)


@functools.lru_cache(maxsize=1)
def _binding() -> tuple[object | None, str]:
    """(call(addrs, status, count) -> rc, how) for this machine, or (None, why not)."""
    path = ctypes.util.find_library("numa")
    if path:
        try:
            lib = ctypes.CDLL(path, use_errno=True)
            move = lib.move_pages
            move.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.POINTER(ctypes.c_void_p),
                             ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int), ctypes.c_int]
            move.restype = ctypes.c_long
            return (lambda addrs, status, count: move(0, count, addrs, None, status, 0)), f"move_pages ({path})"
        except (OSError, AttributeError):
            pass
    machine = platform.machine()
    number = SYS_MOVE_PAGES.get(machine)
    if number is None:
        return None, f"no libnuma, and no move_pages system call number known for {machine or 'this machine'}"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
    except (OSError, AttributeError):
        return None, "no libnuma, and libc's syscall() not found"
    syscall.restype = ctypes.c_long

    def call(addrs, status, count):
        return syscall(ctypes.c_long(number), ctypes.c_long(0), ctypes.c_ulong(count), addrs, None, status,
                       ctypes.c_long(0))
    return call, f"move_pages (syscall {number} on {machine})"


def kernel_move_pages(pages: Sequence[int]) -> list[int]:
    """The kernel's status for each page: its node, or -errno; raises OSError where the call fails."""
    fn, how = _binding()
    if fn is None:
        raise OSError(errno.ENOSYS, how)
    return _call_with(fn, pages)


def _ask(pages: Sequence[int], move_pages: MovePages | None) -> tuple[list[int | None], str]:
    how = "move_pages (injected)" if move_pages is not None else _binding()[1]
    if not pages:
        return [], how
    try:
        status = list((move_pages or kernel_move_pages)(pages))
    except OSError as exc:
        name = errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno else type(exc).__name__
        return [None] * len(pages), f"{how}: failed ({name}: {exc.strerror or exc})"
    if len(status) != len(pages):
        return [None] * len(pages), f"{how}: {len(status)} statuses for {len(pages)} pages"
    return [s if isinstance(s, int) and s >= 0 else None for s in status], how


def page_nodes(address: int, nbytes: int, *, move_pages: MovePages | None = None, page_bytes: int | None = None,
               max_pages: int = MAX_SAMPLED_PAGES) -> list[int | None]:
    """The node of each sampled page of the buffer (``sample_pages``), ``None`` for a page the kernel cannot
    place (not present, not looked into) and for every page where the call fails."""
    pages = sample_pages(address, nbytes, page_bytes or _page_bytes(), max_pages)
    return _ask(pages, move_pages)[0]


def placement(address: int, nbytes: int, *, move_pages: MovePages | None = None, page_bytes: int | None = None,
              max_pages: int = MAX_SAMPLED_PAGES) -> Placement:
    """Where the kernel puts the buffer's sampled pages, with the nodes seen and how it was asked."""
    pages = sample_pages(address, nbytes, page_bytes or _page_bytes(), max_pages)
    nodes, how = _ask(pages, move_pages)
    known = [n for n in nodes if n is not None]
    seen = tuple(sorted(set(known)))
    node = max(seen, key=lambda n: (known.count(n), -n)) if seen else None
    return Placement(node, seen, len(pages), len(known), how)


def buffer_numa_node(address: int, nbytes: int, *, move_pages: MovePages | None = None) -> int | None:
    """The node holding the buffer's sampled pages (most of them where they disagree), ``None`` where the
    kernel cannot say."""
    return placement(address, nbytes, move_pages=move_pages).node
