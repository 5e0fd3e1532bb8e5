"""The network probe: MPI ping-pong between pairs of ranks, swept over message sizes
(``mpiexec -n N gpucal probe net``; ``docs/network.md``); the alpha-beta fit per pair and the profile's
``network[]`` entries are ``calibrate/network.py``'s.

Method. Pairs are measured one after the other, never two at once (they would share the wire); the
ranks outside the pair wait in a barrier that they poll with short sleeps, so they leave the CPUs to the
pair. For a pair (i, j), i < j, and each size n:

1. i fills a send buffer with seeded random bytes (``default_rng([seed, i, j, n])``), both receive
   buffers hold the bitwise complement;
2. verification, outside the timed window: i sends, j receives and compares every byte with the same
   seeded bytes (j regenerates them), j sends its buffer back, i compares;
3. timing with ``lockstep_measure`` (rank i decides k and when to stop): a sample on i is ``MPI.Wtime``
   around k round trips (blocking ``Send`` then ``Recv`` of n bytes, buffers, no pickling), and its
   one-way time is half the round trip; j echoes (``Recv`` then ``Send``) k times;
4. both receive buffers are compared again: a corruption while timed fails too.

A failed comparison gives status ``failed`` with the first differing byte and no number.

Statistic: per size, the median over samples of the one-way time per message (p10, p90, n kept).
Byte convention: ``link_Bps = n/t``, one way, with t half the round trip.

The times are what a Python program calling MPI through mpi4py pays: ``alpha`` includes mpi4py's own cost
per call (about 0.7 µs per message over a C ping-pong loop on the same MPI, measured with
``bench/net_pingpong.py``), which an application written in C, or NCCL, does not pay.

Simulated network (``NetConfig.simulate``, in a world made with ``simulate_hosts=True`` so that every
rank is a host of its own): the bytes still move over MPI and are compared as above, but a sample's time
is priced by the link: the sum over its k messages of ``alpha + n/beta``, each with the net's noise.
Those figures have source ``simulated`` and are never measurements.

Everything here is collective: every rank of the world calls ``measure_net`` and gets the same run. The
module never prints and never exits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpucal.errors import InputError
from gpucal.kernels.comm import RankError, SimulatedNet, World
from gpucal.kernels.reference import Check, Work
from gpucal.probes.base import Result
from gpucal.probes.lockstep import lockstep_measure
from gpucal.probes.timing import Policy
from gpucal.units import size_label

__all__ = ["NET_SIZES", "NetConfig", "NetRun", "measure_net", "net_policy", "pairs_for", "size_label",
           "BYTE_CONVENTION", "QUANTITY_CONVENTION", "compare_bytes"]

NET_SIZES = tuple(1 << p for p in range(3, 27))  # 8 B … 64 MiB
PAIR_MODES = ("all", "leaders")
DEFAULT_BUDGET_S = 0.2
BYTE_CONVENTION = "link_Bps = n/t, one way; t = half the round trip (ping-pong)"
QUANTITY_CONVENTION = "n/t one way, t = half the round trip"
CHECK_METHOD = "bit-exact compare of every byte received"
# Seconds an idle rank sleeps between polls of the barrier that ends a pair.
_POLL_S = 1e-3


@dataclass(frozen=True)
class NetConfig:
    """What ``run_net`` measures.

    ``sizes``: message sizes in bytes (default ``NET_SIZES``, 8 B … 64 MiB). ``pairs``: ``all`` (every
    pair of ranks) or ``leaders`` (one pair per pair of hosts, between the hosts' lowest ranks).
    ``budget_s``: sampling seconds per size at most (default 0.2). ``seed``: of the random bytes sent.
    ``simulate``: a simulated network that prices the times (the world must simulate hosts).
    """

    sizes: tuple[int, ...] | None = None
    pairs: str = "all"
    budget_s: float | None = None
    seed: int = 0
    simulate: SimulatedNet | None = None


def net_policy(budget_s: float | None = None) -> Policy:
    """The timing policy of the network probe: 2 single warm-up round trips, samples of at least 1 ms,
    5 to 100 samples, CV target 2 %, ``budget_s`` (default 0.2 s) of sampling per size, so that 64 MiB
    over 1 GbE (about 0.5 s a message) stays a few seconds per size."""
    return Policy(warmup_runs=2, warmup_s=0.0, min_sample_s=1e-3, min_samples=5, max_samples=100, target_cv=0.02,
                  budget_s=budget_s if budget_s is not None else DEFAULT_BUDGET_S)


def pairs_for(world: World, mode: str) -> list[tuple[int, int]]:
    """The rank pairs (i, j), i < j, in the order they are measured: ``all`` pairs of ranks, or the
    ``leaders`` of each pair of hosts."""
    if mode == "all":
        ranks = list(range(world.size))
    elif mode == "leaders":
        ranks = sorted(world.leaders())
    else:
        raise InputError(f"pairs: expected one of {', '.join(PAIR_MODES)}, got {mode!r}")
    return [(a, b) for k, a in enumerate(ranks) for b in ranks[k + 1:]]


# one pair --------------------------------------------------------------------------------------------
def _payload(seed: int, i: int, j: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, i, j, n]).integers(0, 256, n, dtype=np.uint8)


def compare_bytes(got: np.ndarray, expected: np.ndarray, who: str) -> Check:
    method = f"{CHECK_METHOD} ({who})"
    if np.array_equal(got, expected):
        return Check(True, method, int(got.size), max_abs_err=0.0, tolerance=0.0)
    bad = np.flatnonzero(got != expected)
    k = int(bad[0])
    return Check(False, method, int(got.size), index=(k,), got=float(got[k]), expected=float(expected[k]),
                 tolerance=0.0, max_abs_err=float(bad.size))  # for bytes: how many differ


def _first_bad(checks) -> Check | None:
    return next((c for c in checks if c is not None and not c.ok), None)


def _failed_reason(check: Check, when: str) -> str:
    return (f"verification {when} failed ({check.method}): {int(check.max_abs_err or 0)} of {check.checked} bytes "
            f"differ; first at byte {check.index[0]}: got {int(check.got)}, expected {int(check.expected)}")


class _Pair:
    """One pair's side (i: ``lead``; j: the echo) of the ping-pong over its 2-rank communicator."""

    def __init__(self, world: World, comm, i: int, j: int, config: NetConfig, policy: Policy):
        from mpi4py import MPI

        self.MPI = MPI
        self.world, self.comm, self.i, self.j = world, comm, i, j
        self.lead = world.rank == i
        self.config, self.policy, self.net = config, policy, config.simulate

    def base(self, n: int) -> dict:
        i, j, w = self.i, self.j, self.world
        hi, hj = w.ranks[i], w.ranks[j]
        params = {"src_rank": i, "dst_rank": j, "src_host": hi.host, "dst_host": hj.host,
                  "src_hostname": hi.hostname, "dst_hostname": hj.hostname, "same_host": w.same_host(i, j),
                  "bytes": n, "series": f"net-rank{i}-rank{j}"}
        return dict(probe="net", case=f"rank{i}<->rank{j} {size_label(n)}",
                    backend="mpi+simulated-net" if self.net else "mpi",
                    source="simulated" if self.net else "measured", device=f"{hi.hostname}<->{hj.hostname}",
                    params=params, work=Work(n, n, 0), byte_convention=BYTE_CONVENTION, library=w.library)

    def agree(self, local):
        """Both sides' values (i's first): ends each step, so that neither side waits on the other alone."""
        return self.comm.allgather(local)

    def case(self, n: int) -> Result | None:
        """Verify, time and verify again one size; the Result on i, None on j."""
        MPI, comm, lead = self.MPI, self.comm, self.lead
        base = self.base(n)
        peer = 1 if lead else 0
        why = None
        try:
            expected = _payload(self.config.seed, self.i, self.j, n)
            recv = np.bitwise_not(expected)
        except Exception as exc:  # e.g. no memory for the buffers
            why = f"rank {self.world.rank}: {type(exc).__name__}: {exc}"
        errors = [e for e in self.agree(why) if e]
        if errors:
            return Result(status="error", reason=errors[0], **base) if lead else None

        # verification, outside the timed window
        if lead:
            comm.Send(expected, dest=peer)
            comm.Recv(recv, source=peer)
        else:
            comm.Recv(recv, source=peer)
            comm.Send(recv, dest=peer)
        checks = self.agree(compare_bytes(recv, expected, f"rank {self.world.rank}"))
        bad = _first_bad(checks)
        if bad is not None:
            return Result(status="failed", check=bad, reason=_failed_reason(bad, "before timing"), **base) if lead \
                else None
        check = checks[0]
        recv[:] = np.bitwise_not(expected)  # poisoned again: what arrives while timed is compared after

        if lead:
            send = expected
            priced = self.net.rng(self.i, self.j, n) if self.net else None

            def run_k(k: int) -> float:
                t0 = MPI.Wtime()
                for _ in range(k):
                    comm.Send(send, dest=peer)
                    comm.Recv(recv, source=peer)
                elapsed_s = MPI.Wtime() - t0
                if priced is None:
                    return elapsed_s / 2.0
                one_way_s = self.net.one_way_s(n)
                return float(sum(self.net.noisy(one_way_s, priced) for _ in range(k)))
        else:
            def run_k(k: int) -> float:
                for _ in range(k):
                    comm.Recv(recv, source=peer)
                    comm.Send(recv, dest=peer)
                return 0.0

        clock = (f"simulated {self.net.name}: priced one-way time per message" if self.net
                 else "MPI.Wtime: half the round trip")
        try:
            timing = lockstep_measure(comm, run_k, self.policy, clock)
        except RankError as exc:
            return Result(status="error", check=check, reason=f"timing: {exc}", **base) if lead else None
        after = self.agree(compare_bytes(recv, expected, f"rank {self.world.rank}"))
        bad = _first_bad(after)
        if bad is not None:
            return Result(status="failed", check=bad, reason=_failed_reason(bad, "after timing"), **base) if lead \
                else None
        if not lead:
            return None
        return Result(status="passed", check=check, timing=timing, metrics={"link_Bps": n / timing.median_s}, **base)


def _run_pair(world: World, i: int, j: int, sizes, config: NetConfig, policy: Policy) -> list[Result]:
    """Measure pair (i, j) over ``sizes``; collective over the world (the others wait). Every rank returns
    the pair's results."""
    comm = world.comm
    outcome: list[Result] = []
    if world.rank in (i, j):
        group = comm.group.Incl([i, j])
        pair_comm = comm.Create_group(group)
        group.Free()
        side = _Pair(world, pair_comm, i, j, config, policy)
        results = [side.case(n) for n in sizes]
        outcome = [r for r in results if r is not None]
        pair_comm.Free()  # collective over the pair: skipped when a side failed (the command then aborts)
    world.wait_quietly(_POLL_S)  # waiting ranks sleep between polls: the CPUs are the pair's
    return comm.bcast(outcome if world.rank == i else None, root=i)


@dataclass
class NetRun:
    """What ``measure_net`` returns on every rank: the pairs in the order measured, each pair's ``Result``s
    (one per size), the world (``World.to_dict()``), the source of the figures (``measured`` or
    ``simulated``), the transport in words, what priced the times (a simulated link) and the simulated net."""

    pairs: list[tuple[int, int]]
    per_pair: list[list[Result]]
    world: dict
    source: str
    transport: str
    priced_by: str | None = None
    simulated_net: dict | None = None

    @property
    def results(self) -> list[Result]:
        return [r for pair in self.per_pair for r in pair]


def measure_net(world: World, config: NetConfig = NetConfig()) -> NetRun:
    """Measure every pair of ``config`` one after the other (collective: every rank calls it and every rank
    returns the same run). See the module docstring for the method, statistic and byte convention."""
    sizes = tuple(sorted(set(config.sizes if config.sizes is not None else NET_SIZES)))
    if not sizes or any(not isinstance(n, (int, np.integer)) or n < 1 for n in sizes):
        raise InputError(f"sizes: expected positive whole numbers of bytes, got {config.sizes!r}")
    if config.budget_s is not None and not config.budget_s > 0:
        raise InputError(f"budget_s: must be positive, got {config.budget_s!r}")
    net = config.simulate
    if net is not None and not world.simulated_hosts:
        raise InputError("simulate: a simulated network needs a world of simulated hosts "
                         "(world(simulate_hosts=True)): every rank a host of its own")
    pairs = pairs_for(world, config.pairs)
    policy = net_policy(config.budget_s)
    source = "simulated" if net else "measured"
    per_pair: list[list[Result]] = []
    transport = f"simulated {net.name} over {world.library}" if net else world.library
    priced_by = f"the simulated link {net.name}" if net else None
    for i, j in pairs:
        per_pair.append(_run_pair(world, i, j, sizes, config, policy))
    described = None
    if net is not None:
        described = {"name": net.name, "alpha_s": net.alpha_s, "beta_Bps": net.beta_Bps,
                     "noise_frac": net.noise_frac, "seed": net.seed}
    return NetRun(pairs, per_pair, world.to_dict(), source, transport, priced_by, described)
