"""The alpha-beta fit of a transfer's time against its size.

Model: moving ``n`` bytes takes ``t(n) = alpha + n / beta`` seconds, where ``alpha`` (s) is the fixed
latency and ``beta`` (B/s) the bandwidth. The model is linear in ``alpha`` and ``g = 1 / beta``.

Weighting: a sweep spans sizes from a few bytes to hundreds of MiB, so its times span several decades.
An unweighted fit would be decided by the largest sizes alone and would leave the small-size times (the
ones that fix ``alpha``) badly off. The fit therefore minimises the sum of squared *relative* errors,

    sum_i ((alpha + n_i * g - t_i) / t_i) ** 2,

i.e. ordinary least squares on the rows ``[1 / t_i, n_i / t_i] . [alpha, g] = 1`` (weights ``1 / t_i**2``),
solved with ``numpy.linalg.lstsq`` after scaling both columns to unit norm. ``beta = 1 / g``.

Goodness of fit, ``r2 = 1 - SS_res / SS_tot``, is taken in the same weighted sense: ``SS_res`` is the sum
of squared relative residuals and ``SS_tot = sum_i ((t_i - t_w) / t_i) ** 2``, with ``t_w`` the weighted
mean ``sum(1 / t_i) / sum(1 / t_i**2)`` (the best constant time in that sense). A constant is a special
case of the model, so ``0 <= r2 <= 1``.

``alpha`` is kept as fitted: on noisy data it can come out slightly negative. A fit whose ``g`` is not
positive (the times do not grow with size) is refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gpucal.errors import InputError

__all__ = ["FitError", "AlphaBetaFit", "fit_alpha_beta"]

METHOD = "least squares of t = alpha + n/beta, weighted by 1/t (relative error)"

# Below this relative growth over the sweep, the slope is rounding noise, not a bandwidth.
_MIN_GROWTH_FRAC = 1e-12
# A sum of squared relative deviations at or below this (per point) is zero up to rounding.
_ZERO_SS_PER_POINT = (64 * np.finfo(float).eps) ** 2


class FitError(InputError):
    """Points that the alpha-beta fit cannot use, or that give no positive bandwidth (exit code 2)."""


@dataclass(frozen=True)
class AlphaBetaFit:
    """A fitted ``t(n) = alpha_s + n / beta_Bps`` with the points it came from and its residuals."""

    alpha_s: float
    beta_Bps: float
    r2: float
    residuals_frac: tuple[float, ...]
    n: int
    sizes_bytes: tuple[float, ...]
    times_s: tuple[float, ...]

    def predict_s(self, n_bytes: float) -> float:
        """The fitted time in seconds to move ``n_bytes`` bytes: ``alpha_s + n_bytes / beta_Bps``."""
        return self.alpha_s + float(n_bytes) / self.beta_Bps

    @property
    def max_abs_residual_frac(self) -> float:
        """The largest ``|t_fit - t| / t`` over the points."""
        return max(abs(r) for r in self.residuals_frac)

    def to_dict(self) -> dict:
        """The fit as plain JSON-ready values (floats, ints, lists, strings)."""
        return {
            "alpha_s": self.alpha_s,
            "beta_Bps": self.beta_Bps,
            "r2": self.r2,
            "n": self.n,
            "max_abs_residual_frac": self.max_abs_residual_frac,
            "residuals_frac": list(self.residuals_frac),
            "points": [[size, time] for size, time in zip(self.sizes_bytes, self.times_s, strict=True)],
            "method": METHOD,
        }


def _as_vector(values, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise FitError(f"{name}: not a list of numbers ({exc})") from None
    if arr.ndim != 1:
        raise FitError(f"{name}: expected a flat list of numbers, got an array of shape {arr.shape}")
    return arr


def _weighted_r2(residuals_frac: np.ndarray, times_s: np.ndarray) -> float:
    """``1 - SS_res / SS_tot`` on relative residuals; ``SS_tot`` about the ``1/t**2``-weighted mean time."""
    ss_res = float(np.sum(residuals_frac**2))
    inv_t = 1.0 / times_s
    mean_s = float(np.sum(inv_t) / np.sum(inv_t**2))
    ss_tot = float(np.sum(((times_s - mean_s) * inv_t) ** 2))
    zero_ss = len(times_s) * _ZERO_SS_PER_POINT
    if ss_tot <= zero_ss:
        return 1.0 if ss_res <= zero_ss else 0.0
    return 1.0 - ss_res / ss_tot


def fit_alpha_beta(sizes_bytes: Sequence[float], times_s: Sequence[float]) -> AlphaBetaFit:
    """Fit ``t = alpha + n / beta`` to one time per size, minimising the squared relative errors.

    ``sizes_bytes[i]`` (bytes, finite, >= 0) took ``times_s[i]`` (seconds, finite, > 0). At least 3
    points with at least 3 distinct sizes are needed. Raises ``FitError`` naming the problem when the
    points are unusable or the fitted bandwidth is not positive.
    """
    sizes = _as_vector(sizes_bytes, "sizes_bytes")
    times = _as_vector(times_s, "times_s")
    if len(sizes) != len(times):
        raise FitError(f"sizes_bytes has {len(sizes)} values but times_s has {len(times)}: "
                       "need one time per size")
    if len(sizes) < 3:
        raise FitError(f"need at least 3 points (size, time) for the alpha-beta fit, got {len(sizes)}")
    for i, size in enumerate(sizes):
        if not math.isfinite(size) or size < 0:
            raise FitError(f"sizes_bytes[{i}] = {float(size)!r}: a size must be a finite number of bytes >= 0")
    for i, time in enumerate(times):
        if not math.isfinite(time) or time <= 0:
            raise FitError(f"times_s[{i}] = {float(time)!r}: a time must be a finite number of seconds > 0")
    distinct = np.unique(sizes)
    if len(distinct) < 3:
        raise FitError(f"need at least 3 distinct sizes, got {len(distinct)} "
                       f"({', '.join(f'{s:g}' for s in distinct)} B): alpha and beta need a sweep")

    rows = np.column_stack([1.0 / times, sizes / times])
    col_norms = np.linalg.norm(rows, axis=0)
    solution, *_ = np.linalg.lstsq(rows / col_norms, np.ones(len(times)), rcond=None)
    alpha_s, g_s_per_byte = (float(v) for v in solution / col_norms)

    if not (math.isfinite(alpha_s) and math.isfinite(g_s_per_byte)):
        raise FitError("the alpha-beta fit did not converge to finite numbers")
    largest = int(np.argmax(sizes))
    if g_s_per_byte * sizes[largest] <= _MIN_GROWTH_FRAC * times[largest]:
        raise FitError(f"the times do not grow with size: the fitted 1/beta = {g_s_per_byte:.3g} s/B "
                       "gives no positive bandwidth")

    residuals = (alpha_s + sizes * g_s_per_byte - times) / times
    return AlphaBetaFit(
        alpha_s=alpha_s,
        beta_Bps=1.0 / g_s_per_byte,
        r2=_weighted_r2(residuals, times),
        residuals_frac=tuple(float(r) for r in residuals),
        n=len(sizes),
        sizes_bytes=tuple(float(s) for s in sizes),
        times_s=tuple(float(t) for t in times),
    )
