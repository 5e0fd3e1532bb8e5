"""The collectives probe: all-reduce, all-gather, reduce-scatter, broadcast and send/recv across the ranks
of an MPI world (one rank per GPU), timed against size over the decode range, with nccl-tests' algbw and busbw (the alpha/beta fit per op
and the profile's entries are ``calibrate/collectives.py``'s).

Sizes: S = B·h·2 bytes for B = 1, 2, 4, …, 1024 (h: the hidden size, 2 bytes a value), rounded down to a
multiple of what the op needs (4 bytes, or N·4 bytes for all-gather and reduce-scatter), as nccl-tests
counts S: all-reduce and broadcast the bytes of the buffer; all-gather the total output (N × the
per-rank input); reduce-scatter the total input; send/recv the bytes each rank sends to (rank+1)%N while
it receives from (rank-1)%N (nccl-tests' sendrecv).

Byte convention (nccl-tests): ``algbw_Bps = S/t`` and ``busbw_Bps = algbw·factor``, factor 2(N−1)/N for
all-reduce, (N−1)/N for all-gather and reduce-scatter, 1 for broadcast and send/recv.

Method, on a GPU (CuPy's NCCL binding): float32 buffers of small integers (so every sum is exact),
out of place; each case runs once and every rank compares its output with the NumPy expectation
(each rank regenerates every rank's seeded input); then ``lockstep_measure`` times it (every rank
waits at an MPI barrier, then CUDA events around k back-to-back ops on the rank's stream; a sample is
the slowest rank's time per op); then the output is compared again. A failed comparison gives status
``failed`` and no number. Statistic: the median of the samples. ``--graphs``
also times k ops captured in one CUDA graph (series ``coll-OP-graph``). NCCL's version comes from
``ncclGetVersion``; the transport it chose from its own log (``NCCL_DEBUG=INFO``, subsystem INIT, into
a file per rank: the channel lines' "via ..." part), unless the user set ``NCCL_DEBUG``.

On a virtual machine (``virtual:PROFILE[:N]``, no GPU): rank r is virtual GPU r of one host, or, with a
simulated net, one GPU of a host of its own. The bytes really move (MPI on host NumPy arrays) and are
checked as above; the time is priced by the ring algorithms over the slowest link between the ranks
(``plan.equations.ring_collective_time_s``), with the net's or the machine's noise, and every figure says ``simulated``.

Without CuPy or a GPU (and no virtual backend), every op is waived with the reason. The engines are
``probes/collective_nccl.py`` and ``probes/collective_virtual.py``; what they share with this module is in
``probes/collective_cases.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gpucal.errors import InputError
from gpucal.kernels.comm import RankError, World
from gpucal.kernels.reference import Check
from gpucal.probes.base import Result
from gpucal.probes.collective_cases import (BUSBW_FACTOR, CHECK_METHOD, DECODE_BATCHES, DEFAULT_BUDGET_S, GRAPH_MAX_K,
                                            OPS, SIZE_CONVENTION, CollectiveCase, CollectivesConfig, byte_convention,
                                            case_arrays, compare, decode_sizes, op_size_bytes)
from gpucal.probes.collective_nccl import NcclEngine, nccl_unavailable
from gpucal.probes.collective_virtual import VirtualEngine
from gpucal.probes.lockstep import lockstep_measure
from gpucal.probes.timing import POLICY_GPU

__all__ = ["OPS", "BUSBW_FACTOR", "DECODE_BATCHES", "decode_sizes", "op_size_bytes", "CollectivesConfig",
           "CollectivesRun", "measure_collectives", "SIZE_CONVENTION", "byte_convention", "case_arrays", "compare"]


@dataclass(frozen=True)
class CollectivesRun:
    """Every rank's copy of a run: one ``Result`` per (op, size[, graph]) (one per op where waived), the timed
    series (op, graph, its results) in the order they ran, the library, NCCL's version and transport, why the
    whole run was waived, its source (``measured`` or ``simulated``) and the simulated link the ring model
    priced (virtual backends)."""

    results: list[Result]
    series: list[tuple[str, bool, list[Result]]]
    library: str | None
    nccl_version: str | None
    transport: list[str] | None
    transport_reason: str | None
    waived: str | None
    source: str
    link: dict | None = None


def _gather_checks(world: World, error: str | None, check: Check | None, when: str) -> tuple[str | None, Check | None]:
    """Every rank's (error, check) of one step, merged: the first rank's error, or one check for all ranks."""
    everyone = world.comm.allgather((error, check))
    for rank, (err, _) in enumerate(everyone):
        if err is not None:
            return f"rank {rank} ({when}): {err}", None
    checks = [c for _, c in everyone]
    bad = next(((r, c) for r, c in enumerate(checks) if not c.ok), None)
    total = sum(c.checked for c in checks)
    if bad is None:
        return None, Check(True, CHECK_METHOD, total, 0.0, tolerance=0.0)
    rank, c = bad
    return None, replace(c, checked=total, method=f"{CHECK_METHOD}; first difference on rank {rank} ({when})")


def _run_case(world: World, engine, case: CollectiveCase, policy, base: dict) -> Result:
    send, count, case.expected = case_arrays(case.op, case.size_bytes, world.rank, world.size, engine.seed)
    error = check = None
    try:
        engine.prepare(case, send, count)
    except Exception as exc:  # e.g. out of memory on this rank: every rank learns of it before any op starts
        error = f"{type(exc).__name__}: {exc}"
    failed = [(rank, e) for rank, e in enumerate(world.comm.allgather(error)) if e is not None]
    if failed:
        engine.release(case)
        return Result(status="error", reason=f"rank {failed[0][0]} (preparing): {failed[0][1]}", **base)
    try:
        check = compare(engine.run_once(case), case.expected)
    except Exception as exc:  # a device or MPI error on this rank: every rank learns of it below
        error = f"{type(exc).__name__}: {exc}"
    error, check = _gather_checks(world, error, check, "before timing")
    if error is None and check.ok:
        engine.poison(case)
        try:
            timing = lockstep_measure(world.comm, lambda k: engine.run_k(case, k), policy, engine.clock_name)
        except RankError as exc:
            engine.release(case)
            return Result(status="error", check=check, reason=f"timing: {exc}", **base)
        err2 = check2 = None
        try:
            check2 = compare(engine.output_after_timing(case), case.expected)
        except Exception as exc:
            err2 = f"{type(exc).__name__}: {exc}"
        error, check = _gather_checks(world, err2, check2, "after timing")
    engine.release(case)
    if error is not None:
        return Result(status="error", reason=error, **base)
    if not check.ok:
        return Result(status="failed", check=check, reason=f"verification failed: {check.method}: at index "
                      f"{check.index} got {check.got!r}, expected {check.expected!r}", **base)
    algbw = case.size_bytes / timing.median_s
    return Result(status="passed", check=check, timing=timing, **base,
                  metrics={"algbw_Bps": algbw, "busbw_Bps": algbw * BUSBW_FACTOR(case.op, world.size)})


def _series(op: str, graph: bool) -> str:
    return f"coll-{op}" + ("-graph" if graph else "")


def _params(world: World, op: str, size_bytes: int | None, graph: bool) -> dict:
    out = {"op": op, "nranks": world.size, "hosts": len(world.hosts), "series": _series(op, graph)}
    if size_bytes is not None:
        out = {"op": op, "bytes": size_bytes, **{k: v for k, v in out.items() if k != "op"}}
    return out


def _case_name(op: str, size_bytes: int, graph: bool) -> str:
    return f"{op} {size_bytes} B" + (" (CUDA graph)" if graph else "")


def _waived_run(world: World, config: CollectivesConfig, backend: str, reason: str) -> CollectivesRun:
    """Every op waived for ``reason``: one result per op (and graph series), no series timed."""
    results = [Result("collectives", op + (" (CUDA graph)" if graph else ""), "waived", backend, "measured", "-",
                      params=_params(world, op, None, graph), reason=reason)
               for op in config.ops for graph in ((False, True) if config.graphs else (False,))]
    return CollectivesRun(results, [], None, None, None, reason, reason, "measured")


def measure_collectives(world: World, config: CollectivesConfig) -> CollectivesRun:
    """Run ``config`` over every rank of ``world`` (collective); every rank returns the same run."""
    virtual = config.backend == "virtual" or config.backend.startswith("virtual:")
    if config.simulate is not None and not virtual:
        raise InputError("--simulate-net: needs --backend virtual:PROFILE (a simulated net joins virtual GPUs)")
    if virtual:
        engine, error = None, None
        try:
            engine = VirtualEngine(world, config)
        except Exception as exc:
            error = exc
        world.agree(error)
    else:
        reasons = world.comm.allgather(nccl_unavailable())
        first = next(((r, why) for r, why in enumerate(reasons) if why), None)
        if first is not None:
            rank, why = first
            where = f"rank {rank} ({world.ranks[rank].hostname}): " if any(w != why for w in reasons) else ""
            return _waived_run(world, config, config.backend, where + why)
        engine = NcclEngine.start(world, config)  # agrees across ranks itself
    try:
        return _measure(world, config, engine)
    finally:
        engine.close()


def _measure(world: World, config: CollectivesConfig, engine) -> CollectivesRun:
    budget = config.budget_s if config.budget_s is not None else DEFAULT_BUDGET_S
    policy = replace(POLICY_GPU, budget_s=budget)
    results: list[Result] = []
    timed: list[tuple[str, bool, list[Result]]] = []
    for op in config.ops:
        for graph in (False, True) if config.graphs else (False,):
            series: list[Result] = []
            why = engine.graph_reason if graph else None
            if why:  # one waived result for the series
                series.append(Result("collectives", f"{op} (CUDA graph)", "waived", engine.backend_name, engine.source,
                                     engine.device_name, params=_params(world, op, None, graph), reason=why))
            for size in () if why else config.size_list(op, world.size):
                base = dict(probe="collectives", case=_case_name(op, size, graph), backend=engine.backend_name,
                            source=engine.source, device=engine.device_name, params=_params(world, op, size, graph),
                            byte_convention=byte_convention(op, world.size), library=engine.library)
                case = CollectiveCase(op, size, graph, np.empty(0))
                series.append(_run_case(world, engine, case,
                                        replace(policy, max_k=GRAPH_MAX_K) if graph else policy, base))
            results += series
            timed.append((op, graph, series))
    transport, transport_reason = engine.transport()
    return CollectivesRun(results, timed, engine.library, engine.nccl_version, transport, transport_reason, None,
                          engine.source, engine.link)
