"""The two engines behind the collectives probe (``probes/collectives.py``), each one class:

- ``NcclEngine``: NCCL through CuPy (``cupy.cuda.nccl``), one rank per GPU, timed with CUDA events (or
  k ops captured in one CUDA graph); the transport NCCL chose, read from its own INIT log;
- ``VirtualEngine``: the virtual machine's collectives, MPI on host NumPy arrays (every check is real),
  priced by the ring algorithms over the slowest link between the ranks (``ring_time_s``).

An engine prepares a case, runs it once (for the checks), runs k of it (for the timing), and releases it;
the probe does the rest (verification, statistics, fits). ``nccl_unavailable`` says why NCCL cannot run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from gpucal.errors import InputError
from gpucal.kernels.comm import World
from gpucal.probes.collectives import OPS, VIRTUAL_LIBRARY, ring_time_s

if TYPE_CHECKING:
    from gpucal.probes.collectives import CollectivesConfig, _Case

_NCCL_LOG: dict = {"dir": None}  # NCCL's log folder of this process (NCCL reads its logging variables once)

__all__ = ["VirtualEngine", "NcclEngine", "nccl_unavailable", "nccl_version_text", "parse_nccl_transports"]

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

        from gpucal.profiles.queries import resolve_document
        from gpucal.kernels.virtual import _Clock  # the virtual backend's own noise, outliers and warm-up
        from gpucal.kernels.virtual_machine import VirtualMachine, parse_spec

        profile, count, faults = parse_spec(config.backend)
        doc = resolve_document(profile, "--backend", "profile")
        self.world, self.seed, self.net, self._sum = world, config.seed, config.simulate, MPI.SUM
        n = world.size
        per_host = self.net.ranks_per_host if self.net else n  # ranks on one (virtual) machine
        machine = VirtualMachine(doc.data, doc.name, count or per_host, faults)
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

    def poison(self, case: _Case) -> None:
        pass  # every run writes a fresh output (run_once)

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
        self._log_to_file()
        return self._connect(world, runtime)

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

    def _log_to_file(self) -> None:
        """NCCL's INIT log into one file per process, to read its channels' transport. NCCL reads its
        logging variables once per process, so the folder is made once (``_NCCL_LOG``) and kept until the
        process ends; each engine reads only what was written after it started. The user's own
        NCCL_DEBUG is left alone."""
        import atexit
        import glob
        import os
        import shutil
        import tempfile

        if _NCCL_LOG["dir"] is None:
            if "NCCL_DEBUG" in os.environ:
                self._transport_reason = (f"NCCL_DEBUG={os.environ['NCCL_DEBUG']} is set: NCCL's log is the user's, "
                                          "and its channel lines (\"via ...\") show the transport")
                return
            _NCCL_LOG["dir"] = tempfile.mkdtemp(prefix="gpucal-nccl-")
            atexit.register(shutil.rmtree, _NCCL_LOG["dir"], True)
            os.environ.update(NCCL_DEBUG="INFO", NCCL_DEBUG_SUBSYS="INIT",
                              NCCL_DEBUG_FILE=os.path.join(_NCCL_LOG["dir"], "nccl.%h.%p"))
        self._logdir = _NCCL_LOG["dir"]
        self._offsets = {path: os.path.getsize(path) for path in glob.glob(f"{self._logdir}/nccl.*")}

    def _log_lines(self) -> list[str]:
        """The lines NCCL logged on this rank since this engine started."""
        import glob

        lines: list[str] = []
        for path in glob.glob(f"{self._logdir}/nccl.*") if self._logdir is not None else ():
            with open(path, errors="replace") as f:
                f.seek(self._offsets.get(path, 0))
                lines += f.readlines()
        return lines

    def _nccl_warning(self) -> str | None:
        """The last WARN line of NCCL's log on this rank (where the log is ours), or None."""

        found = None
        for line in self._log_lines():
            if " NCCL WARN " in line:
                found = line.split(" NCCL WARN ", 1)[1].strip()
        return found

    def transport(self):
        """The union over ranks of the transports in NCCL's channel lines (read after the ops ran: NCCL may
        connect a channel at its first use)."""
        mine: list[str] | str = getattr(self, "_transport_reason", "no NCCL log")
        if self._logdir is not None:
            mine = parse_nccl_transports(self._log_lines())
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
        graph, error = None, None
        if case.graph:
            try:
                graph = self._graph(case, k)
            except Exception as exc:  # every rank learns of it below, before any launches a collective
                error = f"graph capture: {type(exc).__name__}: {exc}"
        if self.world.comm.allreduce(1 if error else 0):  # also the barrier that starts every rank together
            raise RuntimeError(error or "graph capture failed on another rank")
        self.start_event.record(self.stream)
        if graph is not None:
            graph.launch(stream=self.stream)
        else:
            for _ in range(k):
                self._launch(case)
        self.end_event.record(self.stream)
        self.end_event.synchronize()
        return self.cp.cuda.get_elapsed_time(self.start_event, self.end_event) / 1e3

    def poison(self, case: _Case) -> None:
        """NaN in the output before timing: the check after timing then sees what the timed ops wrote."""
        with self.stream:
            case.state["recv"].fill(np.nan)
        self.stream.synchronize()

    def output_after_timing(self, case: _Case) -> np.ndarray:
        self.stream.synchronize()
        return case.state["recv"].get(stream=self.stream)  # what the last timed op wrote

    def release(self, case: _Case) -> None:
        self.stream.synchronize()
        case.state.clear()
        self.cp.get_default_memory_pool().free_all_blocks()

    def close(self) -> None:
        self.stream.synchronize()
        self.comm.destroy()