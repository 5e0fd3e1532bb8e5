"""Link probes: what a copy costs on every path bytes take — ``host-link``, ``d2d``, ``peer`` (and, in
``probes/latency.py``, ``latency``).

- ``host-link``, per device: H2D and D2H from pinned memory (NUMA-local to the device) and pageable memory,
  by the copy engine (``ce``) and by a kernel reading or writing mapped pinned memory (``sm``), each swept
  over sizes; H2D and D2H together (bidirectional, pinned memory) at the largest size. Pageable memory has
  no bidirectional case: such a copy blocks the host until it is done, so the second direction would start
  only after the first, and a figure timed from each copy's own start would read about twice the truth.
- ``d2d``, per device: a copy within device memory by the copy engine and by a kernel.
- ``peer``, per pair of devices, both ways: the driver's own staging (``memcpyPeerAsync`` with peer access
  not enabled), an explicit host-staged copy (D2H into pinned memory then H2D, chunked and double
  buffered), and, where the runtime can reach the peer, P2P with peer access enabled both ways: copy
  engine, a kernel on the destination reading the peer (``sm-read``), a kernel on the source writing it
  (``sm-write``); P2P and host staging bidirectional at the largest size.
- ``latency``: small copies (4 B … 64 KiB) on the host links and between devices (both ways: the driver's
  staging, explicit host staging and, where the runtime allows it, P2P): one at a time (issue, wait; host
  clock), back to back as a program issues them (CUDA events), and the issue cost alone.

Every case fills its source with random bytes and its destination with their complement, copies once,
compares every byte, poisons the destination again, then times (blocked start, CUDA events; ``k`` copies
per sample, the harness's statistics, ``k`` never more than the gate can hold), then compares again: a
timed copy that wrote nothing, or corrupted, fails too, and a failed case gives no number. The two
directions of a bidirectional case are queued behind one gate and start together. Byte convention: a
one-way copy of n bytes is ``link_Bps = n/t``; bidirectional gives each direction (``fwd_Bps``,
``rev_Bps``), their sum (``sum_Bps``) and ``union_Bps = 2n/t_union``; a copy within a device gives
``copy_Bps = n/t`` and ``dram_Bps = 2n/t``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gpucal.errors import InputError
from gpucal.kernels.backend import Backend
from gpucal.kernels.links import ENGINES, HOST_MEMORY, STAGING_CHUNK_BYTES, Buffer, CopyOp
from gpucal.kernels.reference import Check, Footprint, Work
from gpucal.kernels.nvml import read_clocks
from gpucal.probes.base import Probe, Result, policy_for, register, source_of, waived
from gpucal.probes.memory import Need
from gpucal.probes.timing import Policy, measure
from gpucal.units import size_label
from gpucal.probes.topology import pcie_under_load

__all__ = ["LinkConfig", "default_sizes", "sweep_sizes", "LATENCY_SIZES", "run_host_link", "run_d2d", "run_peer",
           "pairs_of", "needs", "CONVENTIONS", "CLOCKS"]

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


def _sizes(backend: Backend, config: LinkConfig) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
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
        top, fields = max(_sizes(backend, config)[0]), ("sizes",)
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


def _devices(backend: Backend, config: LinkConfig) -> list[int]:
    n = backend.device_count()
    if config.devices is None:
        return list(range(n))
    bad = [d for d in config.devices if not 0 <= d < n]
    if bad:
        raise InputError(f"--devices: device {bad[0]} does not exist (this machine has {n})")
    return list(config.devices)


def _engines(path: str, config: LinkConfig) -> list[str]:
    return [e for e in ENGINES[path] if config.engines is None or e in config.engines]


def _copy_policy(backend: Backend, config: LinkConfig) -> Policy:
    return replace(policy_for(backend, config.budget_s), max_k=COPY_MAX_K)


def applicable(backend: Backend) -> str | None:
    return backend.links_reason()


def applicable_pairs(backend: Backend) -> str | None:
    reason = backend.links_reason()
    if reason is None and backend.device_count() < 2:
        return f"one device ({backend.device().name}): no pair of devices to copy between"
    return reason


# one case --------------------------------------------------------------------------------------------
class _Source:
    """Random bytes written to a source buffer once; a case poisons its destination with their complement
    (``poison``: every byte differs from what the copy must bring)."""

    def __init__(self, backend: Backend, buf: Buffer, seed: int):
        self.backend, self.buf = backend, buf
        self.bytes = np.random.default_rng(seed).integers(0, 256, buf.nbytes, dtype=np.uint8)
        self.poison = ~self.bytes
        backend.write(buf, self.bytes)


def poison(backend: Backend, ops: list[CopyOp], sources: list[_Source]) -> None:
    """Fill each op's destination with the complement of its source's bytes, so that a copy that writes
    nothing (or only part) fails the compare that follows."""
    for op, src in zip(ops, sources):
        backend.write(op.dst, src.poison[: op.nbytes])


def _compare(backend: Backend, op: CopyOp, expected: np.ndarray) -> Check:
    got = backend.read(op.dst, op.nbytes)
    method = "bit-exact compare of every copied byte"
    if np.array_equal(got, expected[: op.nbytes]):  # the common case, without an index array of 256 MiB
        return Check(True, method, op.nbytes, max_abs_err=0.0, tolerance=0.0)
    bad = np.flatnonzero(got != expected[: op.nbytes])
    i = int(bad[0])
    return Check(False, method, op.nbytes, index=(i,), got=float(got[i]), expected=float(expected[i]), tolerance=0.0,
                 max_abs_err=float(bad.size))  # for bytes: how many differ


def _base(backend: Backend, probe: str, case: str, params: dict, work: Work, convention: str) -> dict:
    return dict(probe=probe, case=case, backend=backend.name, source=source_of(backend),
                device=backend.devices()[params.get("device", params.get("src", 0))].name, params=params, work=work,
                byte_convention=convention, library=backend.name)


def _failed(check: Check, base: dict, when: str) -> Result:
    return Result(status="failed", check=check, reason=f"verification {when} failed: {int(check.max_abs_err or 0)} of "
                  f"{check.checked} bytes differ; first at byte {check.index[0]}: got {int(check.got)}, expected "
                  f"{int(check.expected)}", **base)


def _clocks(backend: Backend, device: int):
    return None if backend.simulated else read_clocks(backend.devices()[device].pci_bus_id)


def copy_case(backend: Backend, probe: str, ops: list[CopyOp], sources: list[_Source], policy: Policy) -> Result:
    """Verify ``ops`` (one copy each), time them together (one op: one-way; two: bidirectional), verify again."""
    first = ops[0]
    n = first.nbytes
    kind = "bi" if len(ops) == 2 else ("d2d" if first.path == "d2d" else "uni")
    host = next((b for b in (first.src, first.dst) if b.on_host), None)
    gated = all(op.state.get("gate", True) for op in ops)
    params = {"path": first.path, "engine": first.engine, "memory": _memory(first), "src": first.src.device,
              "dst": first.dst.device, "bytes": n, "direction": kind if kind == "bi" else "one-way",
              "series": first.label, "host_numa_node": host.numa_node if host else None,
              "host_numa_how": host.numa_how if host else None,
              "clock": CLOCKS["ops"] if gated else CLOCKS["ungated"]}
    if kind == "bi":
        params["reverse"] = ops[1].label
    case = ("bi-" if kind == "bi" else "") + f"{first.label}-{n}B"
    base = _base(backend, probe, case, params, Work(n * len(ops), n * len(ops), 0), CONVENTIONS[kind])
    if kind == "bi" and not gated:
        # a copy from or to pageable memory (or the driver's staging) blocks the host until it is done: the
        # second direction would start only after the first, so no concurrent figure can be taken
        return Result(status="waived", reason="bidirectional: a copy from or to pageable memory (or the driver's "
                      "staging) blocks the host, so the two directions cannot start together; not offered", **base)
    if gated and backend.max_gated_k(ops) < 1:
        return Result(status="waived", reason=f"a copy of {n} B along {first.path} queues more commands than the "
                      "blocked start holds behind its gate (a stream's queue would fill and block the host); not "
                      "timed: use smaller sizes", **base)
    try:
        poison(backend, ops, sources)
        for op in ops:
            backend.run_op(op)
        for op, src in zip(ops, sources):
            check = _compare(backend, op, src.bytes)
            if not check.ok:
                return _failed(check, base, "before timing")
        poison(backend, ops, sources)  # again: what the timed copies write is compared after timing
    except Exception as exc:  # a device error: reported on the case, the run goes on
        return Result(status="error", reason=f"{type(exc).__name__}: {exc}", **base)
    before = _clocks(backend, first.device)
    per_op: list[list[float]] = [[] for _ in ops]

    def run_k(k: int) -> float:
        times = backend.time_ops(ops, k)
        for i, t in enumerate(times):
            per_op[i].append(t / k)
        return max(times)

    if gated:  # every sample behind the gate: never more copies than it holds
        policy = replace(policy, max_k=min(policy.max_k, backend.max_gated_k(ops)))
    try:
        timing = measure(run_k, policy, clock_name=f"{backend.clock}: {params['clock']}")
        for op, src in zip(ops, sources):
            after_check = _compare(backend, op, src.bytes)
            if not after_check.ok:
                return _failed(after_check, base, "after timing")
    except Exception as exc:
        return Result(status="error", check=check, reason=f"timing: {type(exc).__name__}: {exc}", **base)
    after = _clocks(backend, first.device)
    t = timing.median_s
    if kind == "bi":
        skip = len(per_op[0]) - timing.n  # the warm-up samples
        t_fwd, t_rev = (float(np.median(s[skip:])) for s in per_op)
        metrics = {"fwd_Bps": n / t_fwd, "rev_Bps": n / t_rev, "sum_Bps": n / t_fwd + n / t_rev, "union_Bps": 2 * n / t}
    elif kind == "d2d":
        metrics = {"copy_Bps": n / t, "dram_Bps": 2 * n / t}
    else:
        metrics = {"link_Bps": n / t}
    return Result(status="passed", check=check, timing=timing, metrics=metrics, clocks_before=before,
                  clocks_after=after, **base)


def _memory(op: CopyOp) -> str | None:
    return next((b.kind for b in (op.src, op.dst) if b.on_host), None)


def _series(backend: Backend, probe: str, path: str, engine: str, src: _Source, dst: Buffer, sizes, policy) -> list[Result]:
    out = []
    for n in sizes:
        try:
            op = backend.copy_op(path, engine, src.buf, dst, n)
        except Exception as exc:
            out.append(_error(backend, probe, path, engine, src.buf, dst, n, exc))
            continue
        out.append(copy_case(backend, probe, [op], [src], policy))
    return out


def _error(backend, probe, path, engine, src: Buffer, dst: Buffer, n: int, exc: Exception) -> Result:
    label = CopyOp(path, engine, src, dst, n, src.device).label
    params = {"path": path, "engine": engine, "src": src.device, "dst": dst.device, "bytes": n, "direction": "one-way",
              "series": label}
    return Result(status="error", reason=f"{type(exc).__name__}: {exc}",
                  **_base(backend, probe, f"{label}-{n}B", params, Work(n, n, 0), CONVENTIONS["uni"]))


# the probes ------------------------------------------------------------------------------------------
def run_host_link(backend: Backend, config: LinkConfig = LinkConfig()) -> list[Result]:
    (sizes, sm_sizes, bi_sizes), policy = _sizes(backend, config), _copy_policy(backend, config)
    top = max(sizes)
    results = []
    for d in _devices(backend, config):
        with backend.local_to(d):
            dev_src = _Source(backend, backend.alloc("device", top, d), config.seed + 10 * d)
            dev_dst = backend.alloc("device", top, d)
            for memory in config.memory:
                host_src = _Source(backend, backend.alloc(memory, top, d), config.seed + 10 * d + 1)
                host_dst = backend.alloc(memory, top, d)
                for path, src, dst in (("h2d", host_src, dev_dst), ("d2h", dev_src, host_dst)):
                    for engine in _engines(path, config):
                        if engine == "sm" and memory == "pageable":
                            continue  # a kernel reaches pinned memory only
                        results += _series(backend, "host-link", path, engine, src, dst,
                                           sm_sizes if engine == "sm" else sizes, policy)
                        if (path, engine, memory) == ("h2d", "ce", "pinned") and results[-1].status == "passed":
                            # NVML's current PCIe link drops while idle: read it right after the largest copy
                            gen, width = pcie_under_load(backend, d)
                            results[-1].params["pcie_under_load"] = {"generation": gen, "width": width}
                if "ce" in _engines("h2d", config) and memory == "pinned":  # pageable: see copy_case
                    for n in bi_sizes:
                        ops = [backend.copy_op("h2d", "ce", host_src.buf, dev_dst, n),
                               backend.copy_op("d2h", "ce", dev_src.buf, host_dst, n)]
                        results.append(copy_case(backend, "host-link", ops, [host_src, dev_src], policy))
    return results


def run_d2d(backend: Backend, config: LinkConfig = LinkConfig()) -> list[Result]:
    sizes, policy = _sizes(backend, config)[0], _copy_policy(backend, config)
    results = []
    for d in _devices(backend, config):
        src = _Source(backend, backend.alloc("device", max(sizes), d), config.seed + 10 * d + 2)
        dst = backend.alloc("device", max(sizes), d)
        for engine in _engines("d2d", config):
            results += _series(backend, "d2d", "d2d", engine, src, dst, sizes, policy)
    return results


def _enable_peer(backend: Backend, probe: str, a: int, b: int) -> Result | None:
    """Enable peer access between ``a`` and ``b``; where that fails, the waived case that says why (the pair's
    P2P is not measured, the run goes on)."""
    try:
        backend.set_peer_access(a, b, True)
    except Exception as exc:
        return waived(backend, probe, f"p2p-dev{a}<->dev{b}", f"enabling peer access failed: {type(exc).__name__}: "
                      f"{exc}", {"path": "p2p", "src": a, "dst": b}, device=a)
    return None


def run_peer(backend: Backend, config: LinkConfig = LinkConfig()) -> list[Result]:
    (sizes, sm_sizes, bi_sizes), policy = _sizes(backend, config), _copy_policy(backend, config)
    top = max(sizes)
    results = []
    for a, b in pairs_of(backend, config):
        src = {a: _Source(backend, backend.alloc("device", top, a), config.seed + 100 * a + b),
               b: _Source(backend, backend.alloc("device", top, b), config.seed + 100 * b + a)}
        dst = {a: backend.alloc("device", top, a), b: backend.alloc("device", top, b)}
        backend.set_peer_access(a, b, False)
        for path in ("driver-staged", "host-staged"):
            for s, d in ((a, b), (b, a)):
                for engine in _engines(path, config):
                    results += _series(backend, "peer", path, engine, src[s], dst[d], sizes, policy)
            if _engines(path, config) == ["staged"]:
                for n in bi_sizes:
                    ops = [backend.copy_op(path, "staged", src[a].buf, dst[b], n),
                           backend.copy_op(path, "staged", src[b].buf, dst[a], n)]
                    results.append(copy_case(backend, "peer", ops, [src[a], src[b]], policy))
        can = backend.can_access_peer(a, b) and backend.can_access_peer(b, a)
        if not can:
            for s, d in ((a, b), (b, a)):
                results.append(waived(backend, "peer", f"p2p-dev{s}->dev{d}",
                                      f"the runtime reports no peer access between devices {s} and {d} "
                                      "(cudaDeviceCanAccessPeer = 0): copies between them are staged",
                                      {"path": "p2p", "src": s, "dst": d}, device=s))
            continue
        refused = _enable_peer(backend, "peer", a, b)
        if refused:
            results.append(refused)
            continue
        try:
            for s, d in ((a, b), (b, a)):
                for engine in _engines("p2p", config):
                    results += _series(backend, "peer", "p2p", engine, src[s], dst[d],
                                       sizes if engine == "ce" else sm_sizes, policy)
            if "ce" in _engines("p2p", config):
                for n in bi_sizes:
                    ops = [backend.copy_op("p2p", "ce", src[a].buf, dst[b], n),
                           backend.copy_op("p2p", "ce", src[b].buf, dst[a], n)]
                    results.append(copy_case(backend, "peer", ops, [src[a], src[b]], policy))
        finally:
            backend.set_peer_access(a, b, False)
    return results


for _name, _desc, _run, _applicable in (
        ("host-link", "host<->device copies: H2D and D2H, pinned and pageable, copy engine and kernel, swept over "
                      "sizes; bidirectional", run_host_link, applicable),
        ("d2d", "copies within device memory: copy engine and kernel, swept over sizes", run_d2d, applicable),
        ("peer", "copies between devices: P2P (copy engine, kernel read, kernel write), the driver's staging and "
                 "explicit host staging, both ways, swept over sizes; bidirectional", run_peer, applicable_pairs)):
    register(Probe(_name, _desc, LinkConfig, _applicable, _run,
                   lambda backend, config, probe=_name: needs(backend, config, probe)))
