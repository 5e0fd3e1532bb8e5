"""Inverse questions: the largest batch for a tokens/s target, the link bandwidth a target needs, and
how many NICs of a given speed that is (the article's title question: "How many NICs are needed for
70B inference?").

Each solver takes ``latency(batch=..., beta_Bps=...)``-style callables built on ``step.evaluate``, so
they hold for every strategy and comm model the planner knows. A target counts as met within a
relative 1e-9 (the article's batch 60 meets 5 tokens/s exactly: 0.2 s per token).
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = ["TARGET_RTOL", "max_batch_for_target", "required_beta_for_target", "nics_needed"]

TARGET_RTOL = 1e-9


def _meets(tokens_per_s: float, target: float) -> bool:
    return tokens_per_s >= target * (1.0 - TARGET_RTOL)


def max_batch_for_target(tokens_per_s_at: Callable[[int], float], target_tokens_per_s: float,
                         batch_limit: int = 1 << 24) -> int | None:
    """The largest batch B <= ``batch_limit`` whose per-sequence tokens/s still meets the target.

    ``tokens_per_s_at(B)`` must not increase with B (true of every step: a larger batch never makes a
    step shorter). Returns None when even B = 1 misses the target. Article case 19: 8 x 4090 in a
    pipeline over 1 Gbit/s Ethernet at 5 tokens/s gives 57 (60 with its rounded inputs).
    """
    if not (target_tokens_per_s > 0 and math.isfinite(target_tokens_per_s)):
        raise ValueError(f"target_tokens_per_s: must be a positive number, got {target_tokens_per_s!r}")
    if not _meets(tokens_per_s_at(1), target_tokens_per_s):
        return None
    low, high = 1, batch_limit
    if _meets(tokens_per_s_at(high), target_tokens_per_s):
        return high
    while high - low > 1:  # invariant: low meets the target, high does not
        mid = (low + high) // 2
        if _meets(tokens_per_s_at(mid), target_tokens_per_s):
            low = mid
        else:
            high = mid
    return low


def required_beta_for_target(latency_at_beta: Callable[[float], float], target_tokens_per_s: float,
                             probe_beta_Bps: float) -> float | None:
    """The bandwidth (B/s) a link needs so that a token takes at most ``1/target`` seconds.

    The token latency is affine in 1/beta: ``t(beta) = t_inf + X/beta`` with ``t_inf`` the latency of
    an infinitely fast link (compute and alpha terms) and X the bytes serialized on it. Two
    evaluations give both, so ``beta = X / (1/target - t_inf)``. Returns None when even an infinite
    bandwidth misses the target, 0.0 when the link carries nothing.
    """
    if not (target_tokens_per_s > 0 and math.isfinite(target_tokens_per_s)):
        raise ValueError(f"target_tokens_per_s: must be a positive number, got {target_tokens_per_s!r}")
    t_inf = latency_at_beta(math.inf)
    serialized_bytes = (latency_at_beta(probe_beta_Bps) - t_inf) * probe_beta_Bps
    budget_s = 1.0 / target_tokens_per_s - t_inf
    if serialized_bytes <= 0:
        return 0.0 if budget_s >= 0 else None
    if budget_s <= 0:
        return None
    return serialized_bytes / budget_s


def nics_needed(required_Bps: float | None, nic_Bps: float) -> int | None:
    """How many NICs of ``nic_Bps`` each carry ``required_Bps`` together (bandwidth adds, alpha does
    not change); None when no bandwidth is enough."""
    if required_Bps is None:
        return None
    if nic_Bps <= 0:
        raise ValueError(f"nic_Bps: must be positive, got {nic_Bps!r}")
    return max(1, math.ceil(required_Bps / nic_Bps * (1.0 - TARGET_RTOL)))
