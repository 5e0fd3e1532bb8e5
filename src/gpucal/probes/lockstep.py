"""Timing across MPI ranks in lockstep: the one timing harness (``probes/timing.py``) run by every rank of
a communicator together, for the probes that time an operation over several ranks (``probes/net.py``,
``probes/collectives.py``).
"""

from __future__ import annotations

from collections.abc import Callable

from gpucal.kernels.comm import RankError, mpi
from gpucal.probes.timing import Policy, Timing, TimingError, measure

__all__ = ["lockstep_measure"]


def lockstep_measure(comm, run_k: Callable[[int], float], policy: Policy, clock_name: str,
                     root: int = 0) -> Timing:
    """The timing harness (``probes.timing.measure``) run by every rank of ``comm`` together.

    ``root`` decides everything the harness decides (warm-up, k, when to stop) and broadcasts each ``k``
    before the sample starts; every rank runs ``run_k(k)`` (its own seconds for k iterations, or 0.0 for
    a rank that only serves, such as the echoing side of a ping-pong), and a sample is the largest of
    the ranks' times (an operation across ranks ends when the last rank is done). A rank whose
    ``run_k`` raises reports it inside the loop; then every rank raises ``RankError``. Every rank
    returns the same ``Timing``.
    """
    rank = comm.Get_rank()
    MAX = mpi().MAX

    def sample(k: int) -> float:
        try:
            result = (0, float(run_k(k)), "")
        except Exception as exc:  # carried to every rank, so none is left waiting
            result = (1, 0.0, f"rank {rank}: {type(exc).__name__}: {exc}")
        failed, seconds, why = comm.allreduce(result, op=MAX)
        if failed:
            raise RankError(why)
        return seconds

    if rank == root:
        outcome: tuple[Timing | None, str | None]
        try:
            outcome = (measure(lambda k: (comm.bcast(k, root=root), sample(k))[1], policy, clock_name), None)
        except (RankError, TimingError) as exc:
            outcome = (None, str(exc))
        comm.bcast(0, root=root)  # stop
        timing, why = comm.bcast(outcome, root=root)
    else:
        while True:
            k = comm.bcast(None, root=root)
            if not k:
                break
            try:
                sample(k)
            except RankError:
                pass  # the root saw it too and stops the loop
        timing, why = comm.bcast(None, root=root)
    if why is not None:
        raise RankError(why)
    return timing
