"""What another tool's output says of a machine, read into one shape before it becomes a profile
(``gpucal.calibrate.imports.build``): per ordered pair of devices the copy rates and latencies with P2P and
without, per device its host copies and its local copy, and the collectives timed over a size sweep.

Every figure is in SI units (B/s, s, bytes) and in gpucal's byte convention: a link's rate is n/t for n bytes
moved one way; a local copy's is given as DRAM traffic (2n/t: n read and n written). Each parser converts from
its tool's convention and says which it was (``Matrix.byte_convention``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from gpucal.errors import InputError

__all__ = ["Matrix", "CollectiveRun", "ToolRun", "CellError", "positive_number"]

Pair = tuple[int, int]
CELL_MAX = 1e12  # the largest figure a cell may hold, in the tool's unit (GB/s, us, ns)


class CellError(InputError):
    """A cell of a tool's table that holds no figure gpucal can take (the reader adds the file's name)."""


def positive_number(cell: str) -> float | None:
    """A table cell as a number; ``None`` for N/A, waived, or a figure of zero (a tool's diagonal). A figure that
    is not finite or beyond any physical one (1e12 of the tool's unit: GB/s, us) is refused."""
    try:
        value = float(cell)
    except ValueError:
        return None
    if not math.isfinite(value) or abs(value) > CELL_MAX:
        raise CellError(f"the figure {cell[:24]!r} is not a finite rate or time")
    return value if value > 0 else None


@dataclass(frozen=True)
class Matrix:
    """One of a tool's tables: a figure per ordered pair (src, dst), or per device as (d, d); None where the
    tool printed none (N/A, waived)."""

    values: dict[Pair, float | None]
    method: str  # how the tool measured it, in words (test name, buffer size, repeats)
    statistic: str  # median, mean, ...
    n: int  # the samples behind each figure (1: one timed window)
    byte_convention: str | None = None  # the tool's, and how it was converted

    def get(self, src: int, dst: int) -> float | None:
        value = self.values.get((src, dst))
        return value if value is not None and value > 0 else None


@dataclass(frozen=True)
class CollectiveRun:
    """One collective swept over sizes: per size (bytes, as nccl-tests counts them) the time, algbw and busbw."""

    op: str  # gpucal's name: all-reduce, all-gather, reduce-scatter, broadcast, send-recv
    nranks: int
    hosts: int | None
    ranks_per_host: int | None
    single_process: bool | None  # every rank a device of one process (nccl-tests -g N)
    graphs: bool
    library: str | None  # "NCCL 2.21.5"
    dtype: str | None
    sizes_bytes: tuple[int, ...]
    times_s: tuple[float, ...]
    algbw_Bps: tuple[float, ...]
    busbw_Bps: tuple[float, ...]
    wrong: tuple[int | None, ...]  # nccl-tests' #wrong per size (None: not checked)
    method: str  # the tool's test and how it timed each size


@dataclass
class ToolRun:
    """Everything one tool's output says (``tool``, ``version``; the file it came from is ``origin``)."""

    tool: str
    version: str | None
    origin: str
    devices: list[str] = field(default_factory=list)  # device names, in the tool's order
    can_access: dict[Pair, bool] = field(default_factory=dict)  # the runtime's word on peer access, where printed
    p2p_Bps: Matrix | None = None  # one way, P2P on (the peer's memory read or written directly)
    staged_Bps: Matrix | None = None  # one way, P2P off (the driver stages through host memory)
    p2p_bidir_Bps: Matrix | None = None  # per direction while the other runs, P2P on
    staged_bidir_Bps: Matrix | None = None
    p2p_latency_s: Matrix | None = None
    staged_latency_s: Matrix | None = None
    h2d_Bps: Matrix | None = None  # per device (d, d)
    d2h_Bps: Matrix | None = None
    local_dram_Bps: Matrix | None = None  # a device-local copy's DRAM traffic, 2n/t
    hostnames: list[str] = field(default_factory=list)
    collectives: list[CollectiveRun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sha256: str | None = None  # of the bytes parsed
    no_links: bool = False  # the tool ran no copy between devices: say nothing of their links

    @property
    def device_count(self) -> int:
        seen = {i for m in self.matrices for pair in m.values for i in pair}
        return max(len(self.devices), max(seen, default=-1) + 1,
                   max((c.nranks for c in self.collectives if c.single_process or c.hosts == 1), default=0))

    def named_matrices(self) -> dict[str, Matrix]:
        """Every matrix the run holds, by its field's name (``_Bps``: rates; ``_s``: times)."""
        names = ("p2p_Bps", "staged_Bps", "p2p_bidir_Bps", "staged_bidir_Bps", "p2p_latency_s", "staged_latency_s",
                 "h2d_Bps", "d2h_Bps", "local_dram_Bps")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    @property
    def matrices(self) -> list[Matrix]:
        return list(self.named_matrices().values())
