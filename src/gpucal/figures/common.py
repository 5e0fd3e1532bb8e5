"""What the figures share: the canvas, titles, the bounded legend, fit curves and ``PlotSkipped``.

matplotlib is imported by ``canvas_figure`` only, when a figure is drawn; nothing here needs it at import.
"""

from __future__ import annotations

import numpy as np

from gpucal import profiles
from gpucal.errors import InputError
from gpucal.profiles.model import FitPiece
from gpucal.units import format_rate, format_time

__all__ = ["BYTES_PER_GB", "DPI", "LEGEND_MAX_SERIES", "PlotSkipped", "bounded_legend", "canvas_figure",
           "fit_curves", "fit_label", "lacks", "title"]

LEGEND_MAX_SERIES = 10
DPI = 100  # dots per inch of every figure, on screen and in the PNG
BYTES_PER_GB = 1e9  # the figures' GB/s are 1e9 B/s


class PlotSkipped(Exception):
    """A figure the profile lacks the data for; ``reason`` says what is missing."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def canvas_figure(figsize_in):
    """A Figure of ``figsize_in`` (width, height) inches on its own Agg canvas (no pyplot); ``InputError``
    when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError("matplotlib is not installed: pip install 'gpucal[plot]'") from None
    fig = Figure(figsize=figsize_in, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def title(doc: profiles.Document, text: str) -> str:
    """``text``, ending in ``(simulated)`` for a profile of ``source: simulated``."""
    return f"{text} (simulated)" if doc.profile.source == "simulated" else text


def lacks(doc: profiles.Document, what: str) -> PlotSkipped:
    """The ``PlotSkipped`` of a profile without ``what``; a datasheet's says that gpucal calibrate measures it."""
    source = doc.profile.source
    if source in ("measured", "simulated"):
        return PlotSkipped(f"{doc.name} has no {what}")
    return PlotSkipped(f"{doc.name} is a {source} profile: no {what}; gpucal calibrate measures them")


def fit_curves(pieces: list[FitPiece] | None, alpha_s: float | None, beta_Bps: float | None,
               sizes) -> list[tuple[np.ndarray, np.ndarray]]:
    """(bytes, seconds) of each regime's ``t = alpha + n/beta`` over its own sizes (a fit's ``pieces``);
    without regimes, the one line over ``sizes``; none without a fit."""
    if not pieces:
        if alpha_s is None or not beta_Bps:
            return []
        spans = [(float(np.min(sizes)), float(np.max(sizes)), alpha_s, beta_Bps)]
    else:
        spans = [(piece.lo_bytes, piece.hi_bytes, piece.alpha_s, piece.beta_Bps) for piece in pieces]
    out = []
    for lo_bytes, hi_bytes, piece_alpha_s, piece_beta_Bps in spans:
        grid = np.geomspace(max(lo_bytes, 1), max(hi_bytes, 1), 100)
        out.append((grid, max(piece_alpha_s, 0.0) + grid / piece_beta_Bps))
    return out


def fit_label(curves: int, alpha_s, beta_Bps) -> str:
    """The legend's tail for a series of ``curves`` fit curves: its alpha and beta (the small messages'
    alpha and the large ones' beta where there are regimes); '' without a fit."""
    if curves > 1:
        return f": {curves} regimes, α {format_time(alpha_s)} (small), β {format_rate(beta_Bps)} (large)"
    return f": α {format_time(alpha_s)}, β {format_rate(beta_Bps)}" if curves else ""


def bounded_legend(ax, handles: list, *, loc: str, more: str) -> None:
    """The legend of ``handles`` on ``ax``: at most ``LEGEND_MAX_SERIES`` entries, then one line
    ``more.format(K)`` saying how many more were drawn. No legend without handles."""
    if not handles:
        return
    shown = handles[:LEGEND_MAX_SERIES]
    labels = [h.get_label() for h in shown]
    if len(handles) > len(shown):
        shown.append(ax.plot([], [], " ")[0])
        labels.append(more.format(len(handles) - LEGEND_MAX_SERIES))
    ax.legend(shown, labels, fontsize=7, loc=loc)
