"""``allreduce``: the TP exchange of decode on one host, as a server runs it: NCCL all-reduce over the host's
GPUs from one process (one communicator per GPU of the group, ``ncclCommInitAll``), for TP groups of 2, 4, …
and all N GPUs (devices 0…tp−1), over the decode range S = B·h·2 bytes for B = 1…1024 (h = 8192 unless
given; explicit sizes are rounded down to whole float32 words, 4 bytes at least), eager and captured in CUDA
graphs.

Method: float32 buffers of small integers (every sum exact), out of place; each case runs once and every
device's output is compared with the NumPy sum, then it is timed (CUDA events on the first device of the
group: an all-reduce completes on every member together), then compared again. Byte convention (nccl-tests):
S is the buffer each GPU reduces, ``algbw_Bps = S/t``, ``busbw_Bps = algbw·2(N−1)/N``. Statistic: the median.
The alpha/beta fit per (TP size, graph) and the profile's ``collectives`` entries are ``calibrate/decode.py``'s.
On a virtual machine the sums really happen (NumPy) and the time is priced by the profile (its one-host
all-reduce where it has one, else the ring over its links).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpucal.kernels.base import Backend
from gpucal.kernels.reference import Check, Footprint, Work
from gpucal.probes.base import Probe, Result, policy_for, source_of, timed_case, waived
from gpucal.probes.collective_cases import BUSBW_FACTOR, CHECK_METHOD, DECODE_BATCHES, case_arrays, compare, decode_sizes
from gpucal.probes.memory import Need

__all__ = ["AllreduceConfig", "run", "applicable", "needs", "tp_groups", "CONVENTION", "GRAPH_OPS"]

CONVENTION = "algbw_Bps = S/t (S: the buffer each GPU reduces); busbw_Bps = algbw·2(N-1)/N (nccl-tests)"
GRAPH_OPS = 16  # all-reduces captured in one graph per device


@dataclass(frozen=True)
class AllreduceConfig:
    groups: tuple[int, ...] | None = None  # TP sizes; default tp_groups(device count)
    hidden: int = 8192
    batches: tuple[int, ...] = DECODE_BATCHES
    sizes: tuple[int, ...] | None = None  # bytes; default S = B·hidden·2 over ``batches``
    graphs: bool = True
    budget_s: float | None = None
    seed: int = 0


def tp_groups(n: int) -> tuple[int, ...]:
    """2, 4, 8, … up to ``n``, and ``n`` itself."""
    out = []
    g = 2
    while g <= n:
        out.append(g)
        g *= 2
    if n >= 2 and n not in out:
        out.append(n)
    return tuple(out)


def _groups(backend: Backend, config: AllreduceConfig) -> tuple[int, ...]:
    return config.groups or tp_groups(backend.device_count())


def applicable(backend: Backend) -> str | None:
    n = backend.device_count()
    if n < 2:
        return f"one device here ({backend.name}): an all-reduce needs at least 2"
    return backend.allreduce_reason(tuple(range(2)))


def _sizes(config: AllreduceConfig) -> tuple[int, ...]:
    raw = config.sizes if config.sizes is not None else decode_sizes(config.hidden, config.batches)
    return tuple(sorted({max(4, s // 4 * 4) for s in raw}))


def _case(backend: Backend, devices: tuple[int, ...], size: int, graph: bool, config: AllreduceConfig) -> Result:
    n = len(devices)
    base_params = {"tp": n, "devices": list(devices), "bytes": size, "graph": graph}
    case = f"allreduce-tp{n}-{'graph' if graph else 'eager'}-{size}B"
    sends, recvs, expected = [], [], None
    for rank, d in enumerate(devices):
        mine, count, expected = case_arrays("all-reduce", size, rank, n, config.seed)
        other = backend.on_device(d)
        sends.append(other.to_device(mine))
        recvs.append(other.full(count, np.float32, np.nan))
    timer = backend.on_device(devices[0])  # timed on the group's first device (any member sees the whole op)
    timer.activate()

    def outputs_ok():
        checks = [compare(backend.on_device(d).to_host(r), expected) for d, r in zip(devices, recvs)]
        timer.activate()
        bad = next((c for c in checks if not c.ok), None)
        return bad or Check(True, CHECK_METHOD + f"; on each of the {n} devices", sum(c.checked for c in checks),
                            0.0, tolerance=0.0)

    try:
        if graph:
            launch = timer.allreduce_graph_launcher(devices, sends, recvs, GRAPH_OPS)
            ops = GRAPH_OPS
        else:
            launch, ops = timer.allreduce_launcher(devices, sends, recvs), 1
    except Exception as exc:
        return Result("allreduce", case, "error", backend.name, source_of(backend), backend.device().name,
                      params=base_params, reason=f"{type(exc).__name__}: {exc}"[:300])
    for d, r in zip(devices, recvs):
        backend.on_device(d).fill(r, np.nan)
    timer.activate()
    factor = BUSBW_FACTOR("all-reduce", n)
    work = Work(size, size, size // 4 * (n - 1))
    result = timed_case(timer, "allreduce", case, base_params, work, launch, outputs_ok, CONVENTION,
                        policy_for(backend, config.budget_s), library=timer.allreduce_library(),
                        extra=lambda t: {"algbw_Bps": size / t, "busbw_Bps": size / t * factor}, ops_per_call=ops)
    if result.status == "passed":  # the timed runs wrote the outputs again: they must still be the sum
        after = outputs_ok()
        if not after.ok:
            return Result("allreduce", case, "failed", backend.name, source_of(backend), backend.device().name,
                          params=base_params, check=after, reason="verification after timing failed")
    return result


def needs(backend: Backend, config: AllreduceConfig = AllreduceConfig()) -> list[Need]:
    biggest = max(_sizes(config))
    return [Need(f"the allreduce case of {biggest} B per GPU", ("sizes", "batches"), Footprint(3 * biggest, 4 * biggest))]


def run(backend: Backend, config: AllreduceConfig = AllreduceConfig()) -> list[Result]:
    reason = applicable(backend)
    if reason is not None:
        return [waived(backend, "allreduce", "allreduce", reason)]
    results = []
    for n in _groups(backend, config):
        devices = tuple(range(n))
        why = backend.allreduce_reason(devices)
        if why is not None:
            results.append(waived(backend, "allreduce", f"allreduce-tp{n}", why, {"tp": n}))
            continue
        for graph in (False, True) if config.graphs else (False,):
            if graph and backend.graph_reason() is not None:
                results.append(waived(backend, "allreduce", f"allreduce-tp{n}-graph", backend.graph_reason(),
                                      {"tp": n, "graph": True}))
                continue
            for size in _sizes(config):
                results.append(_case(backend, devices, size, graph, config))
    backend.activate()
    return results


PROBE = Probe("allreduce", "NCCL all-reduce over the GPUs of this host from one process (TP groups 2, 4, ... N), "
              "decode sizes, eager and in CUDA graphs: alpha/beta per TP size", AllreduceConfig, applicable, run, needs)
