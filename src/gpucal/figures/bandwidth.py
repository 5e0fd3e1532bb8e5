"""``bandwidth.png``: copy bandwidth against size, one panel per copy path, from the profile's ``fits[]``."""

from __future__ import annotations

import numpy as np

from gpucal import profiles
from gpucal.figures.common import BYTES_PER_GB, bounded_legend, canvas_figure, fit_curves, fit_label, lacks, title
from gpucal.profiles.model import CopyFit

__all__ = ["PATH_ORDER", "bandwidth_figure"]

PATH_ORDER = ("h2d", "d2h", "d2d", "p2p", "driver-staged", "host-staged")  # the panels, in this order


def bandwidth_figure(doc: profiles.Document):
    """Per copy series in ``fits[]``: measured n/t against n (log-log) and the fit n/(alpha + n/beta)."""
    fits = [f for f in doc.profile.fits or [] if f.points]
    if not fits:
        raise lacks(doc, "copy series (fits[])")
    paths = [p for p in PATH_ORDER if any(f.path == p for f in fits)]
    paths += sorted({f.path for f in fits} - set(paths))
    ncols = min(2, len(paths))
    nrows = -(-len(paths) // ncols)
    fig = canvas_figure((7.5 * ncols, 4.8 * nrows))
    fig.suptitle(title(doc, f"{doc.name}: copy bandwidth against size"))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(paths):]:
        ax.set_visible(False)
    for ax, path in zip(axes, paths):
        series = sorted((f for f in fits if f.path == path), key=lambda f: (f.verified, f.series))
        handles = [_draw_series(ax, fit, i) for i, fit in enumerate(series)]
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(path)
        ax.set_xlabel("bytes per copy")
        ax.set_ylabel("bandwidth (GB/s)")
        ax.grid(True, which="both", alpha=0.3)
        bounded_legend(ax, handles, loc="lower right", more="... and {} more series")
    return fig


def _draw_series(ax, fit: CopyFit, i: int):
    """One series of ``fits[]`` on ``ax`` (the ``i``-th of its panel): its points and its fit curves, or red
    crosses where it failed its copy check. Returns the legend's handle."""
    pts = np.array([p for p in fit.points if p[0] > 0 and p[1] > 0], dtype=float).reshape(-1, 2)
    n, t = pts[:, 0], pts[:, 1]
    if not fit.verified:
        reason = (fit.reason or "copy check failed")[:60]
        return ax.plot(n, n / t / BYTES_PER_GB, "x", color="red", markersize=8, mew=2,
                       label=f"{fit.series}: NOT verified ({reason})")[0]
    colour = f"C{i % 10}"
    ax.plot(n, n / t / BYTES_PER_GB, "o", color=colour, markersize=4)
    curves = fit_curves(fit.pieces, fit.alpha_s, fit.beta_Bps, n)
    for grid, t_s in curves:
        ax.plot(grid, grid / t_s / BYTES_PER_GB, "-", color=colour, lw=1.2)
    label = fit.series + fit_label(len(curves), fit.alpha_s, fit.beta_Bps)
    return ax.plot([], [], "o-", color=colour, markersize=4, label=label)[0]
