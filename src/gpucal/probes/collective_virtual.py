"""The virtual machine's collectives (``virtual:PROFILE[:N]``, no GPU): MPI moves host NumPy float32 arrays,
so every check is real; the time is priced by the ring algorithms (``plan.equations.ring_collective_time_s``,
the planner's own model) over the slowest link between the ranks, with the net's or the machine's noise.
Every figure it gives says ``simulated``.
"""

from __future__ import annotations

import numpy as np

from gpucal.errors import InputError
from gpucal.kernels.comm import World
from gpucal.kernels.virtual_clock import VirtualClock
from gpucal.kernels.virtual_machine import VirtualMachine
from gpucal.kernels.virtual_spec import parse_spec
from gpucal.plan.equations import ring_collective_time_s
from gpucal.probes.collective_cases import OPS, VIRTUAL_LIBRARY, CollectiveCase, CollectivesConfig
from gpucal.profiles.names import resolve_document

__all__ = ["VirtualEngine"]


class VirtualEngine:
    """The virtual machine's collectives: MPI moves host NumPy float32 arrays (so every check is real); the
    time of k ops is k × ``ring_collective_time_s`` (the planner's ring model) over the slowest link between the ranks, with the net's noise
    (``--simulate-net``) or the virtual machine's faults (noise, outliers, warm-up)."""

    source = "simulated"
    library = VIRTUAL_LIBRARY
    nccl_version = None
    clock_name = "virtual clock (ring model)"
    graph_reason = "CUDA graphs are timed on a GPU only (the ring model has no launch cost to save)"

    def __init__(self, world: World, config: CollectivesConfig):
        from mpi4py import MPI

        profile, count, faults = parse_spec(config.backend)
        doc = resolve_document(profile, "--backend", "profile")
        self.world, self.seed, self.net, self._sum = world, config.seed, config.simulate, MPI.SUM
        n = world.size
        per_host = self.net.ranks_per_host if self.net else n  # ranks on one (virtual) machine
        machine = VirtualMachine(doc.profile, doc.name, count or per_host, faults)
        if machine.count < per_host:
            raise InputError(f"--backend: the virtual machine {doc.name} has {machine.count} GPUs and {per_host} "
                             f"ranks run on it: start one rank per GPU (virtual:{doc.name}:{per_host})")
        self.device_name = machine.devices[world.me.local_rank if self.net else world.rank].name
        if self.net is not None:  # a ring across the hosts runs at the pace of its slowest hop: the network
            self.alpha_s, self.beta_Bps = self.net.alpha_s, self.net.beta_Bps
            what = (f"simulated net {self.net.name}, {per_host} GPU(s) per host" if per_host > 1 else
                    f"simulated net {self.net.name}, one GPU per host")
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
        self._clock = VirtualClock(faults)  # the virtual backend's own noise, outliers and warm-up

    def transport(self):
        return [f"{self.link['description']} (simulated)"], None

    def prepare(self, case: CollectiveCase, send: np.ndarray, count: int) -> None:
        case.state.update(send=send, count=count)
        if self.net is not None:
            case.state["rng"] = self.net.rng(OPS.index(case.op), case.size_bytes)

    def run_once(self, case: CollectiveCase) -> np.ndarray:
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

    def run_k(self, case: CollectiveCase, k: int) -> float:
        """Every rank prices the same k ops with the same seeded noise, so the slowest rank is any rank."""
        seconds = k * ring_collective_time_s(case.op, case.size_bytes, self.alpha_s, self.beta_Bps,
                                             self.world.size)
        if self.net is not None:
            return self.net.noisy(seconds, case.state["rng"])
        return self._clock.sample(f"{case.op}-{case.size_bytes}", seconds)

    def poison(self, case: CollectiveCase) -> None:
        pass  # every run writes a fresh output (run_once)

    def output_after_timing(self, case: CollectiveCase) -> np.ndarray:
        return self.run_once(case)  # the priced samples move no bytes: move them once more and check

    def release(self, case: CollectiveCase) -> None:
        case.state.clear()

    def close(self) -> None:
        pass
