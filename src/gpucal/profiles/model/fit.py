"""The alpha/beta fit, one definition for every measured entry: t = alpha + n/beta over a sweep of sizes.

``FitRecord`` is the evidence every fit carries (``r2``, ``points``, ``pieces``, ``poor_fit``); ``AlphaBeta``
is an alpha and a beta as quantities (a host link's direction, a link preset); ``MeasuredFit`` is both, the
shape shared by ``links[]``, ``network[]`` and ``collectives[]`` (``fits[]`` carries plain numbers:
``gpucal.profiles.model.entries.CopyFit``).
"""

from __future__ import annotations

from typing import Annotated, Optional

from pydantic import Field

from gpucal import limits
from gpucal.profiles.model.base import Omittable, Point, Strict, integer, number
from gpucal.profiles.model.quantity import SAMPLES_MAX, RateQuantity, TimeQuantity

__all__ = ["R2", "Intercept", "FitPiece", "FitRecord", "AlphaBeta", "MeasuredFit"]

_TIME_MAX = limits.RANGES["time"][1]
_BYTES_MAX = limits.RANGES["bytes"][1]
R2 = number(-1, 1)  # the coefficient of determination of a fit
Intercept = number(-_TIME_MAX, _TIME_MAX)  # a fitted alpha: noise can put it a hair below zero
RESIDUAL_MAX = 1e12


class FitPiece(Strict):
    """One regime of a fitted curve: t = alpha + n/beta over the sizes lo_bytes..hi_bytes (a transfer of n
    bytes takes the piece whose lo_bytes is the largest at or below n; below the first piece, the first).
    alpha_s: for links between devices, the one-shot latency plus this piece's intercept above the first
    piece's."""

    lo_bytes: number(0, _BYTES_MAX)
    hi_bytes: number(0, _BYTES_MAX)
    alpha_s: Intercept
    beta_Bps: number(*limits.RANGES["rate"])
    r2: Optional[R2] = None
    n: Omittable[integer(1, SAMPLES_MAX)] = None
    max_abs_residual_frac: Optional[number(0, RESIDUAL_MAX)] = None


class FitRecord(Strict):
    """The evidence of a fit: its r2, the points it was fitted to, its regimes (``pieces``), ``poor_fit``."""

    r2: Optional[R2] = None
    points: Omittable[list[Point]] = None
    pieces: Omittable[Annotated[list[FitPiece], Field(min_length=1)]] = Field(
        None, description="The fit per regime (one piece where one line fits)")
    poor_fit: Omittable[bool] = Field(None, description="some point lies more than 10 % from the fitted curve")

    def piece_for(self, n_bytes: float) -> FitPiece | None:
        """The regime a transfer of ``n_bytes`` takes (the last piece starting at or below it; the first below
        them all); ``None`` without pieces."""
        if not self.pieces:
            return None
        chosen = self.pieces[0]
        for piece in self.pieces:
            if piece.lo_bytes <= n_bytes:
                chosen = piece
        return chosen


class AlphaBeta(Strict):
    """An alpha (s) and a beta (B/s), each a quantity with its provenance."""

    alpha_s: TimeQuantity
    beta_Bps: RateQuantity

    @property
    def known(self) -> bool:
        """True when alpha and beta are both known and beta is positive."""
        return self.alpha_s.known and self.beta_Bps.known and self.beta_Bps.value > 0

    @property
    def sources(self) -> str:
        """The sources of alpha and beta, as ``a + b`` (one where they agree)."""
        return " + ".join(sorted({self.alpha_s.source, self.beta_Bps.source}))


class MeasuredFit(AlphaBeta, FitRecord):
    """A measured alpha/beta fit with its evidence: the shape of ``links[]``, ``network[]``, ``collectives[]``."""
