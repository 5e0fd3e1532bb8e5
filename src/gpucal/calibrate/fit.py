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

Regimes (``fit_pieces``). One line does not describe every curve: MPI switches protocol near 8 KiB (eager
to rendezvous) and a copy engine has regimes too, so that beta moves by tens of percent with the sizes
fitted. ``fit_pieces`` fits ``t = alpha_i + n/beta_i`` per regime, contiguous ranges of sizes whose
breakpoints come from the data:

1. one line over every point; where every point lies within ``ONE_LINE_TOL_FRAC`` of it, it is kept;
2. otherwise every split into 2 and 3 pieces of at least ``MIN_PIECE_SIZES`` distinct sizes each is fitted
   (each piece as above, with a positive bandwidth), in which each piece differs from the one before by
   more than ``MIN_REGIME_CHANGE_FRAC`` in beta or in the time it gives at the breakpoint (a kink or a
   jump: a regime, not a wobble); the best split of each count is the one with the smallest sum of
   squared relative residuals;
3. of one line, the best 2 and the best 3 pieces, the smallest Bayesian information criterion wins,
   ``N·ln(max(SS/N, floor²)) + p·ln(N)`` with ``p = 3·pieces - 1`` (alpha and beta per piece and each
   breakpoint), ``floor`` the larger of ``NOISE_FLOOR_FRAC`` and the points' own noise (``noise_frac``,
   e.g. ``median_noise_frac`` of the samples behind each median): a split must pay for its parameters,
   and residuals within the noise buy nothing, so noise does not make regimes.

A size of n bytes belongs to the piece whose first size is the largest at or below n (below the first
piece: the first; above the last: the last). R² is given per piece and for the whole curve.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gpucal.errors import InputError

__all__ = ["FitError", "AlphaBetaFit", "PiecewiseFit", "fit_alpha_beta", "fit_pieces", "median_noise_frac",
           "piece_dict", "POOR_FIT_RESIDUAL_FRAC"]

METHOD = "least squares of t = alpha + n/beta, weighted by 1/t (relative error)"
MAX_PIECES = 3
MIN_PIECE_SIZES = 4
ONE_LINE_TOL_FRAC = 0.05
NOISE_FLOOR_FRAC = 0.02
MIN_REGIME_CHANGE_FRAC = 0.15
PIECES_METHOD = (f"t = alpha + n/beta per regime (breakpoints from the data: one line where every point is within "
                 f"{100 * ONE_LINE_TOL_FRAC:g} %, else the split into up to {MAX_PIECES} pieces of >= "
                 f"{MIN_PIECE_SIZES} sizes, each differing from the last by > {100 * MIN_REGIME_CHANGE_FRAC:g} %, "
                 "with the smallest BIC over the noise), each piece least squares weighted by 1/t")
# A fitted curve some point of which lies further than this from it does not describe the points: "poor fit".
POOR_FIT_RESIDUAL_FRAC = 0.10

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


@dataclass(frozen=True)
class PiecewiseFit:
    """``t = alpha_i + n/beta_i`` per regime (``pieces``, by size), and the one ``line`` over every point.

    ``alpha_s`` is the first piece's (small transfers), ``beta_Bps`` the last piece's (large transfers);
    with one piece both are the line's. ``r2``, ``residuals_frac`` and ``max_abs_residual_frac`` are the
    whole curve's; each piece keeps its own."""

    pieces: tuple[AlphaBetaFit, ...]
    line: AlphaBetaFit

    @property
    def alpha_s(self) -> float:
        return self.pieces[0].alpha_s

    @property
    def beta_Bps(self) -> float:
        return self.pieces[-1].beta_Bps

    @property
    def n(self) -> int:
        return self.line.n

    @property
    def sizes_bytes(self) -> tuple[float, ...]:
        return tuple(s for p in self.pieces for s in p.sizes_bytes)

    @property
    def times_s(self) -> tuple[float, ...]:
        return tuple(t for p in self.pieces for t in p.times_s)

    @property
    def residuals_frac(self) -> tuple[float, ...]:
        return tuple(r for p in self.pieces for r in p.residuals_frac)

    @property
    def max_abs_residual_frac(self) -> float:
        return max(abs(r) for r in self.residuals_frac)

    @property
    def r2(self) -> float:
        return _weighted_r2(np.asarray(self.residuals_frac), np.asarray(self.times_s))

    @property
    def breakpoints_bytes(self) -> tuple[float, ...]:
        """The first size of each piece after the first."""
        return tuple(min(p.sizes_bytes) for p in self.pieces[1:])

    @property
    def poor(self) -> bool:
        """Some point lies further than ``POOR_FIT_RESIDUAL_FRAC`` from the curve."""
        return self.max_abs_residual_frac > POOR_FIT_RESIDUAL_FRAC

    def piece_for(self, n_bytes: float) -> AlphaBetaFit:
        """The piece whose range holds ``n_bytes`` (see the module docstring)."""
        index = int(np.searchsorted(np.asarray(self.breakpoints_bytes), float(n_bytes), side="right"))
        return self.pieces[index]

    def predict_s(self, n_bytes: float) -> float:
        return self.piece_for(n_bytes).predict_s(n_bytes)

    def profile_fields(self) -> dict:
        """What a profile entry (``links[]``, ``fits[]``, ``network[]``, ``collectives[]``) keeps of the fit
        besides its alpha and beta: every piece and whether the fit is poor."""
        return {"pieces": [piece_dict(p) for p in self.pieces], "poor_fit": self.poor}

    def to_dict(self) -> dict:
        """The headline alpha/beta, the whole curve's R² and residuals, the points, and every piece."""
        out = self.line.to_dict()
        out.update(alpha_s=self.alpha_s, beta_Bps=self.beta_Bps, r2=self.r2,
                   max_abs_residual_frac=self.max_abs_residual_frac, residuals_frac=list(self.residuals_frac),
                   method=PIECES_METHOD, breakpoints_bytes=list(self.breakpoints_bytes), **self.profile_fields(),
                   line={"alpha_s": self.line.alpha_s, "beta_Bps": self.line.beta_Bps, "r2": self.line.r2,
                         "max_abs_residual_frac": self.line.max_abs_residual_frac})
        return out


def piece_dict(piece: AlphaBetaFit) -> dict:
    """One piece as the profile stores it: its range of sizes, alpha, beta, R², n and worst residual."""
    return {"lo_bytes": min(piece.sizes_bytes), "hi_bytes": max(piece.sizes_bytes), "alpha_s": piece.alpha_s,
            "beta_Bps": piece.beta_Bps, "r2": piece.r2, "n": piece.n,
            "max_abs_residual_frac": piece.max_abs_residual_frac}


def _ss(fit: AlphaBetaFit) -> float:
    return float(sum(r * r for r in fit.residuals_frac))


def _bic(ss: float, n_points: int, n_pieces: int, floor_frac: float) -> float:
    return n_points * math.log(max(ss / n_points, floor_frac ** 2)) + (3 * n_pieces - 1) * math.log(n_points)


def _distinct_regimes(fits) -> bool:
    """Each piece differs from the one before by more than ``MIN_REGIME_CHANGE_FRAC`` in beta, or in the time
    the two give at the later piece's first size."""
    for a, b in zip(fits, fits[1:]):
        at = min(b.sizes_bytes)
        if abs(b.beta_Bps / a.beta_Bps - 1) <= MIN_REGIME_CHANGE_FRAC and \
                abs(b.predict_s(at) / a.predict_s(at) - 1) <= MIN_REGIME_CHANGE_FRAC:
            return False
    return True


def median_noise_frac(cvs: Sequence[float], ns: Sequence[int]) -> float | None:
    """The relative noise of points that are medians of samples: the root mean square over the points of the
    median's relative standard error, ``sqrt(pi/2)·CV/sqrt(n)``; ``None`` where no point has two samples."""
    errors = [math.sqrt(math.pi / 2) * cv / math.sqrt(n) for cv, n in zip(cvs, ns) if n >= 2 and math.isfinite(cv)]
    return math.sqrt(sum(e * e for e in errors) / len(errors)) if errors else None


def _best_split(sizes: np.ndarray, times: np.ndarray, distinct: np.ndarray, n_pieces: int):
    """(SS, pieces) of the split of the sorted points into ``n_pieces`` with the smallest SS, or None."""
    m = len(distinct)
    cache: dict[tuple[int, int], AlphaBetaFit | None] = {}

    def piece(lo: int, hi: int) -> AlphaBetaFit | None:  # distinct sizes [lo, hi)
        if (lo, hi) not in cache:
            keep = (sizes >= distinct[lo]) & (sizes <= distinct[hi - 1])
            try:
                cache[lo, hi] = fit_alpha_beta(sizes[keep], times[keep])
            except FitError:
                cache[lo, hi] = None
        return cache[lo, hi]

    best = None
    for cuts in itertools.combinations(range(MIN_PIECE_SIZES, m - MIN_PIECE_SIZES + 1), n_pieces - 1):
        bounds = (0, *cuts, m)
        if any(b - a < MIN_PIECE_SIZES for a, b in zip(bounds, bounds[1:])):
            continue
        fits = [piece(a, b) for a, b in zip(bounds, bounds[1:])]
        if any(f is None for f in fits) or not _distinct_regimes(fits):
            continue
        ss = sum(_ss(f) for f in fits)
        if best is None or ss < best[0]:
            best = (ss, tuple(fits))
    return best


def fit_pieces(sizes_bytes: Sequence[float], times_s: Sequence[float], noise_frac: float | None = None) -> PiecewiseFit:
    """``t = alpha_i + n/beta_i`` per regime, breakpoints from the data (the module docstring says how); the
    points are taken in order of size. ``noise_frac``: the points' own relative noise, where known.

    Takes what ``fit_alpha_beta`` takes and refuses what it refuses (``FitError``); with too few sizes for
    two pieces, or where one line fits every point within ``ONE_LINE_TOL_FRAC``, the result has one piece.
    """
    sizes, times = _as_vector(sizes_bytes, "sizes_bytes"), _as_vector(times_s, "times_s")
    if len(sizes) == len(times):
        order = np.argsort(sizes, kind="stable")
        sizes, times = sizes[order], times[order]
    line = fit_alpha_beta(sizes, times)
    distinct = np.unique(sizes)
    if line.max_abs_residual_frac <= ONE_LINE_TOL_FRAC or len(distinct) < 2 * MIN_PIECE_SIZES:
        return PiecewiseFit((line,), line)
    n_points, floor = len(sizes), max(NOISE_FLOOR_FRAC, noise_frac or 0.0)
    best = (_bic(_ss(line), n_points, 1, floor), (line,))
    for n_pieces in range(2, MAX_PIECES + 1):
        if len(distinct) < n_pieces * MIN_PIECE_SIZES:
            break
        split = _best_split(sizes, times, distinct, n_pieces)
        score = _bic(split[0], n_points, n_pieces, floor) if split is not None else math.inf
        if score < best[0]:
            best = (score, split[1])
    return PiecewiseFit(best[1], line)
