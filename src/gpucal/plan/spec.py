"""What the planner takes in: a card, a link and a layout of cards. Plain SI numbers.

These are built from profiles, presets and flags by the caller; the planner never reads files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["check_positive", "GpuSpec", "LinkSpec", "LinkPiece", "NO_LINK", "Layout", "STRATEGIES", "COMM_MODELS"]

STRATEGIES = ("pp", "tp", "hybrid")
COMM_MODELS = ("seed", "ring", "measured")


def check_positive(name: str, value: float) -> None:
    """Refuse ``value`` unless a positive finite number (not a bool), naming ``name``."""
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: must be a positive finite number, got {value!r}")


@dataclass(frozen=True)
class GpuSpec:
    """One card: memory bandwidth BW, FLOP/s F at the weight dtype (and which mode that is), memory."""

    name: str
    memory_bandwidth_Bps: float
    flops: float
    memory_bytes: float
    flops_mode: str = ""

    def __post_init__(self):
        check_positive("memory_bandwidth_Bps", self.memory_bandwidth_Bps)
        check_positive("flops", self.flops)
        check_positive("memory_bytes", self.memory_bytes)


def _check_alpha_beta(alpha_s, beta_Bps) -> None:
    if not (isinstance(alpha_s, (int, float)) and math.isfinite(alpha_s) and alpha_s >= 0):
        raise ValueError(f"alpha_s: must be a finite number >= 0, got {alpha_s!r}")
    if not (isinstance(beta_Bps, (int, float)) and beta_Bps > 0):  # inf: an ideal link
        raise ValueError(f"beta_Bps: must be a positive number, got {beta_Bps!r}")


@dataclass(frozen=True)
class LinkPiece:
    """One regime of a link: transfers of at least ``from_bytes`` (up to the next piece's) cost
    ``alpha_s + S/beta_Bps``."""

    from_bytes: float
    alpha_s: float
    beta_Bps: float

    def __post_init__(self):
        _check_alpha_beta(self.alpha_s, self.beta_Bps)


@dataclass(frozen=True)
class LinkSpec:
    """A link: latency alpha (s) and bandwidth beta (B/s, per direction); a transfer costs alpha + S/beta.

    ``beta_Bps`` may be ``math.inf`` (an ideal link, as the solvers use to isolate the other terms).
    ``pieces`` (a measured link with regimes, ordered by ``from_bytes``): a transfer of S bytes costs the
    piece S falls in (the last whose ``from_bytes`` is at or below S; the first below them all);
    ``alpha_s`` and ``beta_Bps`` are then the headline figures (the smallest sizes' alpha, the largest
    sizes' beta).
    """

    name: str
    alpha_s: float
    beta_Bps: float
    pieces: tuple[LinkPiece, ...] = ()

    def __post_init__(self):
        _check_alpha_beta(self.alpha_s, self.beta_Bps)
        if any(b.from_bytes <= a.from_bytes for a, b in zip(self.pieces, self.pieces[1:])):
            raise ValueError("pieces: must be ordered by from_bytes, each piece from a larger size")

    def at(self, nbytes) -> tuple[np.ndarray, np.ndarray]:
        """(alpha_s, beta_Bps) for transfers of ``nbytes`` (an array or a number), piece by piece."""
        nbytes = np.asarray(nbytes, dtype=float)
        if len(self.pieces) < 2:
            return np.broadcast_to(float(self.alpha_s), nbytes.shape), np.broadcast_to(float(self.beta_Bps), nbytes.shape)
        starts = np.array([p.from_bytes for p in self.pieces[1:]])
        index = np.searchsorted(starts, nbytes, side="right")
        return (np.array([p.alpha_s for p in self.pieces])[index], np.array([p.beta_Bps for p in self.pieces])[index])

    def with_beta(self, beta_Bps: float) -> LinkSpec:
        """The same link with its headline bandwidth ``beta_Bps`` and every piece's scaled alike (more NICs,
        a faster link: bandwidth multiplies, latency stays)."""
        scale = beta_Bps / self.beta_Bps
        pieces = tuple(LinkPiece(p.from_bytes, p.alpha_s, p.beta_Bps * scale) for p in self.pieces)
        return LinkSpec(self.name, self.alpha_s, beta_Bps, pieces)


NO_LINK = LinkSpec("none", 0.0, math.inf)  # where nothing crosses a link (one card, or one card per host)


@dataclass(frozen=True)
class Layout:
    """How the cards are used: ``tp`` cards per tensor-parallel group, ``pp`` pipeline stages
    (cards = tp·pp), and ``cards_per_host`` (cards beyond it sit on other hosts, over the network).

    ``strategy`` is pp (tp = 1), tp (pp = 1) or hybrid (TP inside stages, PP across them).
    """

    strategy: str
    tp: int
    pp: int
    cards_per_host: int | None = None

    @property
    def cards(self) -> int:
        return self.tp * self.pp

    @property
    def per_host(self) -> int:
        return self.cards if self.cards_per_host is None else self.cards_per_host

    @classmethod
    def of(cls, strategy: str, cards: int, tp: int | None = None, pp: int | None = None,
           cards_per_host: int | None = None) -> Layout:
        """The layout of ``strategy`` over ``cards`` cards; ``tp`` or ``pp`` is needed for hybrid."""
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy: expected one of {', '.join(STRATEGIES)}, got {strategy!r}")
        if strategy == "pp":
            tp, pp = 1, cards
        elif strategy == "tp":
            tp, pp = cards, 1
        else:
            if tp is None and pp is None:
                raise ValueError("tp: hybrid needs --tp or --pp")
            if tp is None:
                tp = cards // pp if pp and cards % pp == 0 else None
                if tp is None:
                    raise ValueError(f"pp: {pp} does not divide cards ({cards})")
            if pp is None:
                pp = cards // tp if cards % tp == 0 else None
                if pp is None:
                    raise ValueError(f"tp: {tp} does not divide cards ({cards})")
            if tp * pp != cards:
                raise ValueError(f"tp: tp x pp = {tp} x {pp} = {tp * pp}, not the {cards} cards")
        return cls(strategy, tp, pp, cards_per_host)
