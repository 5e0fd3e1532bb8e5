"""The copy side of the ``cupy`` backend: buffers, copies along every path, and their clocks (``kernels/links.py``).

- Device memory: ``cupy.empty`` on the device. Pinned host memory: ``cudaHostAlloc`` with the portable flag
  (every device sees it; with unified addressing it is mapped, so a kernel can reach it by its host
  pointer), allocated and touched while the process runs on the device's CPUs (``local_to``: NVML's CPU
  affinity), so its pages sit on the device's NUMA node. Pageable memory: NumPy, touched the same way.
- Copy engine: ``cudaMemcpyAsync`` (``cudaMemcpyPeerAsync`` between devices); kernel engine: ``copy_bytes``
  on the device that issues it (the destination for ``sm-read``, the source for ``sm-write``).
- Host staging: chunks of ``STAGING_CHUNK_BYTES`` through two pinned buffers; D2H on a stream of the source,
  H2D on a stream of the destination, events between them so each buffer is refilled only once emptied.
- Each copy has its own non-blocking stream. ``time_ops`` queues all copies behind the blocked-start gate
  (``BlockedStart``) and reads one pair of events per copy, the first recorded right behind the gate, so
  the copies of a bidirectional case start together; ``max_gated_k`` bounds the copies queued at once (a
  full queue would block the host behind its own closed gate). Copies from or to pageable memory, and the
  driver's staging, may block the host until they complete, so they are never queued behind the gate
  (it would wait for its own timeout): they are timed with events as issued, one way only, and their
  results say so.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time

import cupy  # noqa: TID253 - a backend module: imported only where that backend is selected
import numpy as np
from cupy_backends.cuda.api import runtime as _rt  # noqa: TID253 - a backend module: imported only where that backend is selected

from gpucal.errors import GpucalError
from gpucal.kernels.cuda_src import SOURCE
from gpucal.kernels.links import STAGING_CHUNK_BYTES, Buffer, CopyOp, check_op
from gpucal.kernels.numa import placement
from gpucal.kernels.nvml import cpu_affinity

__all__ = ["CupyLinks", "BlockedStart", "SPIN_TIMEOUT_S"]

THREADS = 256
SPIN_TIMEOUT_S = 10.0  # the blocked start gives up after this long
MAX_GATED_COMMANDS = 512  # per stream, queued behind the blocked start
_PEER_ALREADY_ENABLED, _PEER_NOT_ENABLED = 704, 705


def _ptr(buf: Buffer) -> int:
    if buf.kind == "device":
        return buf.handle.data.ptr
    if buf.kind == "pinned":
        return buf.handle[0].ptr
    return buf.handle.ctypes.data


def _host_view(buf: Buffer) -> np.ndarray:
    return buf.handle[1] if buf.kind == "pinned" else buf.handle


class CupyLinks:
    """Mixed into ``CupyBackend``: the methods of ``Backend``'s link section."""

    def links_reason(self):
        return None

    # memory ----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def local_to(self, device: int):
        cpus = cpu_affinity(self.devices()[device].pci_bus_id)
        before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        usable = cpus & before if cpus and before else None
        if usable:
            os.sched_setaffinity(0, usable)
        try:
            yield
        finally:
            if usable:
                os.sched_setaffinity(0, before)

    def alloc(self, kind, nbytes, device):
        place = None
        if kind == "device":
            with cupy.cuda.Device(device):
                handle = cupy.empty(nbytes, dtype=cupy.uint8)
        elif kind == "pinned":
            with cupy.cuda.Device(device):
                mem = cupy.cuda.PinnedMemory(nbytes, _rt.hostAllocPortable)
            view = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(mem.ptr))
            view[...] = 0  # cudaHostAlloc placed the pages while the caller ran where ``local_to`` put it
            handle = (mem, view)
            place = self._placement(mem.ptr, nbytes)
        elif kind == "pageable":
            handle = np.empty(nbytes, dtype=np.uint8)
            handle[...] = 0  # np.zeros would leave the pages unmapped until first used, placed nowhere yet
            place = self._placement(handle.ctypes.data, nbytes)
        else:
            raise ValueError(f"unknown memory kind {kind!r}")
        return Buffer(kind, device, nbytes, handle, numa_node=place and place.node, numa_how=place and place.how)

    @staticmethod
    def _placement(address: int, nbytes: int):
        """Where the kernel reports the buffer's touched pages (``move_pages``); its node is ``None`` where it
        cannot say, and ``how`` says why."""
        return placement(address, nbytes)

    def write(self, buf, data):
        data = np.ascontiguousarray(data, dtype=np.uint8)
        if buf.on_host:
            _host_view(buf)[: data.size] = data
            return
        with cupy.cuda.Device(buf.device):
            _rt.deviceSynchronize()
            _rt.memcpy(_ptr(buf), data.ctypes.data, data.size, _rt.memcpyHostToDevice)
            _rt.deviceSynchronize()

    def read(self, buf, nbytes):
        if buf.on_host:
            return np.array(_host_view(buf)[:nbytes], copy=True)
        out = np.empty(nbytes, dtype=np.uint8)
        with cupy.cuda.Device(buf.device):
            _rt.deviceSynchronize()
            _rt.memcpy(out.ctypes.data, _ptr(buf), nbytes, _rt.memcpyDeviceToHost)
        return out

    # peers -----------------------------------------------------------------------------------------
    def can_access_peer(self, src, dst):
        return src != dst and bool(_rt.deviceCanAccessPeer(src, dst))

    def set_peer_access(self, a, b, enabled):
        done = []
        try:
            for x, y in ((a, b), (b, a)):
                self._peer(x, y, enabled)
                done.append((x, y))
        except Exception:
            for x, y in done:  # leave the machine as found: undo the direction that succeeded
                self._peer(x, y, not enabled)
            raise

    @staticmethod
    def _peer(x, y, enabled):
        with cupy.cuda.Device(x):
            try:
                if enabled:
                    _rt.deviceEnablePeerAccess(y)
                else:
                    _rt.deviceDisablePeerAccess(y)
            except _rt.CUDARuntimeError as exc:
                if exc.status != (_PEER_ALREADY_ENABLED if enabled else _PEER_NOT_ENABLED):
                    raise

    # copies ----------------------------------------------------------------------------------------
    def module_on(self, device: int):
        modules = self.__dict__.setdefault("_modules", {})
        if device not in modules:
            with cupy.cuda.Device(device):
                modules[device] = cupy.RawModule(code=SOURCE, options=("--std=c++14",))
        return modules[device]

    def _stream(self, device: int):
        with cupy.cuda.Device(device):
            return cupy.cuda.Stream(non_blocking=True)

    def copy_op(self, path, engine, src, dst, nbytes):
        check_op(path, engine, src, dst, nbytes)
        device = dst.device if engine == "sm-read" or path == "h2d" else src.device
        op = CopyOp(path, engine, src, dst, nbytes, device)
        op.state["stream"] = self._stream(device)
        op.state["gate"] = path != "driver-staged" and not any(b.kind == "pageable" for b in (src, dst))
        s, d = _ptr(src), _ptr(dst)
        if engine in ("sm", "sm-read", "sm-write"):
            with cupy.cuda.Device(device):
                fn = self.module_on(device).get_function("copy_bytes")
                sm = self.devices()[device].sm_count or 80
            grid = (int(max(1, min(-(-nbytes // (16 * THREADS)), sm * 2048 // THREADS * 4))),)
            args = (np.uint64(s), np.uint64(d), np.uint64(nbytes))

            def enqueue(stream=op.state["stream"]):
                with cupy.cuda.Device(device):
                    fn(grid, (THREADS,), args, stream=stream)
        elif path in ("p2p", "driver-staged"):
            a, b = src.device, dst.device

            def enqueue(stream=op.state["stream"]):
                _rt.memcpyPeerAsync(d, b, s, a, nbytes, stream.ptr)
        elif path == "host-staged":
            enqueue = self._staged(op, s, d)
        else:
            kind = {"h2d": _rt.memcpyHostToDevice, "d2h": _rt.memcpyDeviceToHost, "d2d": _rt.memcpyDeviceToDevice}[path]

            def enqueue(stream=op.state["stream"]):
                _rt.memcpyAsync(d, s, nbytes, kind, stream.ptr)
        op.state["enqueue"] = enqueue
        return op

    def _staged(self, op, s, d):
        a, b = op.src.device, op.dst.device
        chunk = min(STAGING_CHUNK_BYTES, op.nbytes)
        with self.local_to(a):  # cudaHostAlloc places the pages when called: on the source's NUMA node
            staging = [self.alloc("pinned", chunk, a) for _ in range(2)]
        down = op.state["stream"]
        up = self._stream(b)
        with cupy.cuda.Device(a):
            fetched = [cupy.cuda.Event(disable_timing=True) for _ in range(2)]
        with cupy.cuda.Device(b):
            landed = [cupy.cuda.Event(disable_timing=True) for _ in range(2)]
        op.state.update(staging=staging, up=up)
        chunks = [(i, off, min(chunk, op.nbytes - off)) for i, off in enumerate(range(0, op.nbytes, chunk))]
        op.state["commands"] = 3 * len(chunks)  # per stream and copy: a wait, a copy, a record per chunk

        def enqueue():
            for i, off, n in chunks:
                j = i % 2
                buf = _ptr(staging[j])
                if i >= 2:
                    down.wait_event(landed[j])  # the buffer is refilled only once its H2D is done
                _rt.memcpyAsync(buf, s + off, n, _rt.memcpyDeviceToHost, down.ptr)
                with cupy.cuda.Device(a):
                    fetched[j].record(down)
                up.wait_event(fetched[j])
                _rt.memcpyAsync(d + off, buf, n, _rt.memcpyHostToDevice, up.ptr)
                with cupy.cuda.Device(b):
                    landed[j].record(up)
            down.wait_event(landed[(len(chunks) - 1) % 2])  # the copy ends on the source's stream
        return enqueue

    def _sync(self, op):
        op.state["stream"].synchronize()
        if "up" in op.state:
            op.state["up"].synchronize()

    def run_op(self, op):
        op.state["enqueue"]()
        self._sync(op)

    def time_ops(self, ops, k):
        return self._events(ops, k, gated=all(op.state["gate"] for op in ops))

    def max_gated_k(self, ops):
        # a stream's queue holds about a thousand commands; a host blocked on a full queue behind a closed gate
        # would never release it
        return MAX_GATED_COMMANDS // max(op.state.get("commands", 1) for op in ops)  # 0: not even one fits

    def time_back_to_back(self, op, k):
        return self._events([op], k, gated=False)[0]

    def _events(self, ops, k, gated: bool) -> list[float]:
        """Each op ``k`` times on its stream between a pair of events; behind the blocked start when ``gated``."""
        if gated and k > self.max_gated_k(ops):
            raise ValueError(f"{k} copies per op do not fit behind the blocked start (at most {self.max_gated_k(ops)})")
        gate = None
        marks = []
        try:
            if gated:
                first = ops[0].device
                with cupy.cuda.Device(first):
                    gates = self.__dict__.setdefault("_gates", {})
                    gate = gates.setdefault(first, None) or BlockedStart(self, device=first)
                    gates[first] = gate
                    gate_stream = self._stream(first)
                    gate.arm(gate_stream)
                    opened = cupy.cuda.Event(disable_timing=True)
                    opened.record(gate_stream)
            for op in ops:
                stream = op.state["stream"]
                with cupy.cuda.Device(op.device):
                    if gate:
                        stream.wait_event(opened)
                    start, end = cupy.cuda.Event(), cupy.cuda.Event()
                    start.record(stream)
                for _ in range(k):
                    op.state["enqueue"]()
                with cupy.cuda.Device(op.device):
                    end.record(stream)
                marks.append((start, end))
        finally:
            if gate:
                gate.release()
        out = []
        for op, (start, end) in zip(ops, marks):
            with cupy.cuda.Device(op.device):
                end.synchronize()
                out.append(cupy.cuda.get_elapsed_time(start, end) / 1e3)
        if gate:
            with cupy.cuda.Device(ops[0].device):
                gate.check()
        return out

    def time_oneshot(self, op, k):
        total = 0.0
        for _ in range(k):
            t0 = time.perf_counter()
            op.state["enqueue"]()
            self._sync(op)
            total += time.perf_counter() - t0
        return total

    def time_enqueue(self, op, k):
        self._sync(op)
        t0 = time.perf_counter()
        for _ in range(k):
            op.state["enqueue"]()
        t = time.perf_counter() - t0
        self._sync(op)
        return t


class BlockedStart:
    """The blocked-start gate: ``arm()`` queues a spin kernel on the current stream, the caller queues
    its copies behind it, ``release()`` lets them all start at once. ``check()`` (after a synchronize)
    raises when the spin timed out, so a run whose start was not blocked never yields a number."""

    def __init__(self, backend: CupyLinks, timeout_s: float = SPIN_TIMEOUT_S, device: int | None = None):
        self.backend = backend
        self.device = backend.device_index if device is None else device
        self.timeout_ns = np.uint64(int(timeout_s * 1e9))
        self.flag = cupy.cuda.alloc_pinned_memory(4)
        self.flag_host = np.frombuffer(self.flag, dtype=np.int32, count=1)
        if not _rt.deviceGetAttribute(41, self.device):  # cudaDevAttrUnifiedAddressing
            raise GpucalError("blocked start needs unified addressing (pinned host memory seen by the device)")
        self.flag_dev = np.uint64(self.flag.ptr)  # with unified addressing, the same pointer on the device
        with cupy.cuda.Device(self.device):
            self.status = cupy.zeros(1, dtype=cupy.int32)

    def arm(self, stream=None) -> None:
        self.flag_host[0] = 0
        with cupy.cuda.Device(self.device):
            fn = self.backend.module_on(self.device).get_function("spin_wait")
            stream = stream or cupy.cuda.get_current_stream()
            _rt.memsetAsync(self.status.data.ptr, 0, 4, stream.ptr)  # ordered before the spin, on its stream
            fn((1,), (1,), (self.flag_dev, self.status, self.timeout_ns), stream=stream)

    def release(self) -> None:
        self.flag_host[0] = 1

    def check(self) -> None:
        state = int(self.status.get()[0])
        if state != 1:
            raise GpucalError("blocked start: the spin kernel "
                              + ("timed out before the host released it" if state == 2 else "never ran"))
