"""The ``latency`` probe: small copies (4 B … 64 KiB) on the host links and between devices (both ways: the
driver's staging, explicit host staging and, where the runtime allows it, P2P), timed three ways: one at a
time (issue, wait; host clock), back to back as a program issues them (CUDA events, no gate), and the issue
cost alone. Each case is verified before timing and, on a destination poisoned again, after it, like every
copy (``probes/links.py``; what they share: ``probes/copies.py``).
"""

from __future__ import annotations

from gpucal.kernels.base import Backend
from gpucal.kernels.links import CopyOp
from gpucal.kernels.reference import Work
from gpucal.probes.base import Probe, Result
from gpucal.probes.copies import (CLOCKS, CONVENTIONS, LinkConfig, Source, applicable, case_base, compare_copy,
                                  copy_policy, devices_of, enable_peer, failed_copy, memory_of, needs, pairs_of, poison)
from gpucal.probes.timing import Policy, measure

__all__ = ["run_latency", "PROBE"]


def _latency_cases(backend: Backend, op: CopyOp, src: Source, policy: Policy,
                   kinds=("oneshot", "b2b", "enqueue")) -> list[Result]:
    """One-shot, back-to-back and issue-only times of ``op`` (those in ``kinds``; verified first)."""
    n = op.nbytes
    out = []
    for how, fn in (("oneshot", backend.time_oneshot), ("b2b", backend.time_back_to_back),
                    ("enqueue", backend.time_enqueue)):
        if how not in kinds:
            continue
        params = {"path": op.path, "engine": op.engine, "memory": memory_of(op), "src": op.src.device,
                  "dst": op.dst.device, "bytes": n, "latency": how, "series": op.label, "clock": CLOCKS[how]}
        base = case_base(backend, "latency", f"{how}-{op.label}-{n}B", params, Work(n, n, 0), CONVENTIONS["latency"])
        try:
            poison(backend, [op], [src])
            backend.run_op(op)
            check = compare_copy(backend, op, src.bytes)
            if not check.ok:
                out.append(failed_copy(check, base, "before timing"))
                continue
            poison(backend, [op], [src])  # again: what the timed copies write is compared after timing
            timing = measure(lambda k, fn=fn: fn(op, k), policy, clock_name=f"{backend.clock}: {CLOCKS[how]}")
            after = compare_copy(backend, op, src.bytes)
            if not after.ok:
                out.append(failed_copy(after, base, "after timing"))
                continue
        except Exception as exc:
            out.append(Result(status="error", reason=f"{type(exc).__name__}: {exc}", **base))
            continue
        out.append(Result(status="passed", check=check, timing=timing, metrics={"latency_s": timing.median_s}, **base))
    return out


def run_latency(backend: Backend, config: LinkConfig | None = None) -> list[Result]:
    config = config or LinkConfig()
    policy = copy_policy(backend, config)
    sizes = tuple(sorted(set(config.latency_sizes)))
    top = max(sizes)
    results = []
    for d in devices_of(backend, config):
        with backend.local_to(d):
            host_src = Source(backend, backend.alloc("pinned", top, d), config.seed + 7 * d)
            dev_src = Source(backend, backend.alloc("device", top, d), config.seed + 7 * d + 1)
            host_dst, dev_dst = backend.alloc("pinned", top, d), backend.alloc("device", top, d)
            for n in sizes:
                for path, src, dst in (("h2d", host_src, dev_dst), ("d2h", dev_src, host_dst)):
                    results += _latency_cases(backend, backend.copy_op(path, "ce", src.buf, dst, n), src, policy,
                                              config.latency_kinds)
    if backend.device_count() < 2:
        return results
    for a, b in pairs_of(backend, config):
        src = {d: Source(backend, backend.alloc("device", top, d), config.seed + 11 * d + (a if d == b else b))
               for d in (a, b)}
        dst = {d: backend.alloc("device", top, d) for d in (a, b)}
        can = backend.can_access_peer(a, b) and backend.can_access_peer(b, a)
        backend.set_peer_access(a, b, False)
        for s, d in ((a, b), (b, a)):
            for path, engine in (("driver-staged", "ce"), ("host-staged", "staged")):
                for n in sizes:
                    results += _latency_cases(backend, backend.copy_op(path, engine, src[s].buf, dst[d], n), src[s],
                                              policy, config.latency_kinds)
        if can:
            refused = enable_peer(backend, "latency", a, b)
            if refused:
                results.append(refused)
                continue
            try:
                for s, d in ((a, b), (b, a)):
                    for n in sizes:
                        results += _latency_cases(backend, backend.copy_op("p2p", "ce", src[s].buf, dst[d], n), src[s],
                                                  policy, config.latency_kinds)
            finally:
                backend.set_peer_access(a, b, False)
    return results


PROBE = Probe("latency", "small copies (4 B - 64 KiB): one at a time, back to back, and the issue cost alone",
              LinkConfig, applicable, run_latency, lambda backend, config: needs(backend, config, "latency"))
