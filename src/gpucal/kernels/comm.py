"""The MPI layer: who the ranks are, which host each sits on, and how a failure on one reaches them all.

gpucal launches nothing itself: ``mpiexec -n N gpucal ...`` (or ``srun``) starts the ranks, and this
module wraps ``mpi4py`` (extra ``mpi``; the ``mpich`` wheel brings ``mpiexec``). It is imported lazily,
only by the commands that run over MPI (``probe net``, ``probe collectives``, ``calibrate --cluster``).

Hosts: two ranks share a host when MPI puts them in the same shared-memory communicator
(``MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)``), the standard's own test for "can share memory", not a
comparison of host names (containers and hosts with equal names exist). Hosts are numbered in the order
of their lowest rank; each host's lowest rank is its leader. ``simulate_hosts=True`` makes simulated
hosts of ``ranks_per_host`` consecutive ranks each (default one; named ``<hostname>#<host>``): only for
the simulated network, whose times are priced by a link preset and say ``simulated``.

Errors across ranks: a rank that fails alone would leave the others waiting in the next collective
call. Work is therefore split into phases that end in ``World.agree`` (every rank learns whether any
failed, and why), and the lockstep timing (``probes/lockstep.py``) carries failures inside its sampling
loop; what still escapes is ended with ``MPI_Abort`` by the command (``abort``).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import numpy as np

from gpucal.errors import GpucalError, InputError

__all__ = ["MpiUnavailable", "RankError", "RankInfo", "World", "world", "current_rank", "mpi",
           "abort", "SimulatedNet"]

_RANK: int | None = None  # this process's rank once ``world()`` ran; the CLI prints errors on rank 0 only


class MpiUnavailable(InputError):
    """mpi4py (or an MPI library) is missing: exit code 2 with how to install it."""


class RankError(GpucalError):
    """A step failed on some rank; every rank raises it with the same text (exit code 1)."""


def current_rank() -> int | None:
    """This process's MPI rank, or None when no MPI command ran (importing this module starts nothing)."""
    return _RANK


@dataclass(frozen=True)
class RankInfo:
    """One rank: its number, the host it runs on (name and index), and its place among that host's ranks."""

    rank: int
    hostname: str
    host: int
    local_rank: int
    local_size: int

    def to_dict(self) -> dict:
        return {"rank": self.rank, "hostname": self.hostname, "host": self.host, "local_rank": self.local_rank,
                "local_size": self.local_size}


class World:
    """The ranks of ``MPI.COMM_WORLD`` and their hosts (see the module doc)."""

    def __init__(self, comm, ranks: list[RankInfo], simulated_hosts: bool, library: str, mpi_version: str):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.ranks = ranks
        self.simulated_hosts = simulated_hosts
        self.library = library
        self.mpi_version = mpi_version

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @property
    def me(self) -> RankInfo:
        return self.ranks[self.rank]

    @property
    def hosts(self) -> list[str]:
        """Host names by host index."""
        names: dict[int, str] = {}
        for r in self.ranks:
            names.setdefault(r.host, r.hostname)
        return [names[i] for i in range(len(names))]

    def host_of(self, rank: int) -> int:
        return self.ranks[rank].host

    def same_host(self, a: int, b: int) -> bool:
        return self.ranks[a].host == self.ranks[b].host

    def leaders(self) -> list[int]:
        """The lowest rank of each host, by host index."""
        out: dict[int, int] = {}
        for r in self.ranks:
            out.setdefault(r.host, r.rank)
        return [out[i] for i in range(len(out))]

    def ranks_of(self, host: int) -> list[int]:
        return [r.rank for r in self.ranks if r.host == host]

    def agree(self, error: BaseException | str | None) -> None:
        """End a phase: every rank passes its error (or None); if any rank failed, every rank raises
        ``RankError`` naming the first failed rank and its reason (an ``InputError`` keeps exit code 2)."""
        text = None if error is None else (error if isinstance(error, str) else f"{type(error).__name__}: {error}")
        code = getattr(error, "exit_code", 1) if isinstance(error, BaseException) else 1
        everyone = self.comm.allgather((text, code))
        failed = [(rank, t, c) for rank, (t, c) in enumerate(everyone) if t is not None]
        if failed:
            rank, text, code = failed[0]
            if len(failed) == self.size and len({t for _, t, _ in failed}) == 1 and code == 2:
                exc = RankError(text.removeprefix("InputError: "))  # bad input every rank found alike: as it is
                exc.exit_code = code
                raise exc
            more = f" (and {len(failed) - 1} other rank(s))" if len(failed) > 1 else ""
            exc = RankError(f"rank {rank} ({self.ranks[rank].hostname}): {text}{more}")
            exc.exit_code = code
            raise exc

    def host_world(self) -> World:
        """The ranks of this rank's host, as a world of their own (collective: every rank calls it, each
        joining its host's communicator)."""
        sub = self.comm.Split(color=self.me.host, key=self.rank)
        mates = [r for r in self.ranks if r.host == self.me.host]
        ranks = [RankInfo(i, r.hostname, 0, r.local_rank, r.local_size) for i, r in enumerate(mates)]
        return World(sub, ranks, self.simulated_hosts, self.library, self.mpi_version)

    def wait_quietly(self, poll_s: float = 0.01) -> None:
        """Wait until every rank got here, sleeping between polls (a blocking MPI call spins a core, which
        would disturb the host-side timings of ranks still measuring on the same host)."""
        request = self.comm.Ibarrier()
        while not request.Test():
            time.sleep(poll_s)

    def to_dict(self) -> dict:
        return {"size": self.size, "hosts": self.hosts, "simulated_hosts": self.simulated_hosts,
                "library": self.library, "mpi_version": self.mpi_version,
                "ranks": [r.to_dict() for r in self.ranks]}


def mpi():
    """The ``mpi4py.MPI`` module, or ``MpiUnavailable`` saying how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise MpiUnavailable(f"mpi4py is not installed ({exc}): pip install 'gpucal[mpi]' (mpi4py and the mpich "
                             "wheel, which brings mpiexec), then run: mpiexec -n N gpucal ...") from None
    except RuntimeError as exc:  # mpi4py present but no MPI library to load
        raise MpiUnavailable(f"mpi4py cannot load an MPI library ({exc}): pip install mpich") from None
    return MPI


def world(simulate_hosts: bool = False, ranks_per_host: int = 1) -> World:
    """The MPI world of this process (collective: every rank calls it). ``simulate_hosts``: ranks make
    simulated hosts of ``ranks_per_host`` consecutive ranks each (named ``<hostname>#<host>``)."""
    global _RANK
    MPI = mpi()
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    _RANK = rank
    shared = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    local_rank, local_size = shared.Get_rank(), shared.Get_size()
    leader = shared.allreduce(rank, op=MPI.MIN)  # the host's lowest rank names the host
    shared.Free()
    hostname = MPI.Get_processor_name() or socket.gethostname()
    if simulate_hosts:
        host = rank // ranks_per_host
        leader = host * ranks_per_host
        hostname, local_rank = f"{hostname}#{host}", rank - leader
        local_size = min(ranks_per_host, comm.Get_size() - leader)
    everyone = comm.allgather((hostname, leader, local_rank, local_size))
    order = sorted({lead for _, lead, _, _ in everyone})
    ranks = [RankInfo(r, name, order.index(lead), lr, ls) for r, (name, lead, lr, ls) in enumerate(everyone)]
    library = MPI.Get_library_version().strip().splitlines()[0].strip()
    version = ".".join(map(str, MPI.Get_version()))
    return World(comm, ranks, simulate_hosts, library, version)


def abort(code: int) -> None:
    """End every rank (``MPI_Abort``): for a failure that could leave other ranks waiting."""
    try:
        MPI = mpi()
    except MpiUnavailable:
        return
    if MPI.Is_initialized() and not MPI.Is_finalized() and MPI.COMM_WORLD.Get_size() > 1:
        MPI.COMM_WORLD.Abort(code)


@dataclass(frozen=True)
class SimulatedNet:
    """A network between simulated hosts (of ``ranks_per_host`` ranks each): a transfer of n bytes one way
    costs ``alpha_s + n/beta_Bps``, times ``1 + noise_frac·N(0,1)`` per sample (a generator seeded with
    ``seed``)."""

    name: str
    alpha_s: float
    beta_Bps: float
    noise_frac: float = 0.0
    seed: int = 0
    ranks_per_host: int = 1

    def one_way_s(self, nbytes: float) -> float:
        return self.alpha_s + nbytes / self.beta_Bps

    def rng(self, *key: int):
        return np.random.default_rng([self.seed, *key])

    def noisy(self, seconds: float, rng) -> float:
        """``seconds`` with the net's noise (never below a tenth of itself)."""
        if not self.noise_frac:
            return seconds
        return seconds * max(0.1, 1.0 + self.noise_frac * float(rng.standard_normal()))
