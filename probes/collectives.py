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
``fit_alpha_beta`` (weighted least squares of t = alpha + S/beta) over its median times. ``--graphs``
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

import re
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
           "parse_nccl_transports", "CollectivesConfig", "CollectivesReport", "run_collectives", "SIZE_CONVENTION",
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


_NET_NAME = re.compile(r"\(.*?\)|\[.*?\]")


def parse_nccl_transports(lines: Iterable[str]) -> list[str]:
    """The transports in NCCL's channel lines (``... Channel 00/0 : 0[0] -> 1[1] via P2P/IPC``): ``P2P/IPC``,
    ``P2P/CUMEM``, ``P2P/direct``, ``SHM``, ``NET/IB``, ``NET/Socket`` (``/GDRDMA`` appended when NCCL
    says so), sorted; other lines are ignored."""
    found = set()
    for line in lines:
        if " via " not in line or "->" not in line:
            continue
        path = line.split(" via ", 1)[1].strip()
        parts = [p.strip() for p in path.split("/")]
        family = parts[0].split()[0] if parts[0] else ""
        if family == "NET" or family == "COLLNET":
            name = _NET_NAME.sub("", parts[1]).strip() if len(parts) > 1 else "?"
            # NCCL 2.2x writes "/GDRDMA(PCI)" where GPU Direct RDMA goes through PCI
            found.add(f"{family}/{name}" + ("/GDRDMA" if any(p.startswith("GDRDMA") for p in parts[2:]) else ""))
        elif family.endswith("P2P"):
            found.add("P2P/" + (parts[1].split()[0] if len(parts) > 1 and parts[1] else "?"))
        elif family:
            found.add(family)
    return sorted(found)


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
        check = compare(engine.run_once(case), case.expected)
    except Exception as exc:  # a device or MPI error on this rank: every rank learns of it below
        error = f"{type(exc).__name__}: {exc}"
    error, check = _gather_checks(world, error, check, "before timing")
    if error is None and check.ok:
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
    from gpucal.calibrate.fit import FitError, fit_alpha_beta

    passed = [r for r in results if r.status == "passed"]
    if not passed:
        return None
    points = [[r.params["bytes"], r.timing.median_s] for r in passed]
    alpha = beta = r2 = fit_reason = reason = None
    if len(passed) < len(results):
        bad = next(r for r in results if r.status != "passed")
        reason = f"{len(results) - len(passed)} of {len(results)} sizes did not pass ({bad.case}: {bad.reason})"
    try:
        fit = fit_alpha_beta([p[0] for p in points], [p[1] for p in points])
        alpha, beta, r2 = fit.alpha_s, fit.beta_Bps, fit.r2
    except FitError as exc:
        fit_reason = f"no alpha/beta: {exc}"
        reason = f"{reason}; {fit_reason}" if reason else fit_reason
    method = (f"fit t = alpha + S/beta over S = {format_bytes(points[0][0])} - {format_bytes(points[-1][0])} "
              "(S: nccl-tests' size of the op; median time per size, least squares weighted by 1/t)")
    n = len(points)
    return {"op": op, "nranks": world.size, "hosts": len(world.hosts),
            "ranks_per_host": max(r.local_size for r in world.ranks), "graphs": graph, "library": library,
            "transport": transport, "transport_reason": transport_reason, "dtype": "float32",
            "alpha_s": _quantity(alpha, source, method, n, fit_reason),
            "beta_Bps": _quantity(beta, source, method, n, fit_reason, byte_convention="S/t, S as nccl-tests counts it"),
            "busbw_factor": BUSBW_FACTOR(op, world.size), "r2": r2, "points": points,
            "algbw_Bps": [r.metrics["algbw_Bps"] for r in passed], "busbw_Bps": [r.metrics["busbw_Bps"] for r in passed],
            "verified": len(passed) == len(results), "reason": reason}


def _waived_report(world: World, config: CollectivesConfig, backend: str, reason: str) -> CollectivesReport:
    """Every op waived for ``reason``: one result per op (and graph series), no profile entry."""
    results = [Result("collectives", op + (" (CUDA graph)" if graph else ""), "waived", backend, "measured", "-",
                      params=_params(world, op, None, graph), reason=reason)
               for op in config.ops for graph in ((False, True) if config.graphs else (False,))]
    return CollectivesReport(results, [], None, None, None, reason, reason, "measured")


def run_collectives(world: World, config: CollectivesConfig) -> CollectivesReport:
    """Run ``config`` over every rank of ``world`` (collective); every rank returns the same report."""
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
class VirtualEngine:
    """The virtual machine's collectives: MPI moves host NumPy float32 arrays (so every check is real); the
    time of k ops is k × ``ring_time_s`` over the slowest link between the ranks, with the net's noise
    (``--simulate-net``) or the virtual machine's faults (noise, outliers, warm-up)."""

    source = "simulated"
    library = VIRTUAL_LIBRARY
    nccl_version = None
    clock_name = "virtual clock (ring model)"
    graph_reason = "CUDA graphs are timed on a GPU only (the ring model has no launch cost to save)"

    def __init__(self, world: World, config: CollectivesConfig):
        from mpi4py import MPI

        from gpucal.inputs import resolve_document
        from gpucal.kernels.virtual import _Clock  # the virtual backend's own noise, outliers and warm-up
        from gpucal.kernels.virtual_machine import VirtualMachine, parse_spec

        profile, count, faults = parse_spec(config.backend)
        doc = resolve_document(profile, "--backend", "profile")
        self.world, self.seed, self.net, self._sum = world, config.seed, config.simulate, MPI.SUM
        n = world.size
        machine = VirtualMachine(doc.data, doc.name, count or (1 if self.net else n), faults)
        if self.net is None and machine.count < n:
            raise InputError(f"--backend: the virtual machine {doc.name} has {machine.count} GPUs and this run "
                             f"{n} ranks: start one rank per GPU (mpiexec -n {machine.count}, or virtual:{doc.name}:{n})")
        self.device_name = machine.devices[0 if self.net else world.rank].name
        if self.net is not None:
            self.alpha_s, self.beta_Bps = self.net.alpha_s, self.net.beta_Bps
            what = f"simulated net {self.net.name}, one GPU per host"
            self.backend_name = f"virtual:{doc.name} + {self.net.name}"
        else:
            paths = []
            for a in range(n):
                for b in range(n):
                    peer = machine.peer(a, b) if a != b else None
                    if peer is None:
                        continue
                    paths.append((f"{peer.kind} P2P", peer.model) if peer.kind != "none" and peer.model else
                                 ("host staging", machine.staged(a, b, driver=False)))
            self.alpha_s = max(m.alpha_s for _, m in paths)
            slowest = min(paths, key=lambda p: p[1].beta_Bps)
            self.beta_Bps = slowest[1].beta_Bps
            what = f"{slowest[0]} between the virtual GPUs of {doc.name}"
            self.backend_name = f"virtual:{doc.name}:{machine.count}"
        self.link = {"description": what, "alpha_s": self.alpha_s, "beta_Bps": self.beta_Bps, "source": "simulated"}
        self._clock = _Clock(faults)

    def transport(self):
        return [f"{self.link['description']} (simulated)"], None

    def prepare(self, case: _Case, send: np.ndarray, count: int) -> None:
        case.state.update(send=send, count=count)
        if self.net is not None:
            case.state["rng"] = self.net.rng(OPS.index(case.op), case.size_bytes)

    def run_once(self, case: _Case) -> np.ndarray:
        comm, send, op = self.world.comm, case.state["send"], case.op
        recv = np.full(case.state["count"], np.nan, dtype=np.float32)
        rank, n = self.world.rank, self.world.size
        if op == "all-reduce":
            comm.Allreduce(send, recv, op=self._sum)
        elif op == "all-gather":
            comm.Allgather(send, recv)
        elif op == "reduce-scatter":
            comm.Reduce_scatter_block(send, recv, op=self._sum)
        elif op == "broadcast":
            if rank == 0:
                recv[...] = send
            comm.Bcast(recv, root=0)
        else:
            comm.Sendrecv(send, dest=(rank + 1) % n, recvbuf=recv, source=(rank - 1) % n)
        return recv

    def run_k(self, case: _Case, k: int) -> float:
        """Every rank prices the same k ops with the same seeded noise, so the slowest rank is any rank."""
        seconds = k * ring_time_s(case.op, self.world.size, case.size_bytes, self.alpha_s, self.beta_Bps)
        if self.net is not None:
            return self.net.noisy(seconds, case.state["rng"])
        return self._clock.sample(f"{case.op}-{case.size_bytes}", seconds)

    def output_after_timing(self, case: _Case) -> np.ndarray:
        return self.run_once(case)  # the priced samples move no bytes: move them once more and check

    def release(self, case: _Case) -> None:
        case.state.clear()

    def close(self) -> None:
        pass


def nccl_unavailable() -> str | None:
    """Why NCCL through CuPy cannot run on this rank (no CuPy, no CUDA device, no NCCL), or ``None``."""
    import warnings

    try:
        import cupy  # noqa: F401
        from cupy_backends.cuda.api import runtime
    except ImportError as exc:
        return f"CuPy is not installed ({exc}): pip install 'gpucal[cuda13]'"
    try:
        count = runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver (35), no device (100)
        return f"no CUDA device: CuPy says {exc}"
    if count == 0:
        return "no CUDA device: CuPy sees 0 devices"
    try:
        with warnings.catch_warnings():  # CuPy warns when libnccl cannot be loaded; the reason below says it
            warnings.simplefilter("ignore")
            from cupy.cuda import nccl
    except Exception as exc:  # a loader error other than the ImportError CuPy turns into available=False
        return f"NCCL cannot be loaded by CuPy ({type(exc).__name__}: {exc}): pip install 'nvidia-nccl-cu13'"
    if not getattr(nccl, "available", False):
        return "NCCL is not available to CuPy (libnccl.so.2 not found): pip install 'nvidia-nccl-cu13'"
    return None


def nccl_version_text(code: int) -> str:
    """``ncclGetVersion``'s integer as x.y.z (2.9 on: major·10000 + minor·100 + patch; before: ·1000, ·100)."""
    if code >= 10000:
        return f"{code // 10000}.{code % 10000 // 100}.{code % 100}"
    return f"{code // 1000}.{code % 1000 // 100}.{code % 100}"


class NcclEngine:
    """NCCL through CuPy (``cupy.cuda.nccl``), one rank per GPU: rank r uses its host's GPU ``local_rank``
    (or the only GPU it sees, where the launcher gives each rank its own, as ``srun --gpus-per-task=1`` does
    through CUDA_VISIBLE_DEVICES); ops are issued on one non-blocking stream and timed with CUDA events
    around k of them (or one CUDA graph of k captured ops)."""

    source = "measured"
    backend_name = "cupy"
    clock_name = "CUDA events"
    graph_reason = None
    link = None

    @classmethod
    def start(cls, world: World, config: CollectivesConfig) -> NcclEngine:
        """Set up on every rank, phase by phase, so that a rank that fails never leaves the others waiting."""
        import cupy
        from cupy_backends.cuda.api import runtime

        count, me = runtime.getDeviceCount(), world.me
        error = None
        # every rank sees all of its host's GPUs (mpiexec), or only its own one (a launcher that binds GPUs)
        device = me.local_rank if count >= me.local_size else 0 if count == 1 else None
        if device is None:
            error = InputError(f"this host has {count} GPU(s) and {me.local_size} ranks: start one rank per GPU "
                               f"(at most {count} ranks on this host)")
        world.agree(error)
        self = cls.__new__(cls)
        self.world, self.seed, self.cp, self._logdir, self.device = world, config.seed, cupy, None, device
        self._env = self._log_to_file()
        try:
            return self._connect(world, runtime)
        except RankError:
            self._restore()
            raise

    def _connect(self, world: World, runtime) -> NcclEngine:
        cupy, me, error, bus = self.cp, world.me, None, (None,)
        try:
            cupy.cuda.Device(self.device).use()
            props = runtime.getDeviceProperties(self.device)
            name = props["name"]
            name = name.decode() if isinstance(name, bytes) else str(name)
            bus = tuple(props.get(k) for k in ("pciDomainID", "pciBusID", "pciDeviceID"))
            from cupy.cuda import nccl

            self.nccl = nccl
            uid = nccl.get_unique_id() if world.is_root else None
        except Exception as exc:
            error, name, uid = exc, "-", None
        world.agree(error)
        # two ranks on one GPU (NCCL refuses them: "Duplicate GPU detected"), said before NCCL starts
        seen: dict = {}
        for rank, (host, b) in enumerate(world.comm.allgather((me.host, bus))):
            if None not in b and (host, b) in seen and rank == world.rank:
                error = InputError(f"ranks {seen[(host, b)]} and {rank} share the GPU at PCI "
                                   f"{b[0]:04x}:{b[1]:02x}:{b[2]:02x}: start one rank per GPU")
            seen.setdefault((host, b), rank)
        world.agree(error)
        uid = world.comm.bcast(uid, root=0)
        try:
            self.comm = nccl.NcclCommunicator(world.size, uid, world.rank)
            self.stream = cupy.cuda.Stream(non_blocking=True)
            self.start_event, self.end_event = cupy.cuda.Event(), cupy.cuda.Event()
            self.nccl_version = nccl_version_text(int(nccl.get_version()))
        except Exception as exc:  # NCCL's own reason is in its log (ours, in a file, unless the user set NCCL_DEBUG)
            warning = self._nccl_warning()
            error = f"{type(exc).__name__}: {exc}" + (f" (NCCL WARN: {warning})" if warning else "")
        world.agree(error)
        self.library = f"NCCL {self.nccl_version}"
        names = sorted(set(world.comm.allgather(name)))
        self.device_name = " + ".join(names)
        return self

    def _log_to_file(self) -> dict | None:
        """NCCL's INIT log into one file per process (before NCCL starts), to read its channels' transport;
        the user's own NCCL_DEBUG is left alone. Returns the environment to restore."""
        import os
        import tempfile

        if "NCCL_DEBUG" in os.environ:
            self._transport_reason = (f"NCCL_DEBUG={os.environ['NCCL_DEBUG']} is set: NCCL's log is the user's, and "
                                      "its channel lines (\"via ...\") show the transport")
            return None
        self._logdir = tempfile.mkdtemp(prefix="gpucal-nccl-")
        saved = {k: os.environ.get(k) for k in ("NCCL_DEBUG", "NCCL_DEBUG_SUBSYS", "NCCL_DEBUG_FILE")}
        os.environ.update(NCCL_DEBUG="INFO", NCCL_DEBUG_SUBSYS="INIT",
                          NCCL_DEBUG_FILE=os.path.join(self._logdir, "nccl.%h.%p"))
        return saved

    def _nccl_warning(self) -> str | None:
        """The last WARN line of NCCL's log on this rank (where the log is ours), or None."""
        import glob

        found = None
        for path in glob.glob(f"{self._logdir}/nccl.*") if self._logdir is not None else ():
            with open(path, errors="replace") as f:
                for line in f:
                    if " NCCL WARN " in line:
                        found = line.split(" NCCL WARN ", 1)[1].strip()
        return found

    def transport(self):
        """The union over ranks of the transports in NCCL's channel lines (read after the ops ran: NCCL may
        connect a channel at its first use)."""
        import glob

        mine: list[str] | str = getattr(self, "_transport_reason", "no NCCL log")
        if self._logdir is not None:
            lines = []
            for path in glob.glob(f"{self._logdir}/nccl.*"):
                with open(path, errors="replace") as f:
                    lines += f.readlines()
            mine = parse_nccl_transports(lines)
        everyone = self.world.comm.allgather(mine)
        found = sorted({t for m in everyone if isinstance(m, list) for t in m})
        if found:
            return found, None
        why = next((m for m in everyone if isinstance(m, str)), None)
        if why is None and self.world.size == 1:
            why = "one rank: NCCL connects to no peer, so it chose no transport"
        return None, why or "NCCL's log (NCCL_DEBUG=INFO, subsystem INIT) has no channel line saying \"via ...\""

    def prepare(self, case: _Case, send: np.ndarray, count: int) -> None:
        cp = self.cp
        with self.stream:
            case.state.update(send=cp.asarray(send), recv=cp.empty(count, dtype=cp.float32), graphs={})
        self.stream.synchronize()

    def _launch(self, case: _Case) -> None:
        nccl, comm, st, p = self.nccl, self.comm, case.state, self.stream.ptr
        send, recv = st["send"], st["recv"]
        s, r, f32 = send.data.ptr, recv.data.ptr, nccl.NCCL_FLOAT32
        if case.op == "all-reduce":
            comm.allReduce(s, r, send.size, f32, nccl.NCCL_SUM, p)
        elif case.op == "all-gather":
            comm.allGather(s, r, send.size, f32, p)
        elif case.op == "reduce-scatter":
            comm.reduceScatter(s, r, recv.size, f32, nccl.NCCL_SUM, p)
        elif case.op == "broadcast":
            comm.broadcast(s, r, send.size, f32, 0, p)
        else:
            rank, n = self.world.rank, self.world.size
            nccl.groupStart()
            comm.send(s, send.size, f32, (rank + 1) % n, p)
            comm.recv(r, recv.size, f32, (rank - 1) % n, p)
            nccl.groupEnd()

    def run_once(self, case: _Case) -> np.ndarray:
        with self.stream:
            case.state["recv"].fill(np.nan)
        self._launch(case)
        self.stream.synchronize()
        return case.state["recv"].get(stream=self.stream)

    def _graph(self, case: _Case, k: int):
        graphs = case.state["graphs"]
        if k not in graphs:
            with self.stream:
                self.stream.begin_capture()
                try:
                    for _ in range(k):
                        self._launch(case)
                except BaseException:
                    try:  # end the (invalidated) capture, so that the stream is usable, and keep NCCL's error
                        self.stream.end_capture()
                    except Exception:
                        pass
                    raise
                graph = self.stream.end_capture()
            graph.upload(self.stream)
            graphs[k] = graph
        return graphs[k]

    def run_k(self, case: _Case, k: int) -> float:
        """Seconds of k ops on this rank: MPI barrier, then CUDA events around them on the stream."""
        graph = self._graph(case, k) if case.graph else None
        self.world.comm.Barrier()
        self.start_event.record(self.stream)
        if graph is not None:
            graph.launch(stream=self.stream)
        else:
            for _ in range(k):
                self._launch(case)
        self.end_event.record(self.stream)
        self.end_event.synchronize()
        return self.cp.cuda.get_elapsed_time(self.start_event, self.end_event) / 1e3

    def output_after_timing(self, case: _Case) -> np.ndarray:
        self.stream.synchronize()
        return case.state["recv"].get(stream=self.stream)  # what the last timed op wrote

    def release(self, case: _Case) -> None:
        self.stream.synchronize()
        case.state.clear()
        self.cp.get_default_memory_pool().free_all_blocks()

    def close(self) -> None:
        try:
            self.stream.synchronize()
            self.comm.destroy()
        finally:
            self._restore()

    def _restore(self) -> None:
        """NCCL's logging variables as they were, and its log files removed."""
        import os
        import shutil

        for key, value in (self._env or {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self._logdir is not None:
            shutil.rmtree(self._logdir, ignore_errors=True)
