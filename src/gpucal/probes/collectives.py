"""The collectives probe: all-reduce, all-gather, reduce-scatter, broadcast and send/recv across the ranks
of an MPI world (one rank per GPU), timed against size over the decode range, with an alpha/beta fit
per op and nccl-tests' algbw and busbw.

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
``failed`` and no number. Statistic: the median of the samples; alpha and beta of each op come from
``fit_pieces`` (weighted least squares of t = alpha + S/beta, per regime) over its median times. ``--graphs``
also times k ops captured in one CUDA graph (series ``coll-OP-graph``). NCCL's version comes from
``ncclGetVersion``; the transport it chose from its own log (``NCCL_DEBUG=INFO``, subsystem INIT, into
a file per rank: the channel lines' "via ..." part), unless the user set ``NCCL_DEBUG``.

On a virtual machine (``virtual:PROFILE[:N]``, no GPU): rank r is virtual GPU r of one host, or, with a
simulated net, one GPU of a host of its own. The bytes really move (MPI on host NumPy arrays) and are
checked as above; the time is priced by the ring algorithms over the slowest link between the ranks
(``ring_time_s``), with the net's or the machine's noise, and every figure says ``simulated``.

Without CuPy or a GPU (and no virtual backend), every op is waived with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np

from gpucal.errors import InputError
from gpucal.kernels.comm import RankError, SimulatedNet, World, lockstep_measure
from gpucal.kernels.reference import Check
from gpucal.probes.base import Result
from gpucal.probes.timing import POLICY_GPU
from gpucal.units import format_bytes

__all__ = ["OPS", "BUSBW_FACTOR", "DECODE_BATCHES", "decode_sizes", "op_size_bytes", "ring_time_s",
           "CollectivesConfig", "CollectivesReport", "run_collectives", "SIZE_CONVENTION",
           "byte_convention"]

OPS = ("all-reduce", "all-gather", "reduce-scatter", "broadcast", "send-recv")
DECODE_BATCHES = tuple(2 ** i for i in range(11))  # B = 1 … 1024
VALUE_BYTES = 4  # float32
DEFAULT_BUDGET_S = 0.2
GRAPH_MAX_K = 1024  # ops captured in one graph at most
VIRTUAL_LIBRARY = "virtual ring (simulated)"
SIZE_CONVENTION = {"all-reduce": "the buffer", "all-gather": "the total output (N x the per-rank input)",
                   "reduce-scatter": "the total input (N x the per-rank output)", "broadcast": "the buffer",
                   "send-recv": "the bytes each rank sends to (rank+1)%N"}
_FACTOR_TEXT = {"all-reduce": "2(N-1)/N", "all-gather": "(N-1)/N", "reduce-scatter": "(N-1)/N", "broadcast": "1",
                "send-recv": "1"}


def BUSBW_FACTOR(op: str, n: int) -> float:  # noqa: N802 - a table, named as nccl-tests names it
    """nccl-tests' bus-bandwidth factor of ``op`` on ``n`` ranks: busbw = algbw × factor."""
    return {"all-reduce": 2.0 * (n - 1) / n, "all-gather": (n - 1) / n, "reduce-scatter": (n - 1) / n,
            "broadcast": 1.0, "send-recv": 1.0}[op]


def byte_convention(op: str, n: int) -> str:
    """The byte convention of ``op``'s rates on ``n`` ranks, in words."""
    factor = _FACTOR_TEXT[op] if op in ("broadcast", "send-recv") else f"{_FACTOR_TEXT[op]} = {BUSBW_FACTOR(op, n):.4g} for N = {n}"
    return f"algbw = S/t, busbw = algbw x factor (nccl-tests): factor {factor}; S = {SIZE_CONVENTION[op]}"


def decode_sizes(hidden: int, batches: Iterable[int] = DECODE_BATCHES, bytes_per_value: int = 2) -> tuple[int, ...]:
    """The activation sizes of decode, S = B·hidden·bytes_per_value bytes, one per batch B."""
    return tuple(int(b) * int(hidden) * int(bytes_per_value) for b in batches)


def op_size_bytes(op: str, size_bytes: int, nranks: int) -> int:
    """``size_bytes`` rounded down to what ``op`` needs (a float32 count, split evenly over the ranks for
    all-gather and reduce-scatter), and at least one such unit."""
    unit = VALUE_BYTES * (nranks if op in ("all-gather", "reduce-scatter") else 1)
    return max(unit, int(size_bytes) // unit * unit)


def ring_steps(op: str, n: int) -> int:
    """Latency terms of the ring algorithm: 2(N−1) for all-reduce, N−1 for the other collectives, 1 for send/recv."""
    return {"all-reduce": 2 * (n - 1), "all-gather": n - 1, "reduce-scatter": n - 1, "broadcast": n - 1,
            "send-recv": 1}[op]


def ring_time_s(op: str, n: int, size_bytes: float, alpha_s: float, beta_Bps: float) -> float:
    """The ring algorithm's time for ``op`` of S bytes over links of latency alpha and bandwidth beta:
    all-reduce 2(N−1)·alpha + 2(N−1)/N·S/beta; all-gather, reduce-scatter (N−1)·alpha + (N−1)/N·S/beta;
    broadcast (pipelined ring) (N−1)·alpha + S/beta; send/recv alpha + S/beta. So busbw → beta at large S."""
    return ring_steps(op, n) * alpha_s + BUSBW_FACTOR(op, n) * size_bytes / beta_Bps


@dataclass(frozen=True)
class CollectivesConfig:
    """What to run: ``ops``, the decode range's ``hidden`` size or explicit ``sizes`` (bytes, before the
    per-op rounding), ``budget_s`` of sampling per size (default 0.2 s), CUDA ``graphs`` too, the input
    ``seed``, a ``simulate``d net (virtual backends only) and the ``backend`` (auto, cupy, virtual:...)."""

    ops: tuple[str, ...] = OPS
    hidden: int = 8192
    sizes: tuple[int, ...] | None = None
    budget_s: float | None = None
    graphs: bool = False
    seed: int = 0
    simulate: SimulatedNet | None = None
    backend: str = "auto"

    def size_list(self, op: str, nranks: int) -> tuple[int, ...]:
        raw = self.sizes if self.sizes is not None else decode_sizes(self.hidden)
        return tuple(sorted({op_size_bytes(op, s, nranks) for s in raw}))


@dataclass(frozen=True)
class CollectivesReport:
    """Every rank's copy of the run: one ``Result`` per (op, size[, graph]) (one per op where waived), one
    profile entry per op (and per op in a graph) that has a passed size, the library, NCCL's version and
    transport, why the whole run was waived, and its source (``measured`` or ``simulated``)."""

    results: list[Result]
    entries: list[dict]
    library: str | None
    nccl_version: str | None
    transport: list[str] | None
    transport_reason: str | None
    waived: str | None
    source: str
    link: dict | None = None  # the simulated link the ring model priced (virtual backends)

    @property
    def failed(self) -> bool:
        return any(r.status in ("failed", "error") for r in self.results)

    def to_dict(self) -> dict:
        return {"entries": self.entries, "results": [r.to_dict() for r in self.results], "library": self.library,
                "nccl_version": self.nccl_version, "transport": self.transport,
                "transport_reason": self.transport_reason, "waived": self.waived, "source": self.source,
                "simulated": self.source == "simulated", "link": self.link}


# --- data and checks -------------------------------------------------------------------------------------
def rank_input(seed: int, op: str, size_bytes: int, rank: int, count: int) -> np.ndarray:
    """Rank ``rank``'s input: ``count`` float32 small integers (0…7), the same wherever it is regenerated."""
    rng = np.random.default_rng([seed, OPS.index(op), size_bytes, rank])
    return rng.integers(0, 8, count, dtype=np.int8).astype(np.float32)


def case_arrays(op: str, size_bytes: int, rank: int, n: int, seed: int) -> tuple[np.ndarray, int, np.ndarray]:
    """(this rank's input, the output's float32 count, the expected output) of ``op`` at S = ``size_bytes``."""
    count = size_bytes // VALUE_BYTES
    per_rank = count // n if op in ("all-gather", "reduce-scatter") else count
    if op == "all-reduce":
        inputs = [rank_input(seed, op, size_bytes, r, count) for r in range(n)]
        return inputs[rank], count, np.sum(inputs, axis=0, dtype=np.float32)
    if op == "all-gather":
        inputs = [rank_input(seed, op, size_bytes, r, per_rank) for r in range(n)]
        return inputs[rank], count, np.concatenate(inputs)
    if op == "reduce-scatter":
        inputs = [rank_input(seed, op, size_bytes, r, count) for r in range(n)]
        total = np.sum(inputs, axis=0, dtype=np.float32)
        return inputs[rank], per_rank, total[rank * per_rank:(rank + 1) * per_rank]
    if op == "broadcast":
        mine = rank_input(seed, op, size_bytes, rank, count)
        return mine, count, mine if rank == 0 else rank_input(seed, op, size_bytes, 0, count)
    return (rank_input(seed, op, size_bytes, rank, count), count,
            rank_input(seed, op, size_bytes, (rank - 1) % n, count))


CHECK_METHOD = "exact comparison with the NumPy expectation on every rank (float32 sums of small integers are exact)"


def compare(got: np.ndarray, expected: np.ndarray) -> Check:
    """An exact comparison; the first differing element names index, got and expected."""
    if got.shape != expected.shape:
        return Check(False, CHECK_METHOD, int(expected.size), None, None, None, None, 0.0)
    bad = np.flatnonzero(got != expected)
    if bad.size == 0:
        return Check(True, CHECK_METHOD, int(expected.size), 0.0, tolerance=0.0)
    i = int(bad[0])
    err = float(np.nanmax(np.abs(got[bad] - expected[bad]))) if np.isfinite(got[bad]).any() else None
    return Check(False, CHECK_METHOD, int(expected.size), err, (i,), float(got[i]), float(expected[i]), 0.0)


# --- the run -----------------------------------------------------------------------------------------------
@dataclass
class _Case:
    op: str
    size_bytes: int
    graph: bool
    expected: np.ndarray
    state: dict = field(default_factory=dict)


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


def _run_case(world: World, engine, case: _Case, policy, base: dict) -> Result:
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


def _quantity(value, source: str, method: str, n: int, reason: str | None, **extra) -> dict:
    """A profile quantity of a fit: a null value carries its reason; a fitted alpha below zero (noise about a
    latency too small to resolve) is given as 0 with the fitted value in a note."""
    q = {"value": value, "source": source, "method": method, "statistic": "fit", "n": n}
    if value is None:
        q["reason"] = reason or "no fit"
    elif value < 0:
        q.update(value=0.0, note=f"the fit gave {value:.3g}, below zero (noise): the latency is under the fit's "
                                 "resolution")
    q.update(extra)
    return q


def _entry(world: World, op: str, graph: bool, results: list[Result], library, transport, transport_reason,
           source: str) -> dict | None:
    """One op's collectives[] entry: the alpha/beta fit over the sizes that passed, the points and the rates;
    ``None`` where no size passed (the results say why)."""
    from gpucal.calibrate.fit import FitError, fit_pieces, median_noise_frac

    passed = [r for r in results if r.status == "passed"]
    if not passed:
        return None
    points = [[r.params["bytes"], r.timing.median_s] for r in passed]
    alpha = beta = r2 = fit_reason = reason = fit = None
    if len(passed) < len(results):
        bad = next(r for r in results if r.status != "passed")
        reason = f"{len(results) - len(passed)} of {len(results)} sizes did not pass ({bad.case}: {bad.reason})"
    try:
        fit = fit_pieces([p[0] for p in points], [p[1] for p in points],
                         median_noise_frac([r.timing.cv for r in passed], [r.timing.n for r in passed]))
        alpha, beta, r2 = fit.alpha_s, fit.beta_Bps, fit.r2
    except FitError as exc:
        fit_reason = f"no alpha/beta: {exc}"
        reason = f"{reason}; {fit_reason}" if reason else fit_reason
    method = (f"fit t = alpha + S/beta over S = {format_bytes(points[0][0])} - {format_bytes(points[-1][0])} "
              "per regime (S: nccl-tests' size of the op; median time per size, least squares weighted by 1/t)")
    if fit is not None and len(fit.pieces) > 1:
        method += f"; {len(fit.pieces)} regimes: alpha the smallest sizes', beta the largest sizes'"
    n = len(points)
    entry = {"op": op, "nranks": world.size, "hosts": len(world.hosts),
             "ranks_per_host": max(r.local_size for r in world.ranks), "graphs": graph, "library": library,
             "transport": transport, "transport_reason": transport_reason, "dtype": "float32",
             "alpha_s": _quantity(alpha, source, method, fit.pieces[0].n if fit else n, fit_reason),
             "beta_Bps": _quantity(beta, source, method, fit.pieces[-1].n if fit else n, fit_reason,
                                   byte_convention="S/t, S as nccl-tests counts it"),
             "busbw_factor": BUSBW_FACTOR(op, world.size), "r2": r2, "points": points,
             "algbw_Bps": [r.metrics["algbw_Bps"] for r in passed], "busbw_Bps": [r.metrics["busbw_Bps"] for r in passed],
             "verified": len(passed) == len(results), "reason": reason}
    if fit is not None:
        entry.update(fit.profile_fields())
    return entry


def _waived_report(world: World, config: CollectivesConfig, backend: str, reason: str) -> CollectivesReport:
    """Every op waived for ``reason``: one result per op (and graph series), no profile entry."""
    results = [Result("collectives", op + (" (CUDA graph)" if graph else ""), "waived", backend, "measured", "-",
                      params=_params(world, op, None, graph), reason=reason)
               for op in config.ops for graph in ((False, True) if config.graphs else (False,))]
    return CollectivesReport(results, [], None, None, None, reason, reason, "measured")


def run_collectives(world: World, config: CollectivesConfig) -> CollectivesReport:
    """Run ``config`` over every rank of ``world`` (collective); every rank returns the same report."""
    from gpucal.probes.collective_engines import NcclEngine, VirtualEngine, nccl_unavailable

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
            return _waived_report(world, config, config.backend, where + why)
        engine = NcclEngine.start(world, config)  # agrees across ranks itself
    try:
        return _measure(world, config, engine)
    finally:
        engine.close()


def _measure(world: World, config: CollectivesConfig, engine) -> CollectivesReport:
    budget = config.budget_s if config.budget_s is not None else DEFAULT_BUDGET_S
    policy = replace(POLICY_GPU, budget_s=budget)
    results, entries = [], []
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
                case = _Case(op, size, graph, np.empty(0))
                series.append(_run_case(world, engine, case,
                                        replace(policy, max_k=GRAPH_MAX_K) if graph else policy, base))
            results += series
            entries.append((op, graph, series))
    transport, transport_reason = engine.transport()
    out = [_entry(world, op, graph, series, engine.library, transport, transport_reason, engine.source)
           for op, graph, series in entries]
    out = [e for e in out if e is not None]
    return CollectivesReport(results, out, engine.library, engine.nccl_version, transport, transport_reason, None,
                             engine.source, engine.link)


# --- engines: who moves the bytes and what clock prices them ------------------------------------------------
