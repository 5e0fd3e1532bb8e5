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
``copy_Bps = n/t`` and ``dram_Bps = 2n/t``. What the copy probes share (config, sizes, sources, compares)
is in ``probes/copies.py``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from gpucal.kernels.base import Backend
from gpucal.kernels.links import Buffer, CopyOp
from gpucal.kernels.nvml import read_clocks
from gpucal.kernels.reference import Work
from gpucal.probes.base import Probe, Result, waived
from gpucal.probes.copies import (CLOCKS, CONVENTIONS, LATENCY_SIZES, MAX_SWEEP_BYTES, VIRTUAL_MAX_BYTES, LinkConfig,
                                  Source, applicable, applicable_pairs, case_base, compare_copy, copy_policy,
                                  default_sizes, devices_of, enable_peer, engines_of, failed_copy, memory_of, needs,
                                  pairs_of, poison, sizes_of, sweep_sizes)
from gpucal.probes.timing import Policy, measure
from gpucal.probes.topology import pcie_under_load

__all__ = ["LinkConfig", "default_sizes", "sweep_sizes", "LATENCY_SIZES", "MAX_SWEEP_BYTES", "VIRTUAL_MAX_BYTES",
           "run_host_link", "run_d2d", "run_peer", "copy_case", "pairs_of", "needs", "CONVENTIONS", "CLOCKS",
           "PROBES"]


def _clocks(backend: Backend, device: int):
    return None if backend.simulated else read_clocks(backend.devices()[device].pci_bus_id)


def copy_case(backend: Backend, probe: str, ops: list[CopyOp], sources: list[Source], policy: Policy) -> Result:
    """Verify ``ops`` (one copy each), time them together (one op: one-way; two: bidirectional), verify again."""
    first = ops[0]
    n = first.nbytes
    kind = "bi" if len(ops) == 2 else ("d2d" if first.path == "d2d" else "uni")
    host = next((b for b in (first.src, first.dst) if b.on_host), None)
    gated = all(op.state.get("gate", True) for op in ops)
    params = {"path": first.path, "engine": first.engine, "memory": memory_of(first), "src": first.src.device,
              "dst": first.dst.device, "bytes": n, "direction": kind if kind == "bi" else "one-way",
              "series": first.label, "host_numa_node": host.numa_node if host else None,
              "host_numa_how": host.numa_how if host else None,
              "clock": CLOCKS["ops"] if gated else CLOCKS["ungated"]}
    if kind == "bi":
        params["reverse"] = ops[1].label
    case = ("bi-" if kind == "bi" else "") + f"{first.label}-{n}B"
    base = case_base(backend, probe, case, params, Work(n * len(ops), n * len(ops), 0), CONVENTIONS[kind])
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
            check = compare_copy(backend, op, src.bytes)
            if not check.ok:
                return failed_copy(check, base, "before timing")
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
            after_check = compare_copy(backend, op, src.bytes)
            if not after_check.ok:
                return failed_copy(after_check, base, "after timing")
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


def _series(backend: Backend, probe: str, path: str, engine: str, src: Source, dst: Buffer, sizes, policy) -> list[Result]:
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
                  **case_base(backend, probe, f"{label}-{n}B", params, Work(n, n, 0), CONVENTIONS["uni"]))


# the probes ------------------------------------------------------------------------------------------
def run_host_link(backend: Backend, config: LinkConfig = LinkConfig()) -> list[Result]:
    (sizes, sm_sizes, bi_sizes), policy = sizes_of(backend, config), copy_policy(backend, config)
    top = max(sizes)
    results = []
    for d in devices_of(backend, config):
        with backend.local_to(d):
            dev_src = Source(backend, backend.alloc("device", top, d), config.seed + 10 * d)
            dev_dst = backend.alloc("device", top, d)
            for memory in config.memory:
                host_src = Source(backend, backend.alloc(memory, top, d), config.seed + 10 * d + 1)
                host_dst = backend.alloc(memory, top, d)
                for path, src, dst in (("h2d", host_src, dev_dst), ("d2h", dev_src, host_dst)):
                    for engine in engines_of(path, config):
                        if engine == "sm" and memory == "pageable":
                            continue  # a kernel reaches pinned memory only
                        results += _series(backend, "host-link", path, engine, src, dst,
                                           sm_sizes if engine == "sm" else sizes, policy)
                        if (path, engine, memory) == ("h2d", "ce", "pinned") and results[-1].status == "passed":
                            # NVML's current PCIe link drops while idle: read it right after the largest copy
                            gen, width = pcie_under_load(backend, d)
                            results[-1].params["pcie_under_load"] = {"generation": gen, "width": width}
                if "ce" in engines_of("h2d", config) and memory == "pinned":  # pageable: see copy_case
                    for n in bi_sizes:
                        ops = [backend.copy_op("h2d", "ce", host_src.buf, dev_dst, n),
                               backend.copy_op("d2h", "ce", dev_src.buf, host_dst, n)]
                        results.append(copy_case(backend, "host-link", ops, [host_src, dev_src], policy))
    return results


def run_d2d(backend: Backend, config: LinkConfig = LinkConfig()) -> list[Result]:
    sizes, policy = sizes_of(backend, config)[0], copy_policy(backend, config)
    results = []
    for d in devices_of(backend, config):
        src = Source(backend, backend.alloc("device", max(sizes), d), config.seed + 10 * d + 2)
        dst = backend.alloc("device", max(sizes), d)
        for engine in engines_of("d2d", config):
            results += _series(backend, "d2d", "d2d", engine, src, dst, sizes, policy)
    return results


def run_peer(backend: Backend, config: LinkConfig = LinkConfig()) -> list[Result]:
    (sizes, sm_sizes, bi_sizes), policy = sizes_of(backend, config), copy_policy(backend, config)
    top = max(sizes)
    results = []
    for a, b in pairs_of(backend, config):
        src = {a: Source(backend, backend.alloc("device", top, a), config.seed + 100 * a + b),
               b: Source(backend, backend.alloc("device", top, b), config.seed + 100 * b + a)}
        dst = {a: backend.alloc("device", top, a), b: backend.alloc("device", top, b)}
        backend.set_peer_access(a, b, False)
        for path in ("driver-staged", "host-staged"):
            for s, d in ((a, b), (b, a)):
                for engine in engines_of(path, config):
                    results += _series(backend, "peer", path, engine, src[s], dst[d], sizes, policy)
            if engines_of(path, config) == ["staged"]:
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
        refused = enable_peer(backend, "peer", a, b)
        if refused:
            results.append(refused)
            continue
        try:
            for s, d in ((a, b), (b, a)):
                for engine in engines_of("p2p", config):
                    results += _series(backend, "peer", "p2p", engine, src[s], dst[d],
                                       sizes if engine == "ce" else sm_sizes, policy)
            if "ce" in engines_of("p2p", config):
                for n in bi_sizes:
                    ops = [backend.copy_op("p2p", "ce", src[a].buf, dst[b], n),
                           backend.copy_op("p2p", "ce", src[b].buf, dst[a], n)]
                    results.append(copy_case(backend, "peer", ops, [src[a], src[b]], policy))
        finally:
            backend.set_peer_access(a, b, False)
    return results


PROBES = tuple(
    Probe(name, description, LinkConfig, applies, run, lambda backend, config, probe=name: needs(backend, config, probe))
    for name, description, run, applies in (
        ("host-link", "host<->device copies: H2D and D2H, pinned and pageable, copy engine and kernel, swept over "
                      "sizes; bidirectional", run_host_link, applicable),
        ("d2d", "copies within device memory: copy engine and kernel, swept over sizes", run_d2d, applicable),
        ("peer", "copies between devices: P2P (copy engine, kernel read, kernel write), the driver's staging and "
                 "explicit host staging, both ways, swept over sizes; bidirectional", run_peer, applicable_pairs)))
