"""All-reduce over the devices of this process for the ``cupy`` backend: NCCL through ``cupy.cuda.nccl``.

- Communicators: ``NcclCommunicator.initAll(devices)`` once per device tuple, kept for the process.
- Eager: ``groupStart()``; per device ``allReduce(send, recv, count, NCCL_FLOAT32, NCCL_SUM, stream)`` on that
  device's current stream; ``groupEnd()``.
- Graphs: per device a non-blocking stream in capture (CuPy's default mode, relaxed), ``count`` grouped
  all-reduces issued on them, one graph per device; a replay launches every device's graph, each on that
  device's current stream. One eager all-reduce runs first, so that NCCL sets up its connections outside
  the capture.
- Timing: ``time_k`` of the backend of ``devices[0]`` (CUDA events on its current stream; any member's would
  do). An all-reduce completes on all members together (no member's part can end before every member's
  contribution has arrived), so the events on ``devices[0]`` see the whole operation.

``allreduce_reason`` says why it cannot run (no NCCL in CuPy, fewer than 2 devices, a device missing);
the launchers raise ``GpucalError`` with that reason, or when a capture fails.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import cupy  # noqa: TID253 - a backend module: imported only where that backend is selected
from cupy_backends.cuda.api import runtime as _rt  # noqa: TID253 - a backend module: imported only where that backend is selected

from gpucal.errors import GpucalError

__all__ = ["allreduce_reason", "allreduce_launcher", "allreduce_graph_launcher", "communicators", "library"]

_COMMUNICATORS: dict[tuple[int, ...], list] = {}


def _nccl():
    """CuPy's NCCL module (CuPy warns when libnccl cannot be loaded; ``allreduce_reason`` says it instead)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from cupy.cuda import nccl
    return nccl


def allreduce_reason(devices: tuple[int, ...]) -> str | None:
    """Why NCCL cannot all-reduce over ``devices`` in this process, or ``None`` when it can."""
    try:
        nccl = _nccl()
    except Exception as exc:  # a loader error other than the ImportError CuPy turns into available=False
        return f"NCCL cannot be loaded by CuPy ({type(exc).__name__}: {exc}): pip install 'nvidia-nccl-cu13'"
    if not getattr(nccl, "available", False):
        return "NCCL is not available to CuPy (libnccl.so.2 not found): pip install 'nvidia-nccl-cu13'"
    if len(devices) < 2:
        return f"an all-reduce over the devices of one process needs at least 2 devices (got {list(devices)})"
    if len(set(devices)) != len(devices):
        return f"the devices of an all-reduce must be distinct (got {list(devices)})"
    count = _rt.getDeviceCount()
    missing = [d for d in devices if not 0 <= d < count]
    if missing:
        return f"device(s) {missing} do not exist (this machine has {count})"
    return None


def library() -> str:
    """``NCCL x.y.z (cupy.cuda.nccl)``: ``ncclGetVersion``'s integer (2.9 on: major·10000 + minor·100 + patch)."""
    try:
        code = _nccl().get_version()
    except Exception as exc:  # no NCCL: allreduce_reason says why
        return f"NCCL through cupy.cuda.nccl (version unknown: {type(exc).__name__})"
    if code >= 10000:
        text = f"{code // 10000}.{code % 10000 // 100}.{code % 100}"
    else:
        text = f"{code // 1000}.{code % 1000 // 100}.{code % 100}"
    return f"NCCL {text} (cupy.cuda.nccl)"


def communicators(devices: tuple[int, ...]) -> list:
    """One NCCL communicator per device of ``devices`` (``ncclCommInitAll``), made once per tuple."""
    key = tuple(devices)
    if key not in _COMMUNICATORS:
        _COMMUNICATORS[key] = _nccl().NcclCommunicator.initAll(list(key))
    return _COMMUNICATORS[key]


def _count(devices: tuple[int, ...], sends: list, recvs: list) -> int:
    """The float32 elements of each buffer, after checking one send and one recv of that size per device."""
    reason = allreduce_reason(devices)
    if reason is not None:
        raise GpucalError(reason)
    if len(sends) != len(devices) or len(recvs) != len(devices):
        raise ValueError(f"all-reduce: one send and one recv buffer per device ({len(devices)}), "
                         f"got {len(sends)} and {len(recvs)}")
    count = sends[0].size
    for d, s, r in zip(devices, sends, recvs):
        for name, a in (("send", s), ("recv", r)):
            if a.dtype != cupy.float32 or a.size != count or not a.flags.c_contiguous:
                raise ValueError(f"all-reduce: the {name} buffer of device {d} must be {count} contiguous float32 "
                                 f"(got {a.size} {a.dtype})")
            if a.device.id != d:
                raise ValueError(f"all-reduce: the {name} buffer of device {d} is on device {a.device.id}")
    return count


def _issue(nccl, calls, count: int, stream_of: Callable[[int], int]) -> None:
    """One grouped all-reduce: each device's part on the stream ``stream_of(device)``."""
    nccl.groupStart()
    try:
        for device, comm, send, recv in calls:
            comm.allReduce(send, recv, count, nccl.NCCL_FLOAT32, nccl.NCCL_SUM, stream_of(device))
    finally:
        nccl.groupEnd()


def allreduce_launcher(devices: tuple[int, ...], sends: list, recvs: list) -> Callable[[], None]:
    """The sum of ``sends`` into every ``recvs[i]`` (module docstring: eager)."""
    devices = tuple(devices)
    count = _count(devices, sends, recvs)
    nccl, comms = _nccl(), communicators(devices)
    calls = tuple((d, c, s.data.ptr, r.data.ptr) for d, c, s, r in zip(devices, comms, sends, recvs))

    def launch(keep=(sends, recvs)):  # the buffers stay alive with the closure
        _issue(nccl, calls, count, lambda d: cupy.cuda.get_current_stream(d).ptr)
    return launch


def allreduce_graph_launcher(devices: tuple[int, ...], sends: list, recvs: list, count: int) -> Callable[[], None]:
    """``count`` all-reduces captured into one CUDA graph per device (module docstring: graphs)."""
    devices = tuple(devices)
    if count < 1:
        raise ValueError(f"all-reduce graph: count must be at least 1, got {count}")
    eager = allreduce_launcher(devices, sends, recvs)
    elements = sends[0].size
    eager()
    for d in devices:
        cupy.cuda.Device(d).synchronize()
    nccl, comms = _nccl(), communicators(devices)
    calls = tuple((d, c, s.data.ptr, r.data.ptr) for d, c, s, r in zip(devices, comms, sends, recvs))
    streams = {}
    for d in devices:
        with cupy.cuda.Device(d):
            streams[d] = cupy.cuda.Stream(non_blocking=True)
    capturing, graphs = [], []
    try:
        for d in devices:
            with cupy.cuda.Device(d):
                streams[d].begin_capture()
            capturing.append(d)
        for _ in range(count):
            _issue(nccl, calls, elements, lambda d: streams[d].ptr)
        while capturing:
            d = capturing.pop(0)
            with cupy.cuda.Device(d):
                graphs.append(streams[d].end_capture())
    except Exception as exc:
        for d in capturing:  # end the (invalidated) captures, so that the streams are usable again
            try:
                with cupy.cuda.Device(d):
                    streams[d].end_capture()
            except Exception:
                pass
        raise GpucalError(f"the all-reduce over devices {list(devices)} could not be captured into CUDA graphs "
                          f"({type(exc).__name__}: {exc})") from exc
    for d, graph in zip(devices, graphs):
        with cupy.cuda.Device(d):
            graph.upload(streams[d])
            streams[d].synchronize()
    pairs = tuple(zip(devices, graphs))

    def replay(keep=(sends, recvs, streams, comms)):  # buffers, streams and communicators stay alive
        for d, graph in pairs:
            with cupy.cuda.Device(d):
                graph.launch(stream=cupy.cuda.get_current_stream(d))
    return replay
