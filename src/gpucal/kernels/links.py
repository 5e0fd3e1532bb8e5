"""What the link probes ask of a backend: buffers in host or device memory, copies between them, and
three clocks.

A copy is a ``CopyOp``: ``nbytes`` from ``src`` to ``dst`` along a named path, by an engine:

| path            | from → to                   | engines                                   |
|-----------------|-----------------------------|-------------------------------------------|
| ``h2d``         | host → device               | ``ce`` (copy engine), ``sm`` (kernel reading mapped pinned memory) |
| ``d2h``         | device → host               | ``ce``, ``sm`` (kernel writing mapped pinned memory) |
| ``d2d``         | device → the same device    | ``ce``, ``sm`` (copy kernel)              |
| ``p2p``         | device → another, peer access enabled | ``ce`` (``memcpyPeerAsync``), ``sm-read`` (a kernel on the destination reads the peer), ``sm-write`` (a kernel on the source writes the peer) |
| ``driver-staged`` | device → another, peer access not enabled | ``ce``: the driver stages ``memcpyPeerAsync`` through host memory |
| ``host-staged`` | device → another            | ``staged``: D2H into pinned memory then H2D, chunked and double-buffered on two streams |

Host memory is ``pinned`` (page-locked, allocated NUMA-local to the device it serves) or ``pageable``
(ordinary memory); the ``sm`` engines need pinned memory (mapped into the device's address space).

The clocks (each returns the total seconds of ``k`` copies; the timing harness divides by ``k``):
- ``time_ops(ops, k)``: blocked start (all copies queued behind a spin kernel, released at once), each
  op ``k`` times back to back on its own stream; device time per op, from the common start to its end
  (``max_gated_k(ops)``: the largest ``k`` the gate holds);
- ``time_back_to_back(op, k)``: ``k`` copies issued as a program would, timed with events, no gate;
- ``time_oneshot(op, k)``: ``k`` times (issue one copy, wait for it) on the host clock;
- ``time_enqueue(op, k)``: the host time of issuing ``k`` copies alone (they complete outside it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Buffer", "CopyOp", "PATHS", "ENGINES", "HOST_MEMORY", "PEER_PATHS", "check_op"]

HOST_MEMORY = ("pinned", "pageable")
PATHS = ("h2d", "d2h", "d2d", "p2p", "driver-staged", "host-staged")
PEER_PATHS = ("p2p", "driver-staged", "host-staged")
ENGINES = {
    "h2d": ("ce", "sm"),
    "d2h": ("ce", "sm"),
    "d2d": ("ce", "sm"),
    "p2p": ("ce", "sm-read", "sm-write"),
    "driver-staged": ("ce",),
    "host-staged": ("staged",),
}
STAGING_CHUNK_BYTES = 4 << 20  # explicit host staging: chunk size of the double-buffered pipeline


@dataclass(eq=False)
class Buffer:
    """``nbytes`` of memory: ``kind`` is ``device``, ``pinned`` or ``pageable``; ``device`` is the device
    that holds it (device memory) or that it was allocated for (host memory, NUMA-local to it);
    ``handle`` is the backend's own object; ``numa_node`` the NUMA node of host memory's pages where known,
    and ``numa_how`` how it was found."""

    kind: str
    device: int
    nbytes: int
    handle: object
    numa_node: int | None = None
    numa_how: str | None = None

    @property
    def on_host(self) -> bool:
        return self.kind != "device"


@dataclass(eq=False)
class CopyOp:
    """One copy of ``nbytes`` from ``src`` to ``dst`` along ``path`` by ``engine``; ``device`` is the
    device whose stream issues it. ``state`` holds what the backend prepared (streams, kernels)."""

    path: str
    engine: str
    src: Buffer
    dst: Buffer
    nbytes: int
    device: int
    state: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        memory = next((b.kind for b in (self.src, self.dst) if b.on_host), None)
        where = f"dev{self.src.device}" if self.path in ("h2d", "d2h", "d2d") else \
            f"dev{self.src.device}->dev{self.dst.device}"
        engine = None if self.engine == "staged" else self.engine  # host-staged has one engine
        return "-".join(x for x in (self.path, engine, memory, where) if x)


def check_op(path: str, engine: str, src: Buffer, dst: Buffer, nbytes: int) -> None:
    """Refuse (``ValueError``) a copy whose path, engine and buffers do not fit together."""
    if path not in ENGINES:
        raise ValueError(f"unknown copy path {path!r} (known: {', '.join(PATHS)})")
    if engine not in ENGINES[path]:
        raise ValueError(f"path {path} has no engine {engine!r} (it has {', '.join(ENGINES[path])})")
    if nbytes < 1 or nbytes > min(src.nbytes, dst.nbytes):
        raise ValueError(f"copy of {nbytes} B does not fit buffers of {src.nbytes} and {dst.nbytes} B")
    want = {"h2d": (True, False), "d2h": (False, True)}.get(path, (False, False))
    if (src.on_host, dst.on_host) != want:
        raise ValueError(f"path {path} copies {'host' if want[0] else 'device'} to "
                         f"{'host' if want[1] else 'device'} memory")
    if engine == "sm" and any(b.kind == "pageable" for b in (src, dst)):
        raise ValueError("a kernel can reach pinned (mapped) host memory only, not pageable memory")
    if path == "d2d" and src.device != dst.device:
        raise ValueError("d2d copies within one device; use p2p or a staged path between devices")
    if path in PEER_PATHS and src.device == dst.device:
        raise ValueError(f"path {path} copies between two devices")
