"""``decode-gemm.png`` and ``allreduce.png``: the measured decode terms of a profile.

- ``decode_gemm_figure(doc)``: per dtype of the first device with a decode-GEMM curve (``devices[].decode.gemm``),
  the weight bytes per second W/t against the batch m (log2 axis), one line per weight shape (the rows' points
  [W, t], grouped by W), with the fitted curve (``gpucal.plan.decode.GemmCurve``, as the planner prices it)
  dashed, and the device's memory bandwidth as a horizontal reference.
- ``allreduce_figure(doc)``: the all-reduce time against the size S (log-log) per TP size, from the ``collectives[]``
  entries of op all-reduce on one host (``hosts`` 1 or absent; where a TP size has entries measured by one process
  over its devices, ``single_process``, only those), eager solid and in CUDA graphs dashed: the points and the fit
  t = alpha + S/beta.

Each raises ``PlotSkipped`` where the profile lacks the data.
"""

from __future__ import annotations

import numpy as np

from gpucal import profiles
from gpucal.figures.common import (BYTES_PER_GB, bounded_legend, canvas_figure, fit_curves, fit_label, lacks,
                                   title)
from gpucal.profiles.model import CollectiveEntry, Device
from gpucal.profiles.decode_queries import decode_terms
from gpucal.profiles.queries import DTYPES
from gpucal.units import format_rate, size_label

__all__ = ["DECODE_GEMM_BATCHES", "decode_gemm_device", "decode_gemm_series", "allreduce_entries",
           "decode_gemm_figure", "allreduce_figure"]

DECODE_GEMM_BATCHES = (1, 512)  # the x axis at least spans these m (the probe's grid)
_DTYPE_ORDER = ("fp16", "bf16", "fp8", "fp32")
_CURVE_POINTS = 120


def decode_gemm_device(doc: profiles.Document) -> tuple[int, Device]:
    """(index, device) of the first device with a decode-GEMM curve; ``PlotSkipped`` where none has one."""
    for i, device in enumerate(doc.profile.devices):
        if device.decode is not None and device.decode.gemm:
            return i, device
    raise lacks(doc, "decode-GEMM curve (devices[].decode.gemm)")


def decode_gemm_series(rows) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """Per weight bytes W (ascending): the measured (m, W/t) of the rows' points [W, t] at that W, by m."""
    by_w: dict[float, list[tuple[int, float]]] = {}
    for row in rows:
        for point in row.points:
            w, t = float(point[0]), float(point[1])
            if w > 0 and t > 0:
                by_w.setdefault(w, []).append((row.m, w / t))
    return {w: (np.array([m for m, _ in sorted(got)], dtype=float), np.array([r for _, r in sorted(got)], dtype=float))
            for w, got in sorted(by_w.items())}


def _shape_label(w: float, shapes, dtype: str) -> str:
    """The weight shape ``n×k`` whose bytes are ``w`` (the curve's ``shapes``), else the bytes alone."""
    itemsize = DTYPES.get(dtype)
    named = [f"{n}×{k}" for n, k in shapes or [] if itemsize and n * k * itemsize == w]
    return f"{named[0]} ({size_label(int(w))})" if named else size_label(int(w))


def _gemm_panel(ax, dtype: str, curve, fitted, memory_Bps: float | None) -> None:
    """One dtype: measured W/t per shape (markers, solid), the fitted curve per shape (dashed), the bandwidth."""
    ms = [r.m for r in curve.rows]
    lo, hi = min(DECODE_GEMM_BATCHES[0], ms[0]), max(DECODE_GEMM_BATCHES[1], ms[-1])
    grid = np.unique(np.round(np.geomspace(ms[0], ms[-1], _CURVE_POINTS)).astype(int))
    handles = []
    for i, (w, (m, rate)) in enumerate(decode_gemm_series(curve.rows).items()):
        colour = f"C{i % 10}"
        handles.append(ax.plot(m, rate / BYTES_PER_GB, "o-", color=colour, markersize=4, lw=1.0, alpha=0.8,
                               label=_shape_label(w, curve.shapes, dtype))[0])
        ax.plot(grid, [fitted.weight_Bps(int(g), w) / BYTES_PER_GB for g in grid], "--", color=colour, lw=1.2,
                zorder=3)
    handles.append(ax.plot([], [], "--", color="black", lw=1.2, label="fitted curve (t = α_m + W/β_m per m)")[0])
    if memory_Bps:
        handles.append(ax.axhline(memory_Bps / BYTES_PER_GB, color="grey", ls=":", lw=1.4,
                                  label=f"memory bandwidth {format_rate(memory_Bps)}"))
    ax.set_xscale("log", base=2)
    ticks = [1 << e for e in range(int(np.log2(lo)), int(np.log2(hi)) + 1)]
    ax.set_xticks(ticks, labels=[str(t) for t in ticks])
    ax.set_xlim(lo / 1.2, hi * 1.2)
    ax.set_ylim(bottom=0)
    held = curve.holdout_max_error_frac
    ax.set_title(dtype + (f": held-out error at most {held:.1%}" if held is not None else ""), fontsize=10)
    ax.set_xlabel("m (batch)")
    ax.set_ylabel("weight bytes/s W/t (GB/s)")
    ax.grid(True, which="both", alpha=0.3)
    bounded_legend(ax, handles, loc="best", more="+{} more")


def decode_gemm_figure(doc: profiles.Document):
    """The decode-GEMM curve of the first device that has one: a panel per dtype (module docstring)."""
    index, device = decode_gemm_device(doc)
    curves = device.decode.gemm
    # the planner's reader, of the curves alone (a launch cost it refuses is not this figure's concern)
    gemm_only = device.model_copy(update={"decode": device.decode.model_copy(update={"attention": None,
                                                                                      "launch": None})})
    fitted = decode_terms(gemm_only).gemm
    dtypes = [d for d in _DTYPE_ORDER if d in curves] + sorted(set(curves) - set(_DTYPE_ORDER))
    bw = device.memory_bandwidth_Bps
    memory_Bps = float(bw.value) if bw is not None and bw.known else None
    ncols = min(2, len(dtypes))
    nrows = -(-len(dtypes) // ncols)
    fig = canvas_figure((7.5 * ncols, 5.2 * nrows))
    which = f" (devices[{index}])" if len(doc.profile.devices) > 1 else ""
    fig.suptitle(title(doc, f"{doc.name}: decode GEMM{which}, weight bytes/s against the batch m"))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(dtypes):]:
        ax.set_visible(False)
    for ax, dtype in zip(axes, dtypes):
        _gemm_panel(ax, dtype, curves[dtype], fitted[dtype], memory_Bps)
    return fig


# -- all-reduce on one host -----------------------------------------------------------------------------------

def allreduce_entries(doc: profiles.Document) -> list[CollectiveEntry]:
    """The all-reduce entries on one host with points, in order of (TP size, graphs); for a (TP size, graphs)
    with ``single_process`` entries, those alone."""
    found = [e for e in doc.profile.collectives or [] if e.op == "all-reduce" and e.span_hosts == 1
             and any(p[0] > 0 and p[1] > 0 for p in e.points or [])]
    keys = sorted({(e.nranks, bool(e.graphs)) for e in found})
    out = []
    for key in keys:
        mine = [e for e in found if (e.nranks, bool(e.graphs)) == key]
        out += [e for e in mine if e.single_process] or mine
    return out


def _value(quantity) -> float | None:
    return float(quantity.value) if quantity is not None and quantity.value is not None else None


def allreduce_figure(doc: profiles.Document):
    """All-reduce time against size per TP size on one host (module docstring)."""
    entries = allreduce_entries(doc)
    if not entries:
        raise lacks(doc, "one-host all-reduce (collectives[] of op all-reduce on one host)")
    fig = canvas_figure((8.0, 5.6))
    fig.suptitle(title(doc, f"{doc.name}: all-reduce on one host, t = α + S/β"))
    ax = fig.subplots()
    sizes = sorted({e.nranks for e in entries})
    handles = []
    for entry in entries:
        pts = np.array([p[:2] for p in entry.points if p[0] > 0 and p[1] > 0], dtype=float).reshape(-1, 2)
        s, t = pts[:, 0], pts[:, 1]
        label = f"TP {entry.nranks}" + (", CUDA graphs" if entry.graphs else ", eager")
        if entry.host is not None:
            label += f", host {entry.host}"
        if not entry.single_process:
            label += " (MPI ranks)"
        if entry.verified is False:
            reason = (entry.reason or "check failed")[:50]
            handles.append(ax.plot(s, t, "x", color="red", markersize=7, mew=2,
                                   label=f"{label}: NOT verified ({reason})")[0])
            continue
        colour = f"C{sizes.index(entry.nranks) % 10}"
        style = "--" if entry.graphs else "-"
        marker = "s" if entry.graphs else "o"
        ax.plot(s, t, marker, color=colour, markersize=4, markerfacecolor="none" if entry.graphs else colour)
        alpha, beta = _value(entry.alpha_s), _value(entry.beta_Bps)
        curves = fit_curves(entry.pieces, alpha, beta, s)
        for grid, t_s in curves:
            ax.plot(grid, t_s, style, color=colour, lw=1.2)
        handles.append(ax.plot([], [], style, marker=marker, color=colour, markersize=4,
                               label=label + fit_label(len(curves), alpha, beta))[0])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bytes per GPU (S, nccl-tests' size of the op)")
    ax.set_ylabel("time per all-reduce (s)")
    ax.grid(True, which="both", alpha=0.3)
    bounded_legend(ax, handles, loc="upper left", more="+{} more")
    return fig
