"""What the copy probes share (``probes/links.py``: ``host-link``, ``d2d``, ``peer``; ``probes/latency.py``:
``latency``): their config and sizes, what they hold at their peak, the devices and pairs they copy on, their
timing policy, a source of random bytes and the poisoning of a destination, the bit-exact compare of a copy,
the base of a case's ``Result``, and enabling peer access between two devices.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gpucal.errors import InputError
from gpucal.kernels.base import Backend
from gpucal.kernels.links import ENGINES, HOST_MEMORY, STAGING_CHUNK_BYTES, Buffer, CopyOp
from gpucal.kernels.reference import Check, Footprint, Work
from gpucal.probes.base import Result, policy_for, source_of, waived
from gpucal.probes.memory import Need
from gpucal.probes.timing import Policy
from gpucal.units import size_label

__all__ = ["LinkConfig", "default_sizes", "sweep_sizes", "sizes_of", "LATENCY_SIZES", "MAX_SWEEP_BYTES",
           "VIRTUAL_MAX_BYTES", "COPY_MAX_K", "CONVENTIONS", "CLOCKS", "needs", "pairs_of", "devices_of", "engines_of",
           "copy_policy", "applicable", "applicable_pairs", "Source", "poison", "compare_copy", "case_base",
           "failed_copy", "memory_of", "enable_peer"]

MAX_SWEEP_BYTES = 256 << 20
VIRTUAL_MAX_BYTES = 16 << 20  # the virtual machine moves real bytes: its default sweep stops here
LATENCY_SIZES = tuple(4 ** i for i in range(1, 9))  # 4 B … 64 KiB
# copies queued behind the blocked start: keep the queue short enough never to fill it
COPY_MAX_K = 64

CONVENTIONS = {
    "uni": "link_Bps = n/t (n bytes one way)",
    "d2d": "copy_Bps = n/t, dram_Bps = 2n/t (n bytes copied within the device)",
    "bi": "fwd_Bps = n/t_fwd, rev_Bps = n/t_rev, sum_Bps = fwd + rev, union_Bps = 2n/t_union (n bytes each way, "
          "started together)",
    "latency": "median seconds per copy of n bytes",
}
CLOCKS = {
    "ops": "CUDA events, blocked start",
    "oneshot": "host clock: issue one copy, wait for it",
    "b2b": "CUDA events: copies issued back to back, no gate",
    "enqueue": "host clock: issuing the copy alone",
    "ungated": "CUDA events, copies as issued (no gate: pageable memory or the driver's staging can block the host)",
}


def sweep_sizes(lo: int = 4, hi: int = MAX_SWEEP_BYTES) -> tuple[int, ...]:
    """Powers of 2 from ``lo`` to ``hi`` bytes."""
    out, n = [], 1
    while n <= hi:
        if n >= lo:
            out.append(n)
        n *= 2
    return tuple(out)


@dataclass(frozen=True)
class LinkConfig:
    sizes: tuple[int, ...] | None = None  # the sweep; default 4 B … 256 MiB (virtual: … 16 MiB)
    sm_sizes: tuple[int, ...] | None = None  # sizes for the kernel (sm) engines; default the sweep
    bidirectional_sizes: tuple[int, ...] | None = None  # default: the sweep's largest size
    latency_sizes: tuple[int, ...] = LATENCY_SIZES
    latency_kinds: tuple[str, ...] = ("oneshot", "b2b", "enqueue")  # which latency cases to time
    engines: tuple[str, ...] | None = None  # default: every engine of each path
    memory: tuple[str, ...] = HOST_MEMORY
    devices: tuple[int, ...] | None = None  # host-link, d2d, latency: default every device
    pairs: tuple[tuple[int, int], ...] | None = None  # peer, latency: unordered pairs; default every pair
    budget_s: float | None = None  # per case
    seed: int = 0


def default_sizes(backend: Backend) -> tuple[int, ...]:
    return sweep_sizes(4, VIRTUAL_MAX_BYTES if backend.clock == "virtual" else MAX_SWEEP_BYTES)


def sizes_of(backend: Backend, config: LinkConfig) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """The sweep, the kernel engines' sizes and the bidirectional sizes of ``config``."""
    sizes = tuple(sorted(set(config.sizes or default_sizes(backend))))
    sm = tuple(sorted(set(config.sm_sizes))) if config.sm_sizes else sizes
    return sizes, sm, (max(sizes),) if config.bidirectional_sizes is None else config.bidirectional_sizes


# Host bytes per byte of the largest size a probe holds at once (measured with tracemalloc on the virtual backend,
# tests/unit/test_input_bounds.py): each source's random bytes and their complement (2 per source), the host
# buffers, the read-back and compare of a destination, and what the previous device or memory kind held until it
# is replaced. host-link: a device and a host source, two host buffers; d2d: one source; peer: two sources;
# latency: the host-link part's sources and buffers, then a pair's. Peer and latency also stage through two chunks.
_HOST_PER_BYTE = {"host-link": 16, "d2d": 6, "peer": 6, "latency": 13}


def needs(backend: Backend, config: LinkConfig, probe: str) -> list[Need]:
    """What ``probe`` (host-link, d2d, peer, latency) holds at its peak: two device buffers of its largest size
    on each device it copies on (both devices of a pair at once), and the host's share (``_HOST_PER_BYTE``)."""
    if probe == "latency":
        top, fields = max(config.latency_sizes), ("latency_sizes",)
    else:
        top, fields = max(sizes_of(backend, config)[0]), ("sizes",)
    devices = 2 if probe in ("peer", "latency") and backend.device_count() > 1 else 1
    host = _HOST_PER_BYTE[probe] * top + (2 * STAGING_CHUNK_BYTES if probe in ("peer", "latency") else 0)
    return [Need(f"the {probe} probe's copies of {size_label(top)}", fields, Footprint(2 * top, host), devices)]


def pairs_of(backend: Backend, config: LinkConfig) -> list[tuple[int, int]]:
    n = backend.device_count()
    if config.pairs is not None:
        for a, b in config.pairs:
            if a == b or not (0 <= a < n and 0 <= b < n):
                raise InputError(f"--pairs: {a}-{b} is not a pair of two of this machine's {n} devices")
        return [tuple(p) for p in config.pairs]
    return [(a, b) for a in range(n) for b in range(a + 1, n)]


def devices_of(backend: Backend, config: LinkConfig) -> list[int]:
    n = backend.device_count()
    if config.devices is None:
        return list(range(n))
    bad = [d for d in config.devices if not 0 <= d < n]
    if bad:
        raise InputError(f"--devices: device {bad[0]} does not exist (this machine has {n})")
    return list(config.devices)


def engines_of(path: str, config: LinkConfig) -> list[str]:
    return [e for e in ENGINES[path] if config.engines is None or e in config.engines]


def copy_policy(backend: Backend, config: LinkConfig) -> Policy:
    return replace(policy_for(backend, config.budget_s), max_k=COPY_MAX_K)


def applicable(backend: Backend) -> str | None:
    return backend.links_reason()


def applicable_pairs(backend: Backend) -> str | None:
    reason = backend.links_reason()
    if reason is None and backend.device_count() < 2:
        return f"one device ({backend.device().name}): no pair of devices to copy between"
    return reason


class Source:
    """A source buffer and its bytes: random bytes written to a source buffer once; a case poisons its destination with their complement
    (``poison``: every byte differs from what the copy must bring)."""

    def __init__(self, backend: Backend, buf: Buffer, seed: int):
        self.backend, self.buf = backend, buf
        self.bytes = np.random.default_rng(seed).integers(0, 256, buf.nbytes, dtype=np.uint8)
        self.poison = ~self.bytes
        backend.write(buf, self.bytes)


def poison(backend: Backend, ops: list[CopyOp], sources: list[Source]) -> None:
    """Fill each op's destination with the complement of its source's bytes, so that a copy that writes
    nothing (or only part) fails the compare that follows."""
    for op, src in zip(ops, sources):
        backend.write(op.dst, src.poison[: op.nbytes])


def compare_copy(backend: Backend, op: CopyOp, expected: np.ndarray) -> Check:
    got = backend.read(op.dst, op.nbytes)
    method = "bit-exact compare of every copied byte"
    if np.array_equal(got, expected[: op.nbytes]):  # the common case, without an index array of 256 MiB
        return Check(True, method, op.nbytes, max_abs_err=0.0, tolerance=0.0)
    bad = np.flatnonzero(got != expected[: op.nbytes])
    i = int(bad[0])
    return Check(False, method, op.nbytes, index=(i,), got=float(got[i]), expected=float(expected[i]), tolerance=0.0,
                 max_abs_err=float(bad.size))  # for bytes: how many differ


def case_base(backend: Backend, probe: str, case: str, params: dict, work: Work, convention: str) -> dict:
    return dict(probe=probe, case=case, backend=backend.name, source=source_of(backend),
                device=backend.devices()[params.get("device", params.get("src", 0))].name, params=params, work=work,
                byte_convention=convention, library=backend.name)


def failed_copy(check: Check, base: dict, when: str) -> Result:
    return Result(status="failed", check=check, reason=f"verification {when} failed: {int(check.max_abs_err or 0)} of "
                  f"{check.checked} bytes differ; first at byte {check.index[0]}: got {int(check.got)}, expected "
                  f"{int(check.expected)}", **base)


def memory_of(op: CopyOp) -> str | None:
    return next((b.kind for b in (op.src, op.dst) if b.on_host), None)


def enable_peer(backend: Backend, probe: str, a: int, b: int) -> Result | None:
    """Enable peer access between ``a`` and ``b``; where that fails, the waived case that says why (the pair's
    P2P is not measured, the run goes on)."""
    try:
        backend.set_peer_access(a, b, True)
    except Exception as exc:
        return waived(backend, probe, f"p2p-dev{a}<->dev{b}", f"enabling peer access failed: {type(exc).__name__}: "
                      f"{exc}", {"path": "p2p", "src": a, "dst": b}, device=a)
    return None
