"""The one timing harness every probe uses.

It takes ``run_k(k) -> seconds``: the device time of ``k`` back-to-back iterations (CUDA events on a
GPU, the host clock on the simulator, a virtual clock in tests). It

1. warms up: at least ``warmup_runs`` single runs and ``warmup_s`` seconds (clocks ramp, modules load);
   past the single runs each warm-up call doubles its ``k``, so a short kernel warms up in a few calls;
2. picks ``k`` so that one sample lasts at least ``min_sample_s`` (launch gaps amortised), from the
   fastest warm-up call per iteration (a call slowed by other work on a shared machine only lengthens
   it); a sample that still lasts under half of ``min_sample_s`` (the warm-up was slowed throughout)
   raises ``k`` from what that sample took, and the samples start again;
3. samples until the coefficient of variation is under ``target_cv`` (with at least ``min_samples``)
   or the ``budget_s`` of host time runs out, or ``max_samples`` are taken; when it stopped for
   budget or count with the CV still above target, the result is ``noisy``.

Raw samples (seconds per iteration) are kept; median, p10, p90, min, max, mean, CV and n are derived.
``clock`` (the host clock for the budget) is injectable, so tests run on fake clocks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from collections.abc import Callable

import numpy as np

__all__ = ["Policy", "Timing", "measure", "POLICY_GPU", "POLICY_SIMULATOR", "TimingError"]


class TimingError(RuntimeError):
    """The clock returned something that is not a time (negative, NaN): no number can come of it."""


@dataclass(frozen=True)
class Policy:
    warmup_runs: int = 3
    warmup_s: float = 0.02
    min_sample_s: float = 0.001
    max_k: int = 1 << 16
    min_samples: int = 10
    max_samples: int = 200
    target_cv: float = 0.01
    budget_s: float = 2.0


POLICY_GPU = Policy()
# The simulator runs a kernel in Python threads: a handful of single runs, only to have a number.
POLICY_SIMULATOR = Policy(warmup_runs=1, warmup_s=0.0, min_sample_s=0.0, max_k=1, min_samples=3, max_samples=3,
                          target_cv=1.0, budget_s=60.0)


@dataclass(frozen=True)
class Timing:
    """Per-iteration seconds of each sample (each sample is ``k`` iterations), and how they were taken."""

    samples_s: tuple[float, ...]
    k: int
    warmup_runs: int
    clock: str
    noisy: bool
    target_cv: float

    def _q(self, q: float) -> float:
        return float(np.quantile(np.asarray(self.samples_s), q))

    @property
    def n(self) -> int:
        return len(self.samples_s)

    @property
    def median_s(self) -> float:
        return self._q(0.5)

    @property
    def p10_s(self) -> float:
        return self._q(0.1)

    @property
    def p90_s(self) -> float:
        return self._q(0.9)

    @property
    def min_s(self) -> float:
        return min(self.samples_s)

    @property
    def max_s(self) -> float:
        return max(self.samples_s)

    @property
    def mean_s(self) -> float:
        return float(np.mean(self.samples_s))

    @property
    def cv(self) -> float:
        return _cv(self.samples_s)

    def summary(self) -> dict:
        return {"statistic": "median", "median_s": self.median_s, "p10_s": self.p10_s, "p90_s": self.p90_s,
                "min_s": self.min_s, "max_s": self.max_s, "mean_s": self.mean_s, "cv": self.cv, "n": self.n,
                "k": self.k, "warmup_runs": self.warmup_runs, "clock": self.clock, "noisy": self.noisy,
                "target_cv": self.target_cv, "samples_s": list(self.samples_s)}


def _cv(samples) -> float:
    if len(samples) < 2:
        return math.inf
    a = np.asarray(samples, dtype=float)
    mean = a.mean()
    return float(a.std(ddof=1) / mean) if mean > 0 else math.inf


def _checked(seconds: float) -> float:
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise TimingError(f"the clock returned {seconds!r} s (events not recorded, or a simulator's -1)")
    return float(seconds)


def _k_for(per_iter_s: float, policy: Policy) -> int:
    """The power of 2 of iterations that makes a sample last at least ``min_sample_s`` (at most ``max_k``)."""
    if policy.min_sample_s <= 0 or per_iter_s >= policy.min_sample_s:
        return 1
    return int(min(policy.max_k, 2 ** math.ceil(math.log2(policy.min_sample_s / per_iter_s))))


def measure(run_k: Callable[[int], float], policy: Policy = POLICY_GPU, clock_name: str = "cuda-events",
            clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Warm up, choose k, sample adaptively; see the module docstring."""
    started = clock()
    warm, warm_time, k_warm, calls = 0, 0.0, 1, 0
    per_iter = math.inf
    while warm < policy.warmup_runs or warm_time < policy.warmup_s:
        seconds = _checked(run_k(k_warm))
        per_iter = min(per_iter, seconds / k_warm)
        warm_time += seconds
        warm += k_warm
        calls += 1
        if warm >= policy.warmup_runs:  # past the single runs: double k until the warm-up time is reached
            k_warm = min(2 * k_warm, policy.max_k)
        if calls >= 10 * max(policy.warmup_runs, 1) and clock() - started > policy.budget_s / 4:
            break
    k = _k_for(per_iter, policy)
    samples: list[float] = []
    while True:
        seconds = _checked(run_k(k))
        if seconds < policy.min_sample_s / 2 and k < policy.max_k and _k_for(seconds / k, policy) > k:
            k = _k_for(seconds / k, policy)  # the warm-up was slowed throughout: k was too small
            samples.clear()
            continue
        samples.append(seconds / k)
        n = len(samples)
        if n >= policy.min_samples and _cv(samples) <= policy.target_cv:
            noisy = False
            break
        if n >= policy.max_samples or (n >= min(policy.min_samples, 3) and clock() - started > policy.budget_s):
            noisy = _cv(samples) > policy.target_cv
            break
    return Timing(tuple(samples), k, warm, clock_name, noisy, policy.target_cv)
