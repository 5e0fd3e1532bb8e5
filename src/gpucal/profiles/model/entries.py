"""The measured entries of a calibrated profile: links between devices, copy series, timed kernels, the
network between hosts and collective operations."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from gpucal import limits
from gpucal.profiles.model.base import Omittable, Point, Printable, Strict, Text, integer, number
from gpucal.profiles.model.device import DeviceIndex
from gpucal.profiles.model.fit import FitRecord, Intercept, MeasuredFit
from gpucal.profiles.model.quantity import SAMPLES_MAX, TimeQuantity

__all__ = ["P2P", "Bidirectional", "LinkEntry", "CopyFit", "KernelEntry", "NetworkEntry", "CollectiveEntry"]

_RATE = limits.RANGES["rate"]
_BYTES_MAX = limits.RANGES["bytes"][1]
_TIME_MAX = limits.RANGES["time"][1]
Rate0 = number(0, _RATE[1])  # a rate that may be zero (nothing moved)
Samples = integer(1, SAMPLES_MAX)
Measured = Literal["measured", "simulated"]


class P2P(Strict):
    """What the runtime says of peer access between two devices, and whether a P2P copy verified."""

    supported: Optional[bool] = None
    enabled: Optional[bool] = None
    verified: Optional[bool] = None


class Bidirectional(Strict):
    """Both directions of a link at once: the sum of the two rates and the rate of their union."""

    bytes: Omittable[integer(1, int(_BYTES_MAX))] = None
    sum_Bps: Omittable[Rate0] = None
    union_Bps: Omittable[Rate0] = None
    statistic: Omittable[Literal["median"]] = None
    n: Omittable[Samples] = None
    series: Omittable[Text] = None
    byte_convention: Omittable[Text] = None


class LinkEntry(MeasuredFit):
    """The measured link from device src to device dst: the path the runtime will use (per the P2P verdict),
    its alpha (one transfer issued and waited for) and beta (the sweep's fit), and the evidence."""

    src: DeviceIndex
    dst: DeviceIndex
    path: Literal["nvlink", "p2p-pcie", "host-staged"]
    verdict: Literal["nvlink", "p2p-pcie", "host-staged", "p2p-slower-than-staged", "p2p-corrupt"]
    flags: Omittable[list[Literal["downtrained"]]] = None
    series: Omittable[Text] = None
    p2p: Omittable[P2P] = None
    alpha_pipelined_s: Omittable[TimeQuantity] = None
    bidirectional: Optional[Bidirectional] = None
    reasons: Omittable[list[Text]] = None
    host: Omittable[integer(0, limits.MAX_DEVICES - 1, description=(
        "a cluster profile: the host both devices are on"))] = None


class CopyFit(FitRecord):
    """One copy series swept over sizes (path, engine, memory, endpoints) and its fit t = alpha + n/beta."""

    series: Text
    path: Literal["h2d", "d2h", "d2d", "p2p", "driver-staged", "host-staged"]
    engine: Omittable[Text] = None
    memory: Optional[Printable] = None
    src: DeviceIndex
    dst: DeviceIndex
    source: Omittable[Measured] = None
    alpha_s: Optional[Intercept] = None
    beta_Bps: Optional[number(*_RATE)] = None
    oneshot_alpha_s: Optional[Intercept] = None
    n: Omittable[integer(0, SAMPLES_MAX)] = None
    verified: bool
    reason: Optional[Printable] = None
    points: list[Point]  # the sweep a copy fit was made from: always written, even empty


class KernelEntry(Strict):
    """One timed kernel case (a roofline point): its declared work and median time."""

    device: DeviceIndex
    kind: Literal["stream", "gemv", "gemm"]
    case: Text
    dtype: Optional[Printable] = None
    bytes: number(0, _BYTES_MAX)
    flop: number(0, limits.RANGES["flops"][1] * _TIME_MAX)
    median_s: number(None, _TIME_MAX, above=0)
    n: Omittable[Samples] = None
    source: Omittable[Measured] = None


class NetworkEntry(MeasuredFit):
    """A measured link between two MPI ranks (hosts): MPI ping-pong over 8 B - 64 MiB, alpha/beta fitted to
    t = half the round trip; same_host when MPI puts both ranks on one host (shared memory, not the network)."""

    src_rank: DeviceIndex
    dst_rank: DeviceIndex
    src_host: DeviceIndex
    dst_host: DeviceIndex
    src_hostname: Omittable[Text] = None
    dst_hostname: Omittable[Text] = None
    same_host: bool
    transport: Optional[Printable] = None
    latency_s: Omittable[TimeQuantity] = None
    verified: Optional[bool] = None
    reason: Optional[Printable] = None


class CollectiveEntry(MeasuredFit):
    """A collective operation over nranks ranks (one per GPU): time against size S (nccl-tests' size of the
    op), alpha/beta fitted to t = alpha + S/beta, algbw = S/t and busbw = algbw x busbw_factor per point."""

    op: Literal["all-reduce", "all-gather", "reduce-scatter", "broadcast", "send-recv"]
    nranks: integer(1, limits.MAX_DEVICES)
    hosts: Omittable[integer(1, limits.MAX_DEVICES)] = None
    ranks_per_host: Omittable[integer(1, limits.MAX_DEVICES)] = None
    graphs: Omittable[bool] = None
    library: Optional[Printable] = None
    transport: Optional[list[Printable]] = None
    transport_reason: Optional[Printable] = None
    dtype: Omittable[Printable] = None
    busbw_factor: Omittable[number(0, 2)] = None
    algbw_Bps: Omittable[list[Rate0]] = None
    busbw_Bps: Omittable[list[Rate0]] = None
    verified: Optional[bool] = None
    reason: Optional[Printable] = None
    host: Omittable[integer(0, limits.MAX_DEVICES - 1, description=(
        "measured over the ranks of this host alone (cluster.hosts index); absent: over every rank"))] = Field(None)
    single_process: Omittable[bool] = Field(None, description=(
        "measured by one process over devices of its host (NCCL communicators of one process, as a server's TP "
        "group), not by one MPI rank per GPU"))
    devices: Omittable[list[DeviceIndex]] = Field(None, description="the devices of a single-process group")

    @property
    def span_hosts(self) -> int:
        """The hosts the op spans (``hosts``, 1 when absent)."""
        return 1 if self.hosts is None else self.hosts
