"""NCCL through CuPy (``cupy.cuda.nccl``), the collectives probe's engine on GPUs: one rank per GPU, timed with
CUDA events (or k ops captured in one CUDA graph); the transport NCCL chose, read from its own INIT log.
``nccl_unavailable`` says why NCCL cannot run here. CuPy is imported only when asked for.

An engine prepares a case, runs it once (for the checks), runs k of it (for the timing), and releases it;
the probe (``probes/collectives.py``) does the rest (verification, statistics).
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterable

import numpy as np

from gpucal.errors import InputError
from gpucal.kernels.comm import World
from gpucal.probes.collective_cases import CollectiveCase, CollectivesConfig

_NCCL_LOG: dict = {"dir": None}  # NCCL's log folder of this process (NCCL reads its logging variables once)

__all__ = ["NcclEngine", "nccl_unavailable", "nccl_version_text", "parse_nccl_transports"]

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


def nccl_unavailable() -> str | None:
    """Why NCCL through CuPy cannot run on this rank (no CuPy, no CUDA device, no NCCL), or ``None``."""
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

    def prepare(self, case: CollectiveCase, send: np.ndarray, count: int) -> None:
        cp = self.cp
        with self.stream:
            case.state.update(send=cp.asarray(send), recv=cp.empty(count, dtype=cp.float32), graphs={})
        self.stream.synchronize()

    def _launch(self, case: CollectiveCase) -> None:
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

    def run_once(self, case: CollectiveCase) -> np.ndarray:
        with self.stream:
            case.state["recv"].fill(np.nan)
        self._launch(case)
        self.stream.synchronize()
        return case.state["recv"].get(stream=self.stream)

    def _graph(self, case: CollectiveCase, k: int):
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

    def run_k(self, case: CollectiveCase, k: int) -> float:
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

    def poison(self, case: CollectiveCase) -> None:
        """NaN in the output before timing: the check after timing then sees what the timed ops wrote."""
        with self.stream:
            case.state["recv"].fill(np.nan)
        self.stream.synchronize()

    def output_after_timing(self, case: CollectiveCase) -> np.ndarray:
        self.stream.synchronize()
        return case.state["recv"].get(stream=self.stream)  # what the last timed op wrote

    def release(self, case: CollectiveCase) -> None:
        self.stream.synchronize()
        case.state.clear()
        self.cp.get_default_memory_pool().free_all_blocks()

    def close(self) -> None:
        self.stream.synchronize()
        self.comm.destroy()
