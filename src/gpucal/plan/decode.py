"""What one decode step pays, term by term, from measured figures: the decode-GEMM curve, decode attention,
and the fixed cost of each kernel. Pure: numbers in, numbers out (the profile's ``devices[].decode`` holds
the figures; ``gpucal.profiles.queries`` reads them into these types).

- **Decode GEMM** (C (m×n) = A (m×k)·W (k×n), W the weights of one card's shard): for each measured m the
  time is affine in the weight bytes W = n·k·itemsize, ``t_m(W) = alpha_m + W/beta_m`` (at a fixed m both
  the memory-bound and the compute-bound time grow with W, since 2·m·n·k = 2·m·W/itemsize); between two
  measured m the time is interpolated linearly in log t against log m; below the smallest m it is that
  m's time, above the largest it grows in proportion to m (the compute-bound limit).
- **Decode attention**: ``t = alpha + KV/beta`` over the KV bytes one call reads,
  KV = 2·B·T·H_kv·D·itemsize (K and V of B sequences, T positions, H_kv KV heads of the card, D per head).
- **Fixed costs**: a kernel timed in a replayed CUDA graph already holds its node's cost (the decode-GEMM
  curve and the attention figures are measured that way where the backend has graphs). As a graph, a run of
  kernels costs ``sum(t_i)``. Eagerly, the host issues one kernel every ``eager_s`` and runs ahead of the GPU
  while a long kernel runs: kernel i starts at max(the end of kernel i−1, i·eager_s), so a step from an idle
  GPU ends with its last kernel (``step_time_s``), and a sequence repeated back to back (a layer after a layer)
  costs ``max(n·eager_s, sum(t_i))`` per repetition in the steady state (``repeated_time_s``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpucal.plan.spec import check_positive

__all__ = ["GemmRow", "GemmCurve", "AttentionFit", "LaunchCosts", "attention_kv_bytes", "step_time_s",
           "repeated_time_s", "kernel_time_s"]


@dataclass(frozen=True)
class GemmRow:
    """The decode GEMM at one m: ``t(W) = alpha_s + W/beta_Bps`` over the weight bytes W."""

    m: int
    alpha_s: float
    beta_Bps: float

    def __post_init__(self):
        if not (isinstance(self.m, int) and self.m >= 1):
            raise ValueError(f"m: must be a positive integer, got {self.m!r}")
        if not (isinstance(self.alpha_s, (int, float)) and math.isfinite(self.alpha_s)):
            raise ValueError(f"alpha_s: must be a finite number, got {self.alpha_s!r}")
        check_positive("beta_Bps", self.beta_Bps)

    def time_s(self, weight_bytes: float) -> float:
        return max(self.alpha_s + weight_bytes / self.beta_Bps, 1e-9)


@dataclass(frozen=True)
class GemmCurve:
    """The decode-GEMM curve of one dtype: one ``GemmRow`` per measured m (sorted, distinct)."""

    dtype: str
    rows: tuple[GemmRow, ...]

    def __post_init__(self):
        if not self.rows:
            raise ValueError("rows: a decode-GEMM curve needs at least one measured m")
        ms = [r.m for r in self.rows]
        if ms != sorted(set(ms)):
            raise ValueError(f"rows: the m of the rows must be distinct and increasing, got {ms}")

    def time_s(self, m: int, weight_bytes: float) -> float:
        """The time of the GEMM at batch ``m`` over ``weight_bytes`` of weights (module docstring)."""
        if m < 1:
            raise ValueError(f"m: must be at least 1, got {m!r}")
        rows = self.rows
        if m <= rows[0].m:
            return rows[0].time_s(weight_bytes)
        if m >= rows[-1].m:
            return rows[-1].time_s(weight_bytes) * m / rows[-1].m
        hi = next(i for i, r in enumerate(rows) if r.m >= m)
        a, b = rows[hi - 1], rows[hi]
        ta, tb = a.time_s(weight_bytes), b.time_s(weight_bytes)
        f = (math.log(m) - math.log(a.m)) / (math.log(b.m) - math.log(a.m))
        return math.exp(math.log(ta) + f * (math.log(tb) - math.log(ta)))

    def weight_Bps(self, m: int, weight_bytes: float) -> float:
        """The weight bytes per second the GEMM achieves at ``m``: W/t."""
        return weight_bytes / self.time_s(m, weight_bytes)


@dataclass(frozen=True)
class AttentionFit:
    """Decode attention: ``t = alpha_s + KV/beta_Bps`` over the KV bytes one call reads."""

    alpha_s: float
    beta_Bps: float

    def __post_init__(self):
        if not (isinstance(self.alpha_s, (int, float)) and math.isfinite(self.alpha_s)):
            raise ValueError(f"alpha_s: must be a finite number, got {self.alpha_s!r}")
        check_positive("beta_Bps", self.beta_Bps)

    def time_s(self, kv_bytes: float) -> float:
        return max(self.alpha_s + kv_bytes / self.beta_Bps, 1e-9)


def attention_kv_bytes(batch: int, context: int, kv_heads: int, head_dim: int, itemsize: int) -> int:
    """KV bytes one decode-attention call reads: K and V of ``batch`` sequences over ``context`` positions,
    ``kv_heads`` heads of ``head_dim`` values of ``itemsize`` bytes."""
    return 2 * batch * context * kv_heads * head_dim * itemsize


@dataclass(frozen=True)
class LaunchCosts:
    """The fixed costs of the host: ``eager_s`` between kernels launched back to back, ``graph_node_s`` per
    node of a replayed CUDA graph, ``sync_s`` for a small kernel launched and waited for (per step)."""

    eager_s: float
    graph_node_s: float
    sync_s: float

    def __post_init__(self):
        for name in ("eager_s", "graph_node_s", "sync_s"):
            check_positive(name, getattr(self, name))


def kernel_time_s(graph_s: float, launch: LaunchCosts, graph: bool) -> float:
    """One kernel of ``graph_s`` (its time as a node of a replayed graph) launched again and again, in a graph
    or eagerly (then at least the host's launch interval): ``repeated_time_s`` of one kernel."""
    return repeated_time_s([graph_s], launch, graph)


def step_time_s(kernel_times_s, launch: LaunchCosts, graph: bool) -> float:
    """A sequence of kernels (each its time as a graph node) run once from an idle GPU: their sum as a graph;
    eagerly, the host issues kernel i at i·eager_s and kernel i starts at max(the end of kernel i−1, its
    issue), so the step ends with the last kernel's end."""
    times = [float(t) for t in kernel_times_s]
    if graph:
        return float(sum(times))
    end = 0.0
    for i, t in enumerate(times, start=1):
        end = max(end, i * launch.eager_s) + t
    return end


def repeated_time_s(kernel_times_s, launch: LaunchCosts, graph: bool) -> float:
    """A sequence of kernels repeated back to back, per repetition in the steady state: their sum as a graph;
    eagerly ``max(n·eager_s, sum(t_i))`` (the host runs ahead of the GPU, so either the host's issuing or the
    GPU's work is the bound)."""
    times = [float(t) for t in kernel_times_s]
    if graph:
        return float(sum(times))
    return max(len(times) * launch.eager_s, float(sum(times)))
