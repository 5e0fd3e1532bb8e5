"""What the decode probes share (``decode_gemm``, ``attention``, ``launch``, ``decode_layer``): how a case is
timed, as a server runs decode (each operation as a node of a replayed CUDA graph where the backend has
graphs, else launched back to back), poisoning an output in place, and the check of a decode GEMM.

A server reads each layer's weights and KV cache once per step, with every other layer's in between, so they
come from DRAM. An operation timed again and again on the same buffers would read them from the L2 once they
fit in it; so the operations that stream weights or KV are timed over ``l2_copies`` identical copies of their
input in turn (enough that together they hold 4 × the L2, at most ``GRAPH_COPIES``), each a node of the graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gpucal.kernels.base import Backend, decode_gemm_mode
from gpucal.kernels.dtypes import POISON, to_float64
from gpucal.kernels.reference import GEMM_MODES, Check, check_close, gemm_reference, gemm_tolerance

__all__ = ["GRAPH_COPIES", "Timed", "timed_launch", "poison", "check_decode_gemm", "weights64", "timing_note",
           "l2_copies"]

GRAPH_COPIES = 16  # copies of an operation in the graph that times it: the graph's own launch is amortised


@dataclass(frozen=True)
class Timed:
    """A launcher to time, how many operations one call of it does, and how it runs (``graph`` or ``eager``)."""

    launch: Callable[[], None]
    ops_per_call: int
    how: str


def l2_copies(backend: Backend, nbytes: int) -> int:
    """How many copies of an input of ``nbytes`` to time over, in turn, so that together they hold 4 × the
    device's L2 (1 where the device reports no L2: the simulator, a virtual machine); at most ``GRAPH_COPIES``."""
    l2 = backend.device().l2_bytes
    if not l2 or nbytes <= 0:
        return 1
    return int(min(GRAPH_COPIES, max(1, math.ceil(4 * l2 / nbytes))))


def timing_note(timed: Timed) -> str:
    """How a case was timed, for its ``library`` text."""
    if timed.how == "graph":
        return f"each operation a node of a replayed CUDA graph of {timed.ops_per_call}"
    return "launched back to back" + (f", {timed.ops_per_call} in turn" if timed.ops_per_call > 1 else "")


def timed_launch(backend: Backend, launches: Sequence[Callable[[], None]], graph: bool = True) -> Timed:
    """``launches`` (one operation over each copy of its input, ``l2_copies``) as a decode step runs them:
    repeated in turn to at least ``GRAPH_COPIES`` nodes of one CUDA graph where the backend has graphs (and
    ``graph``), else launched back to back in turn."""
    launches = list(launches)
    if graph and backend.graph_reason() is None:
        nodes = launches * -(-GRAPH_COPIES // len(launches))
        return Timed(backend.graph_launcher(nodes), len(nodes), "graph")
    if len(launches) == 1:
        return Timed(launches[0], 1, "eager")
    return Timed(backend.sequence_launcher(launches), len(launches), "eager")


def poison(backend: Backend, array, dtype: str) -> None:
    """Fill ``array`` (a device array) with the dtype's poison, in place: an element the kernel does not write
    fails its check (the array keeps its address, so a captured graph still writes it)."""
    backend.fill(array, POISON[dtype])


def weights64(backend: Backend, w, dtype: str):
    """(W, |W|) in float64, for checking several GEMMs against the same weights (``check_decode_gemm``)."""
    w64 = to_float64(backend.to_xp(w), dtype, backend.xp)
    return w64, backend.xp.abs(w64)


def check_decode_gemm(backend: Backend, a, w, c, dtype: str, w64=None) -> Check:
    """C = A·W against the float64 reference with the mode's tolerance (fp32 accumulation); ``w64``: W and |W|
    in float64 where the caller holds them (``weights64``)."""
    xp = backend.xp
    mode = GEMM_MODES[decode_gemm_mode(dtype)]
    if w64 is None:
        ref, abs_product = gemm_reference(backend.to_xp(a), backend.to_xp(w), dtype, xp)
    else:
        a64 = to_float64(backend.to_xp(a), dtype, xp)
        ref, abs_product = a64 @ w64[0], xp.abs(a64) @ w64[1]
    tol = gemm_tolerance(mode, int(a.shape[1]), abs_product, ref, xp)
    return check_close(to_float64(backend.to_xp(c), dtype, xp), ref, tol,
                       "float64 reference, (8·eps_acc·sqrt(k))·|A||W| + eps_out·|C|", xp)

