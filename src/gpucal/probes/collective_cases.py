"""What the collectives probe and its engines share: the ops, nccl-tests' size and byte conventions, the
decode sizes, the run's config, each rank's seeded input and the exact check of an output, and the case an
engine runs (``probes/collectives.py`` runs them; ``probes/collective_nccl.py`` and
``probes/collective_virtual.py`` move the bytes).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from gpucal.kernels.comm import SimulatedNet
from gpucal.kernels.reference import Check
from gpucal.plan.equations import COLLECTIVE_OPS, busbw_factor

__all__ = ["OPS", "BUSBW_FACTOR", "DECODE_BATCHES", "VALUE_BYTES", "DEFAULT_BUDGET_S", "GRAPH_MAX_K",
           "VIRTUAL_LIBRARY", "SIZE_CONVENTION", "byte_convention", "decode_sizes", "op_size_bytes",
           "CollectivesConfig", "CollectiveCase", "rank_input", "case_arrays", "CHECK_METHOD", "compare"]

OPS = COLLECTIVE_OPS
DECODE_BATCHES = tuple(2 ** i for i in range(11))  # B = 1 … 1024
VALUE_BYTES = 4  # float32
DEFAULT_BUDGET_S = 0.2
GRAPH_MAX_K = 1024  # ops captured in one graph at most
VIRTUAL_LIBRARY = "virtual ring (simulated)"
SIZE_CONVENTION = {"all-reduce": "the buffer", "all-gather": "the total output (N x the per-rank input)",
                   "reduce-scatter": "the total input (N x the per-rank output)", "broadcast": "the buffer",
                   "send-recv": "the bytes each rank sends to (rank+1)%N"}
_FACTOR_TEXT = {"all-reduce": "2(N-1)/N", "all-gather": "(N-1)/N", "reduce-scatter": "(N-1)/N", "broadcast": "1",
                "send-recv": "1"}


def BUSBW_FACTOR(op: str, n: int) -> float:  # noqa: N802 - a table, named as nccl-tests names it
    """nccl-tests' bus-bandwidth factor of ``op`` on ``n`` ranks: busbw = algbw × factor (``busbw_factor`` of
    the planner's equations, the ring model's own)."""
    return busbw_factor(op, n)


def byte_convention(op: str, n: int) -> str:
    """The byte convention of ``op``'s rates on ``n`` ranks, in words."""
    factor = _FACTOR_TEXT[op] if op in ("broadcast", "send-recv") else f"{_FACTOR_TEXT[op]} = {BUSBW_FACTOR(op, n):.4g} for N = {n}"
    return f"algbw = S/t, busbw = algbw x factor (nccl-tests): factor {factor}; S = {SIZE_CONVENTION[op]}"


def decode_sizes(hidden: int, batches: Iterable[int] = DECODE_BATCHES, bytes_per_value: int = 2) -> tuple[int, ...]:
    """The activation sizes of decode, S = B·hidden·bytes_per_value bytes, one per batch B."""
    return tuple(int(b) * int(hidden) * int(bytes_per_value) for b in batches)


def op_size_bytes(op: str, size_bytes: int, nranks: int) -> int:
    """``size_bytes`` rounded down to what ``op`` needs (a float32 count, split evenly over the ranks for
    all-gather and reduce-scatter), and at least one such unit."""
    unit = VALUE_BYTES * (nranks if op in ("all-gather", "reduce-scatter") else 1)
    return max(unit, int(size_bytes) // unit * unit)


@dataclass(frozen=True)
class CollectivesConfig:
    """What to run: ``ops``, the decode range's ``hidden`` size or explicit ``sizes`` (bytes, before the
    per-op rounding), ``budget_s`` of sampling per size (default 0.2 s), CUDA ``graphs`` too, the input
    ``seed``, a ``simulate``d net (virtual backends only) and the ``backend`` (auto, cupy, virtual:...)."""

    ops: tuple[str, ...] = OPS
    hidden: int = 8192
    sizes: tuple[int, ...] | None = None
    budget_s: float | None = None
    graphs: bool = False
    seed: int = 0
    simulate: SimulatedNet | None = None
    backend: str = "auto"

    def size_list(self, op: str, nranks: int) -> tuple[int, ...]:
        raw = self.sizes if self.sizes is not None else decode_sizes(self.hidden)
        return tuple(sorted({op_size_bytes(op, s, nranks) for s in raw}))


def rank_input(seed: int, op: str, size_bytes: int, rank: int, count: int) -> np.ndarray:
    """Rank ``rank``'s input: ``count`` float32 small integers (0…7), the same wherever it is regenerated."""
    rng = np.random.default_rng([seed, OPS.index(op), size_bytes, rank])
    return rng.integers(0, 8, count, dtype=np.int8).astype(np.float32)


def case_arrays(op: str, size_bytes: int, rank: int, n: int, seed: int) -> tuple[np.ndarray, int, np.ndarray]:
    """(this rank's input, the output's float32 count, the expected output) of ``op`` at S = ``size_bytes``."""
    count = size_bytes // VALUE_BYTES
    per_rank = count // n if op in ("all-gather", "reduce-scatter") else count
    if op == "all-reduce":
        inputs = [rank_input(seed, op, size_bytes, r, count) for r in range(n)]
        return inputs[rank], count, np.sum(inputs, axis=0, dtype=np.float32)
    if op == "all-gather":
        inputs = [rank_input(seed, op, size_bytes, r, per_rank) for r in range(n)]
        return inputs[rank], count, np.concatenate(inputs)
    if op == "reduce-scatter":
        inputs = [rank_input(seed, op, size_bytes, r, count) for r in range(n)]
        total = np.sum(inputs, axis=0, dtype=np.float32)
        return inputs[rank], per_rank, total[rank * per_rank:(rank + 1) * per_rank]
    if op == "broadcast":
        mine = rank_input(seed, op, size_bytes, rank, count)
        return mine, count, mine if rank == 0 else rank_input(seed, op, size_bytes, 0, count)
    return (rank_input(seed, op, size_bytes, rank, count), count,
            rank_input(seed, op, size_bytes, (rank - 1) % n, count))


CHECK_METHOD = "exact comparison with the NumPy expectation on every rank (float32 sums of small integers are exact)"


def compare(got: np.ndarray, expected: np.ndarray) -> Check:
    """An exact comparison; the first differing element names index, got and expected."""
    if got.shape != expected.shape:
        return Check(False, CHECK_METHOD, int(expected.size), None, None, None, None, 0.0)
    bad = np.flatnonzero(got != expected)
    if bad.size == 0:
        return Check(True, CHECK_METHOD, int(expected.size), 0.0, tolerance=0.0)
    i = int(bad[0])
    err = float(np.nanmax(np.abs(got[bad] - expected[bad]))) if np.isfinite(got[bad]).any() else None
    return Check(False, CHECK_METHOD, int(expected.size), err, (i,), float(got[i]), float(expected[i]), 0.0)


@dataclass
class CollectiveCase:
    """One case of the collectives probe: ``op`` at S = ``size_bytes`` (in a CUDA ``graph`` or not), the output
    every rank expects, and what its engine holds for it (``state``)."""

    op: str
    size_bytes: int
    graph: bool
    expected: np.ndarray
    state: dict = field(default_factory=dict)
